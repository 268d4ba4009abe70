"""Saliency: detector availability, peak on the lesion, precompute tree and method recording."""

import json

import numpy as np
import pytest
import torch

from spmix.mixing import patch_scores
from spmix.saliency import (
    SaliencyUnavailableError,
    compute_saliency,
    fine_grained_available,
    precompute_tree,
    resolve_method,
)
from spmix.synthetic_set import random_lesion, render_image


def test_opencv_contrib_saliency_is_importable():
    """The contrib build must win over opencv-python-headless (root Makefile reinstalls it last)."""
    import cv2

    assert hasattr(cv2.saliency, "StaticSaliencyFineGrained_create"), (
        "cv2.saliency is empty: opencv-python-headless shadows the contrib build; run `make install` or "
        "pip install --force-reinstall --no-deps opencv-contrib-python-headless==<cv2 version>")
    assert resolve_method("auto") == "fine_grained"


@pytest.mark.parametrize("method", ["fine_grained", "spectral_residual"])
def test_saliency_peaks_on_a_dark_disc(method):
    """One dark disc on skin at 224 px -> the best of the 14 x 14 patch scores is within one patch of it."""
    from common.synthetic import ellipse_mask, smooth_field

    rng = np.random.default_rng(1)
    for center in ((60, 150), (170, 80), (112, 112)):
        skin = np.array([0.86, 0.68, 0.58], np.float32) * (0.9 + 0.1 * smooth_field((224, 224), 20, rng))[..., None]
        disc = ellipse_mask((224, 224), center, (22, 22))
        image = np.where(disc[..., None], np.array([0.3, 0.18, 0.12], np.float32), skin)
        sal = compute_saliency((image * 255).astype(np.uint8), method)
        scores = patch_scores(torch.from_numpy(sal)[None], 16, tie_noise=0.0)[0].reshape(14, 14)
        row, col = np.unravel_index(int(scores.argmax()), (14, 14))
        assert abs(row - center[0] // 16) <= 1 and abs(col - center[1] // 16) <= 1, (method, center, (row, col))


@pytest.mark.parametrize("method", ["fine_grained", "spectral_residual"])
def test_saliency_follows_the_lesion_on_synthetic_images(method):
    """The lesion is where the detector fires, the nuisance context (hair, vignetting, ruler, ink, bubbles) is not:
    patch scores correlate with how much lesion a patch holds, and the lesion is brighter than the background."""
    from spmix.synthetic_set import N_CONTEXTS, context_pool

    # FineGrained (the detector the runs use) is on the lesion in every image; the spectral-residual fallback is
    # weaker on single images (ink blots and bubble rings also stand out in its spectrum), so its bar is per set.
    per_image, mean_corr, ratio = {"fine_grained": (0.4, 0.55, 1.5), "spectral_residual": (0.15, 0.5, 1.2)}[method]
    rng = np.random.default_rng(0)
    corrs = []
    for k in range(2 * N_CONTEXTS):
        image, mask = render_image(k % 7, context_pool()[k % N_CONTEXTS], random_lesion(rng, 96), rng, size=(96, 128))
        sal = compute_saliency(image, method)
        assert sal.shape == image.shape[:2] and sal.min() >= 0 and sal.max() <= 1
        scores = patch_scores(torch.from_numpy(sal)[None], 16, tie_noise=0.0)[0]
        lesion = torch.nn.functional.avg_pool2d(torch.from_numpy(mask.astype(np.float32))[None, None], 16).flatten()
        corrs.append(np.corrcoef(scores.numpy(), lesion.numpy())[0, 1])
        assert corrs[-1] > per_image, k
        assert sal[mask].mean() > ratio * sal[~mask].mean(), k
    assert np.mean(corrs) > mean_corr


def test_explicit_method_without_contrib_fails_loudly(monkeypatch):
    import spmix.saliency as sm

    monkeypatch.setattr(sm, "fine_grained_available", lambda: False)
    with pytest.raises(SaliencyUnavailableError, match="opencv-contrib-python-headless"):
        sm.resolve_method("fine_grained")
    assert sm.resolve_method("auto") == "spectral_residual"
    with pytest.raises(ValueError, match="unknown"):
        sm.resolve_method("gradcam")


def test_precompute_writes_parallel_tree_and_record(synth_root, tmp_path):
    out = tmp_path / "sal"
    record = precompute_tree(synth_root / "ISIC2018_Task3_Validation_Input", out, "spectral_residual")
    assert record["method"] == "spectral_residual"
    assert json.loads((out / "saliency.json").read_text())["method"] == "spectral_residual"
    images = sorted((synth_root / "ISIC2018_Task3_Validation_Input").glob("*.jpg"))
    maps = sorted(out.glob("*.png"))
    assert [p.stem for p in maps] == [p.stem for p in images]


def test_fine_grained_available_matches_cv2():
    import cv2

    assert fine_grained_available() == hasattr(getattr(cv2, "saliency", None), "StaticSaliencyFineGrained_create")
