import math

import numpy as np
import pytest

from common.synthetic import ellipse_mask, random_blobs, rasterise_segments, smooth_field, speckle_noise, vessel_tree


def test_smooth_field_is_deterministic_smooth_and_normalised():
    a, b = smooth_field((64, 64), 4.0, 1), smooth_field((64, 64), 4.0, 1)
    np.testing.assert_array_equal(a, b)
    assert a.min() == pytest.approx(0) and a.max() == pytest.approx(1)
    rough = smooth_field((64, 64), 0.5, 1)
    assert np.abs(np.diff(a, axis=0)).mean() < np.abs(np.diff(rough, axis=0)).mean()


def test_ellipse_area_and_blobs():
    m = ellipse_mask((200, 200), (100, 100), (30, 50), angle_deg=30)
    assert m.sum() == pytest.approx(math.pi * 30 * 50, rel=0.01)
    blobs = random_blobs((64, 64), 3, (4, 8), rng=0)
    assert set(np.unique(blobs)) <= {0, 1, 2, 3} and (blobs > 0).any()


def test_vessel_tree_mask_is_exact_and_deterministic():
    t1, t2 = vessel_tree((128, 128), 3), vessel_tree((128, 128), 3)
    np.testing.assert_array_equal(t1.mask, t2.mask)
    assert 0.01 < t1.mask.mean() < 0.5
    # the anti-aliased rendering agrees with the exact mask
    assert t1.intensity[t1.mask].mean() > 0.6 and t1.intensity[~t1.mask].mean() < 0.1
    assert (t1.radius[t1.mask] > 0).all() and (t1.radius[~t1.mask] == 0).all()
    # tapering: the thickest vessels are the roots
    assert t1.segments[:, 4].max() == pytest.approx(4.0) and t1.segments[:, 4].min() < 2.0
    assert not np.array_equal(t1.mask, vessel_tree((128, 128), 4).mask)


def test_speckle_is_mean_preserving():
    out = speckle_noise(np.ones((200, 200)), looks=4, rng=0)
    assert out.mean() == pytest.approx(1.0, abs=0.01) and out.var() == pytest.approx(0.25, rel=0.05)


def test_rasterise_segments_mask_is_the_exact_capsule():
    seg = np.array([[10.0, 8.0, 30.0, 40.0, 2.5], [5.0, 5.0, 5.0, 5.0, 1.0]])  # a slanted capsule and a dot
    tree = rasterise_segments((48, 48), seg)
    rows, cols = np.mgrid[:48, :48].astype(float)
    r0, c0, r1, c1, rad = seg[0]
    t = np.clip(((rows - r0) * (r1 - r0) + (cols - c0) * (c1 - c0)) / ((r1 - r0) ** 2 + (c1 - c0) ** 2), 0, 1)
    capsule = np.hypot(rows - (r0 + t * (r1 - r0)), cols - (c0 + t * (c1 - c0))) <= rad
    dot = np.hypot(rows - 5, cols - 5) <= 1.0
    np.testing.assert_array_equal(tree.mask, capsule | dot)
    np.testing.assert_array_equal(tree.radius[capsule], np.float32(2.5))
    assert (tree.radius[dot & ~capsule] == 1.0).all() and (tree.radius[~tree.mask] == 0).all()
    assert tree.intensity.min() >= 0.0 and tree.intensity.max() <= 1.0
    assert tree.intensity[capsule].mean() > 0.8 and tree.intensity[~tree.mask].mean() < 0.05
    np.testing.assert_array_equal(tree.segments, seg)


def test_rasterise_segments_refuses_negative_radii():
    with pytest.raises(ValueError, match="radii"):
        rasterise_segments((8, 8), np.array([[1.0, 1.0, 5.0, 5.0, -1.0]]))
