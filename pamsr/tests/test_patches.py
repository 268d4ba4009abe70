"""Gradient-based patch selection: the official signed-sum quirk, the magnitude score, the sampler's bounds."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from pamsr.patches import crop_pair, sample_patch, window_probabilities, window_scores


def vessel_window(orientation: str) -> np.ndarray:
    img = np.zeros((64, 64))
    if orientation == "vertical":
        img[:, 30:34] = 1.0
    else:
        img[30:34, :] = 1.0
    return img


@pytest.mark.parametrize("orientation", ["vertical", "horizontal"])
def test_signed_official_score_misses_a_centred_vessel(orientation):
    img = vessel_window(orientation)
    assert window_scores(img, 64, "signed_official")[0, 0] == 0.0  # the official quirk
    assert window_scores(img, 64, "magnitude")[0, 0] > 0.0  # the paper's intent
    assert window_scores(np.zeros((64, 64)), 64, "magnitude")[0, 0] == 0.0


def test_signed_official_score_is_a_boundary_term():
    img = np.zeros((64, 64))
    img[:, -4:] = 1.0  # a bright strip on the right border only
    assert window_scores(img, 64, "signed_official")[0, 0] > 0.0


def test_constant_image_falls_back_to_uniform_without_nan():
    probs = window_probabilities(window_scores(np.full((128, 128), 0.4), 32))
    assert np.allclose(probs, 1 / 16) and not np.isnan(probs).any()
    y, x = sample_patch(np.full((128, 128), 0.4), 32, np.random.default_rng(0))
    assert 0 <= y <= 96 and 0 <= x <= 96


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
@pytest.mark.parametrize("mode,score", [("grad_window", "magnitude"), ("grad_window", "signed_official"),
                                        ("random", "magnitude")])
def test_sampler_stays_in_bounds(scale, mode, score):
    rng = np.random.default_rng(scale)
    hr = rng.random((64 * scale + 5 * scale, 96 * scale))
    lr = hr[::scale, ::scale]
    for _ in range(200):
        y, x = sample_patch(lr, 16, rng, mode, score)
        assert 0 <= y <= lr.shape[0] - 16 and 0 <= x <= lr.shape[1] - 16
        lp, hp = crop_pair(lr, hr, y, x, 16, scale)
        assert lp.shape == (16, 16) and hp.shape == (16 * scale, 16 * scale)
        assert np.array_equal(hp[::scale, ::scale], lp)


def test_magnitude_sampler_prefers_the_vessel_window_and_random_is_uniform():
    img = np.zeros((128, 128))
    img[40:88, 70] = 1.0
    img[60, 40:90] = 1.0  # a vessel cross over windows (1, 1), (1, 2), (2, 2) of the 4x4 grid of 32 px windows
    rng = np.random.default_rng(0)
    draws = [sample_patch(img, 32, rng, "grad_window", "magnitude") for _ in range(1000)]
    probs = window_probabilities(window_scores(img, 32, "magnitude"))
    top = np.unravel_index(np.argmax(probs), (4, 4))
    near = sum(abs(y // 32 - top[0]) <= 1 and abs(x // 32 - top[1]) <= 1 for y, x in draws)
    assert near >= 900
    lowest = int(np.argmin(probs))
    assert probs[lowest] == 0.0
    uniform = [sample_patch(img, 32, rng, "random") for _ in range(2000)]
    counts = np.bincount([min(y // 32, 2) * 3 + min(x // 32, 2) for y, x in uniform], minlength=9)
    expected = np.array([32 * 32, 32 * 32, 33 * 32] * 2 + [32 * 33, 32 * 33, 33 * 33], float)
    assert stats.chisquare(counts, counts.sum() * expected / expected.sum()).pvalue > 1e-3


def test_minimum_score_window_is_never_chosen():
    img = np.random.default_rng(0).random((128, 128))
    img[96:, 96:] = 0.0  # window (3, 3) is flat: lowest score
    rng = np.random.default_rng(1)
    corners = [sample_patch(img, 32, rng) for _ in range(500)]
    assert not any(y == 96 and x == 96 for y, x in corners)


def _empty_fraction(lr: np.ndarray, corners: list[tuple[int, int]], patch: int) -> float:
    return float(np.mean([(lr[y:y + patch, x:x + patch] > 0.25).mean() < 0.01 for y, x in corners]))


def test_partial_coverage_leaves_vessel_free_patches_that_selection_avoids():
    """On scans whose vessels fill a third of the field (the default's ``coverage``), uniform LR patches are often
    vessel-free and the gradient sampler rarely picks one; at full coverage almost none are empty."""
    from pamsr.settings import SynthConfig
    from pamsr.synth import make_sample

    rng = np.random.default_rng(0)
    fractions = {}
    for coverage in (1.0, 0.35):
        style = SynthConfig(size=160, coverage=coverage)
        uniform, selected = [], []
        for _ in range(4):
            lr = make_sample(160, 2.0, rng, style=style)["clean"].astype(np.float64)[::2, ::2] / 255
            uniform.append(_empty_fraction(lr, [sample_patch(lr, 16, rng, "random") for _ in range(100)], 16))
            selected.append(_empty_fraction(lr, [sample_patch(lr, 16, rng) for _ in range(100)], 16))
        fractions[coverage] = (np.mean(uniform), np.mean(selected))
    assert fractions[1.0][0] < 0.15
    assert fractions[0.35][0] > 0.3
    assert fractions[0.35][1] < fractions[0.35][0] / 3


def test_coverage_out_of_range_is_refused():
    from pamsr.settings import SynthConfig

    with pytest.raises(ValueError, match="data.synth.coverage"):
        SynthConfig(coverage=0.0)
