"""ROI hand-off: windows near every border stay inside and hold the centre, paste inverts crop, the fine input has
the channels [R, G, B, coarse OC, coarse OD] in that order."""

from __future__ import annotations

import numpy as np
import pytest

from common.synthetic import ellipse_mask
from joinedtrans.crops import CoarsePrediction, fine_input
from joinedtrans.data import Case, Loaded
from joinedtrans.roi import clean_mask, crop, crop_size, paste, roi_box, roi_centre


@pytest.mark.parametrize("centre", [(0, 0), (199, 0), (0, 149), (199, 149), (100, 0), (0, 75), (199, 75),
                                    (100, 149), (100, 75)])
def test_roi_inside_and_holding_the_centre(centre) -> None:
    w, h, size = 200, 150, 64
    x0, y0 = roi_box(centre, size, w, h)
    assert 0 <= x0 <= w - size and 0 <= y0 <= h - size
    assert x0 <= centre[0] < x0 + size and y0 <= centre[1] < y0 + size
    image = np.arange(w * h).reshape(h, w)
    window = crop(image, (x0, y0), size)
    assert window.shape == (size, size)
    restored = paste(window, (x0, y0), (h, w), fill=-1)
    inside = restored >= 0
    assert np.array_equal(restored[inside], image[inside]) and inside.sum() == size * size


def test_small_image_is_padded_and_sizes_scale_with_height() -> None:
    window = crop(np.ones((30, 40), np.uint8), roi_box((20, 15), 64, 40, 30), 64)
    assert window.shape == (64, 64) and window.sum() == 30 * 40
    assert crop_size(448, 2056, 0) == 448 and crop_size(96, 608, 304) == 192


def test_clean_mask_and_roi_centre() -> None:
    prob = np.zeros((60, 60))
    prob[ellipse_mask((60, 60), (30, 20), (10, 8))] = 0.9
    prob[30, 20] = 0.1  # a hole
    prob[2:4, 50:52] = 0.9  # a speck
    mask = clean_mask(prob)
    assert mask[30, 20] and not mask[2:4, 50:52].any()
    assert roi_centre(mask, mask, (0, 0)) == (20.0, 30.0)
    assert roi_centre(np.zeros_like(mask), np.zeros_like(mask), (5.0, 6.0)) == (5.0, 6.0)


def test_fine_input_channel_order() -> None:
    h, w = 80, 90
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 10, 20, 30
    od = ellipse_mask((h, w), (40, 45), (12, 10))
    oc = ellipse_mask((h, w), (40, 45), (5, 4))
    item = Loaded(Case("x", None, None, None, "refuge", "test"), image, np.full((h, w), 255, np.uint8))
    pred = CoarsePrediction(oc, od, None, None, (45.0, 40.0))
    x, box, side = fine_input(item, pred, 32, 0, True, [0, 0, 0], [1, 1, 1])
    assert x.shape == (5, 32, 32) and side == 32
    assert np.allclose(x[0], 10 / 255) and np.allclose(x[1], 20 / 255) and np.allclose(x[2], 30 / 255)
    assert np.array_equal(x[3].astype(bool), crop(oc, box, 32)) and np.array_equal(x[4].astype(bool),
                                                                                    crop(od, box, 32))
    rgb_only, _, _ = fine_input(item, pred, 32, 0, False, [0, 0, 0], [1, 1, 1])
    assert rgb_only.shape == (3, 32, 32)
