"""YoloCurvSeg (Lin et al., MedIA 2023): curvilinear segmentation from one noisy skeleton via image synthesis.

Stages: ``skeleton`` (noisy skeleton), ``background`` (inpainting), ``sca`` (curve generator), ``synthesizer``
(CUT/PatchNCE), ``model``/``engine``/``train`` (two-stage segmenter), ``curve_metrics``, ``data``/``synth``.
"""
