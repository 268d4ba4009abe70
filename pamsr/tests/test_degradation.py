"""Degradation (decimation, padding, normalisation) and the displacement degradation."""

from __future__ import annotations

import numpy as np
import pytest

from pamsr.degradation import DegradationError, displace_odd_rows, make_pair, prepare_hr


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_decimation_shapes_and_subgrid(scale):
    rng = np.random.default_rng(0)
    hr = rng.integers(1, 255, (232, 232)).astype(np.uint8)  # 232 + 2*12 = 256, like 1000 + 24 = 1024
    lr, hr_n = make_pair(hr, scale, pad=12, normalise="joint")
    assert hr_n.shape == (256, 256) and lr.shape == (256 // scale, 256 // scale)
    assert np.array_equal(lr, hr_n[::scale, ::scale])
    assert hr_n[:12].max() == 0  # the zero frame
    lr_i, hr_i = make_pair(hr, scale, pad=12, normalise="independent")
    for image in (lr_i, hr_i):
        assert image.min() == 0.0 and image.max() == 1.0


def test_size_not_divisible_after_padding_is_a_clear_error():
    with pytest.raises(DegradationError, match=r"not divisible by scale 8.*data.pad"):
        prepare_hr(np.ones((1000, 1000)), pad=10, scale=8)


def test_all_zero_image_is_refused():
    with pytest.raises(DegradationError, match="all zeros"):
        make_pair(np.zeros((40, 40), np.uint8), 2, pad=0)


def test_displacement_reproducible_even_rows_untouched_and_identity_at_p0():
    lr = np.random.default_rng(1).random((32, 40))
    a, sa = displace_odd_rows(lr, np.random.default_rng(5), p=1.0, max_shift=2)
    b, sb = displace_odd_rows(lr, np.random.default_rng(5), p=1.0, max_shift=2)
    assert np.array_equal(a, b) and np.array_equal(sa, sb)
    assert np.array_equal(a[0::2], lr[0::2])
    d = int(sa[0])
    assert d in (-2, -1, 1, 2) and np.all(sa == d)
    if d > 0:
        assert np.allclose(a[1::2, d:], lr[1::2, :-d]) and np.all(a[1::2, :d] == 0)
    else:
        assert np.allclose(a[1::2, :d], lr[1::2, -d:]) and np.all(a[1::2, d:] == 0)
    same, none = displace_odd_rows(lr, np.random.default_rng(5), p=0.0, max_shift=2)
    assert same is lr and not none.any()


def test_banded_displacement_varies_per_band():
    lr = np.random.default_rng(2).random((128, 48))
    _, shifts = displace_odd_rows(lr, np.random.default_rng(3), p=1.0, max_shift=2, banded=True, band=16)
    bands = shifts.reshape(-1, 8)  # 8 odd rows per band of 16 rows
    assert np.all(bands == bands[:, :1]) and len(np.unique(bands[:, 0])) > 1 and np.all(shifts != 0)


def test_headroom_linear_predictor_is_at_least_bicubic(synth_root):
    """The least-squares 6x6 filter contains bicubic (4x4 taps), so fitted on the images it is scored on it cannot
    be worse than bicubic (up to the 1/255 quantisation); both stay below the clean image."""
    from pamsr.data import load_images
    from pamsr.headroom import measure
    from pamsr.settings import DataConfig

    images = load_images(DataConfig(root=str(synth_root)), "all")
    room = measure(images, images, 2)
    assert room["linear"] >= room["bicubic"] - 0.05
    assert 15 < room["bicubic"] < 60 and np.isfinite(room["hr_scan"])
    with pytest.raises(ValueError, match="clean ground truth"):
        measure(load_images(DataConfig(root=str(synth_root), clean_dataset=None), "all"), images, 2)
