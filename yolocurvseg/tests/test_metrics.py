"""Curve metrics on analytic shapes and edge cases."""

import numpy as np
import pytest

from yolocurvseg.curve_metrics import betti_numbers, cldice, curve_metrics


def ring(size=64, r_out=20, r_in=15):
    yy, xx = np.mgrid[:size, :size]
    d = np.hypot(yy - size / 2, xx - size / 2)
    return (d <= r_out) & (d >= r_in)


def test_betti_of_analytic_shapes():
    line = np.zeros((40, 40), bool)
    line[20, 5:35] = True
    y = line.copy()
    for i in range(10):
        y[20 - i, 20 + i] = True
        y[20 + i, 20 + i] = True
    assert betti_numbers(line) == (1, 0)
    assert betti_numbers(y) == (1, 0)
    assert betti_numbers(ring()) == (1, 1)
    two_rings = np.concatenate([ring(), ring()], axis=1)
    assert betti_numbers(two_rings) == (2, 2)


def test_cldice_perfect_partial_and_empty():
    gt = ring()
    assert cldice(gt, gt) == pytest.approx(1.0)
    half = gt.copy()
    half[:, 32:] = False
    assert 0.4 < cldice(half, gt) < 0.9
    empty = np.zeros_like(gt)
    assert cldice(empty, empty) == 1.0 and cldice(empty, gt) == 0.0


def test_curve_metrics_on_ring():
    gt = ring()
    m = curve_metrics(gt, gt)
    assert m["dice"] == pytest.approx(1) and m["hd95"] == pytest.approx(0) and m["betti1_error"] == 0
    broken = gt.copy()
    broken[30:34, :] = False  # cut the ring twice: no hole, two pieces
    m = curve_metrics(broken, gt)
    assert m["betti1_error"] == 1 and m["betti0_error"] == 1 and m["dice"] < 1
    assert m["sensitivity"] < 1 and m["specificity"] == pytest.approx(1.0)


def test_fov_restricts_metrics():
    gt = ring()
    pred = gt.copy()
    pred[:5, :5] = True  # false positives outside the FOV only
    fov = np.ones_like(gt)
    fov[:5, :5] = False
    assert curve_metrics(pred, gt, fov)["dice"] == pytest.approx(1.0)
    assert curve_metrics(pred, gt)["dice"] < 1.0


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="differs"):
        curve_metrics(np.zeros((4, 4), bool), np.zeros((5, 5), bool))
