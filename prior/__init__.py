"""PRIOR: prototype representation joint learning from medical images and reports (Cheng et al., ICCV 2023).

See README.md: model (``models/``), data readers (``data.py``), synthetic data (``synth.py``), pre-training
(``train.py``), evaluation (``eval.py``), fine-tuning (``finetune.py``), comparison (``reproduce.py``).
"""
