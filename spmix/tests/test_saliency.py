"""Saliency (spec §1.2, §6.1): detector availability, peak on the lesion, precompute tree and method recording."""

import json

import numpy as np
import pytest
import torch
from spmix.mixing import patch_scores
from spmix.saliency_maps import (
    SaliencyUnavailableError,
    compute_saliency,
    fine_grained_available,
    precompute_tree,
    resolve_method,
)
from spmix.synth import _random_lesion, render_image


def test_opencv_contrib_saliency_is_importable():
    """The contrib build must win over opencv-python-headless (root Makefile reinstalls it last)."""
    import cv2

    assert hasattr(cv2.saliency, "StaticSaliencyFineGrained_create"), (
        "cv2.saliency is empty: opencv-python-headless shadows the contrib build; run `make install` or "
        "pip install --force-reinstall --no-deps opencv-contrib-python-headless==<cv2 version>")
    assert resolve_method("auto") == "fine_grained"


@pytest.mark.parametrize("method", ["fine_grained", "spectral_residual"])
def test_saliency_peaks_on_the_lesion(method):
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(5):
        image, mask = render_image(2, _random_lesion(rng), rng, size=(96, 128))
        image, mask = image[:, 16:112], mask[:, 16:112]  # 96 x 96 -> 6 x 6 patch grid
        if mask.sum() < 200:
            continue
        sal = compute_saliency(image, method)
        assert sal.shape == image.shape[:2] and sal.min() >= 0 and sal.max() <= 1
        scores = patch_scores(torch.from_numpy(sal)[None], 16, tie_noise=0.0)[0].reshape(6, 6)
        lesion_frac = torch.nn.functional.avg_pool2d(torch.from_numpy(mask.astype(np.float32))[None, None], 16)[0, 0]
        top = np.unravel_index(int(scores.argmax()), (6, 6))
        # the most salient patch lies on, or within one patch of, the lesion
        near = lesion_frac[max(top[0] - 1, 0):top[0] + 2, max(top[1] - 1, 0):top[1] + 2].max()
        hits += int(near > 0.2)
        assert lesion_frac[scores > scores.median()].mean() > lesion_frac[scores <= scores.median()].mean()
    assert hits >= 4


def test_explicit_method_without_contrib_fails_loudly(monkeypatch):
    import spmix.saliency_maps as sm

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
