import math

import numpy as np
import pytest

from common.metrics import (
    binary_segmentation_metrics,
    classification_metrics,
    psnr,
    quadratic_kappa,
    segmentation_metrics,
    ssim,
)


def test_binary_auc_hand_computed():
    # positives {0.35, 0.8} vs negatives {0.1, 0.4}: 3 of 4 pairs ranked correctly
    m = classification_metrics([0, 0, 1, 1], np.array([0.1, 0.4, 0.35, 0.8]))
    assert m["auc"] == pytest.approx(0.75)
    assert m["accuracy"] == pytest.approx(0.75)  # threshold 0.5: 0.8 -> 1, rest -> 0
    np.testing.assert_array_equal(m["confusion_matrix"], [[2, 0], [1, 1]])


def test_multiclass_metrics_from_logits():
    y = np.array([0, 1, 2, 2])
    logits = np.array([[5.0, 0, 0], [0, 5, 0], [0, 0, 5], [0, 5, 0]])
    m = classification_metrics(y, logits, from_logits=True)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["balanced_accuracy"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert m["auc_per_class"][0] == pytest.approx(1.0)
    assert m["auc_per_class"][2] == pytest.approx(0.75)  # class 2 scores: pos {5, 0}, neg {0, 0}: (1+1+.5+.5)/4
    assert m["auc"] == pytest.approx(np.mean(m["auc_per_class"]))
    with pytest.raises(ValueError, match="labels must lie"):
        classification_metrics([0, 3], np.zeros((2, 3)))


def test_quadratic_kappa_known_values():
    assert quadratic_kappa([0, 1, 2], [0, 1, 2]) == pytest.approx(1.0)
    # all predictions one grade off in a 3-grade problem
    assert quadratic_kappa([0, 1, 2, 2], [1, 2, 1, 1]) < 0.5


def test_dice_iou_hd95_hand_computed():
    gt = np.zeros((10, 10), bool)
    gt[2:4, 2:4] = True  # 4 px
    pred = np.zeros_like(gt)
    pred[2:4, 2] = True  # 2 px inside gt
    m = binary_segmentation_metrics(pred, gt)
    assert m["dice"] == pytest.approx(2 * 2 / 6)
    assert m["iou"] == pytest.approx(0.5)
    a, b = np.zeros((10, 10), bool), np.zeros((10, 10), bool)
    a[1, 1], b[1, 4] = True, True
    m = binary_segmentation_metrics(a, b, spacing=(1.0, 2.0))
    assert m["hd95"] == pytest.approx(6.0) and m["asd"] == pytest.approx(6.0)


def test_empty_mask_policy():
    empty = np.zeros((5, 5), bool)
    full = np.zeros((5, 5), bool)
    full[2, 2] = True
    both = binary_segmentation_metrics(empty, empty)
    assert both == {"empty_pred": 1.0, "empty_gt": 1.0, "dice": 1.0, "iou": 1.0, "hd95": 0.0, "asd": 0.0}
    missed = binary_segmentation_metrics(empty, full)
    assert missed["dice"] == 0.0 and missed["hd95"] == pytest.approx(math.sqrt(32))
    hallucinated = binary_segmentation_metrics(full, empty, spacing=(2.0, 2.0))
    assert hallucinated["hd95"] == pytest.approx(math.sqrt(128)) and hallucinated["empty_gt"] == 1.0
    with pytest.raises(ValueError, match="shape"):
        binary_segmentation_metrics(empty, np.zeros((4, 4)))


def test_multiclass_label_map_with_unions():
    gt = np.array([[0, 1, 1, 2]])
    pred = np.array([[0, 1, 2, 2]])
    m = segmentation_metrics(pred, gt, {"disc": [1, 2], "cup": 2}, surface=False)
    assert m["dice_disc"] == pytest.approx(1.0)
    assert m["dice_cup"] == pytest.approx(2 * 1 / 3)


def test_psnr_ssim():
    target = np.zeros((16, 16))
    pred = target + 0.1  # MSE 0.01 -> 20 dB at data range 1
    assert psnr(pred, target, data_range=1.0) == pytest.approx(20.0)
    assert psnr(target, target, 1.0) == math.inf
    rng = np.random.default_rng(0)
    img = rng.random((32, 32))
    assert ssim(img, img, data_range=1.0) == pytest.approx(1.0)
    noise = rng.normal(0, 1, img.shape)
    mild, strong = ssim(img + 0.05 * noise, img, data_range=1.0), ssim(img + 0.3 * noise, img, data_range=1.0)
    assert 1.0 > mild > strong > 0.0


def test_mask_dice_pools_slices_and_states_the_empty_case():
    from common.metrics import mask_dice

    a = np.zeros((2, 4, 4), bool)
    b = np.zeros((2, 4, 4), bool)
    a[0, :2, :2] = True  # 4 pixels on slice 0
    b[0, :2, :1] = True  # 2 of them
    b[1, 0, 0] = True  # 1 more on slice 1
    assert mask_dice(a, b) == pytest.approx(2 * 2 / (4 + 3))
    assert np.isnan(mask_dice(a[1], a[1])) and mask_dice(a[1], a[1], empty=1.0) == 1.0
    assert mask_dice(a[1], b[1], empty=1.0) == 0.0
    with pytest.raises(ValueError, match="mask shapes differ"):
        mask_dice(a, b[0])
