"""Noisy-skeleton simulator statistics, reader errors and the fg+bg scribble recipe."""

import numpy as np
import pytest
from PIL import Image

from yolocurvseg.hidden_domain import render_hidden_case
from yolocurvseg.skeleton import (
    SkeletonError,
    read_noisy_skeleton,
    scribble_from_skeleton,
    simulate_noisy_skeleton,
    skeleton_stats,
)


def test_simulated_skeletons_meet_dca1_statistics():
    rng = np.random.default_rng(0)
    stats = []
    for _ in range(6):
        _, mask, _ = render_hidden_case(160, rng)
        sk = simulate_noisy_skeleton(mask, rng)
        assert set(np.unique(sk).tolist()) <= {0, 255}
        stats.append(skeleton_stats(sk, mask))
    ratio = np.mean([s["ratio_to_gt"] for s in stats])
    inside = np.mean([s["inside_gt"] for s in stats])
    assert 0.1 <= ratio <= 0.3, ratio
    assert 0.85 <= inside <= 0.95, inside
    assert all(s["blocks2x2"] == 0 for s in stats)  # 1-px wide
    assert all(s["endpoints"] >= 2 for s in stats)


def test_simulation_is_seeded():
    _, mask, _ = render_hidden_case(96, 1)
    assert np.array_equal(simulate_noisy_skeleton(mask, 5), simulate_noisy_skeleton(mask, 5))


def _save(arr, path):
    Image.fromarray(arr.astype(np.uint8), mode="L").save(path)
    return path


def test_reader_accepts_binary_png(tmp_path):
    sk = np.zeros((20, 30), np.uint8)
    sk[10, 5:25] = 255
    out = read_noisy_skeleton(_save(sk, tmp_path / "1.png"), (20, 30))
    assert out.dtype == bool and out.sum() == 20


def test_reader_rejects_size_mismatch(tmp_path):
    sk = np.zeros((20, 30), np.uint8)
    sk[10, 5:25] = 255
    with pytest.raises(SkeletonError, match="differs from its image size"):
        read_noisy_skeleton(_save(sk, tmp_path / "1.png"), (30, 30))


def test_reader_rejects_empty_skeleton(tmp_path):
    with pytest.raises(SkeletonError, match="empty"):
        read_noisy_skeleton(_save(np.zeros((20, 30)), tmp_path / "1.png"), (20, 30))


def test_reader_rejects_values_outside_0_255(tmp_path):
    sk = np.zeros((20, 30), np.uint8)
    sk[10, 5:25] = 128
    with pytest.raises(SkeletonError, match=r"outside \{0, 255\}"):
        read_noisy_skeleton(_save(sk, tmp_path / "1.png"), (20, 30))


def test_reader_missing_file(tmp_path):
    with pytest.raises(SkeletonError, match="not found"):
        read_noisy_skeleton(tmp_path / "nope.png")


def test_scribble_recipe_labels():
    sk = np.zeros((60, 60), bool)
    sk[30, 10:50] = True
    s = scribble_from_skeleton(sk, bg_dilation=5)
    assert set(np.unique(s).tolist()) == {0, 1, 2}
    assert (s[sk] == 1).all()
    from scipy import ndimage

    dist = ndimage.distance_transform_edt(~sk)
    assert (s == 0).sum() > 20 and dist[s == 0].min() > 5  # bg skeleton lies outside the dilated fg
