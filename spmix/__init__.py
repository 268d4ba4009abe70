"""SPMix: saliency-guided and patch-based mixup for long-tailed skin lesion classification (arXiv:2406.10801).

See README.md for the component -> file map; entry points: train.py, eval.py, reproduce.py, synth.py and
``python -m spmix.saliency_maps`` (saliency precompute).
"""
