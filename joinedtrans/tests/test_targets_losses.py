"""Targets and losses: mask codec, heatmap generator and decoding, distance map, vCDR, Dice loss, curriculum."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.synthetic import ellipse_mask
from joinedtrans.losses import CoarseLoss, curriculum_terms, seg_dice_loss, soft_dice_loss
from joinedtrans.targets import (
    channels_to_mask,
    constrain_fovea_map,
    decode_marginal,
    distance_map,
    field_of_view,
    heatmap,
    label_map,
    mask_to_channels,
    od_landmark,
    resize_bilinear,
    resize_nearest,
    vcdr,
)


def _disc_cup_mask(shape=(60, 80), centre=(30, 40), disc=(14, 12), cup=(7, 6)) -> np.ndarray:
    mask = np.full(shape, 255, np.uint8)
    mask[ellipse_mask(shape, centre, disc)] = 128
    mask[ellipse_mask(shape, centre, cup)] = 0
    return mask


def test_mask_codec_round_trip_and_containment() -> None:
    mask = _disc_cup_mask()
    oc, od, bg = mask_to_channels(mask).astype(bool)
    assert (oc <= od).all() and np.array_equal(bg, ~od)
    assert np.array_equal(channels_to_mask(oc, od), mask)
    assert set(np.unique(label_map(mask))) == {0, 1, 2}


def test_palm_masks_give_disc_only() -> None:
    mask = np.where(ellipse_mask((40, 50), (20, 25), (8, 7)), 0, 255).astype(np.uint8)
    oc, od, bg = mask_to_channels(mask, palm=True).astype(bool)
    assert not oc.any() and od.sum() == (mask == 0).sum() and np.array_equal(bg, ~od)


def test_largest_component_per_channel() -> None:
    mask = _disc_cup_mask()
    mask[2:4, 2:4] = 0  # a stray cup speck outside the disc
    oc, od, _ = mask_to_channels(mask).astype(bool)
    assert not oc[2:4, 2:4].any() and not od[2:4, 2:4].any()


def test_heatmap_peak_sigma_cut_on_non_square_image() -> None:
    h, w, x, y = 50, 90, 70, 12
    sigma = 0.05 * h
    hm = heatmap((h, w), (x, y), sigma)
    assert hm.shape == (h, w) and hm[y, x] == 1.0 and np.unravel_index(hm.argmax(), hm.shape) == (y, x)
    assert hm[y, x + 2] == pytest.approx(np.exp(-4 / sigma**2), rel=1e-6)
    assert hm[hm > 0].min() >= 0.01 and hm[y, x + 6] == 0.0  # exp(-36/6.25) < 0.01
    assert decode_marginal(hm) == (x, y)
    assert not heatmap((h, w), None, sigma).any()


def test_decode_after_resize_round_trip_within_one_resized_pixel() -> None:
    h, w = 300, 420
    for x, y in [(17, 250), (400, 10), (210, 150)]:
        hm = heatmap((h, w), (x, y), 0.05 * h)
        small = resize_nearest(hm, (64, 64))
        back = resize_bilinear(small, (w, h))
        dx, dy = decode_marginal(back)
        assert abs(dx - x) <= w / 64 + 1 and abs(dy - y) <= h / 64 + 1


def test_od_landmark_is_the_bbox_centre_of_zero_pixels() -> None:
    mask = np.full((40, 40), 255, np.uint8)
    mask[10:21, 5:16] = 128
    mask[12:19, 8:13] = 0
    assert od_landmark(mask) == (10.0, 15.0)
    assert od_landmark(np.full((5, 5), 255, np.uint8)) is None


def test_distance_map_zero_at_points_one_at_farthest() -> None:
    d = distance_map((30, 40), [(5, 5), (35, 20), None])
    assert d[5, 5] == 0 and d[20, 35] == 0 and d.max() == pytest.approx(1.0)


def test_vcdr_on_analytic_ellipses() -> None:
    shape = (200, 200)
    od = ellipse_mask(shape, (100, 100), (60, 50))
    oc = ellipse_mask(shape, (100, 100), (30, 25))
    assert abs(vcdr(oc, od) - 0.5) <= 1.0 / 60
    assert vcdr(oc, np.zeros(shape, bool)) == 0.0


def test_dice_loss_perfect_zero_absent_channel_zero() -> None:
    target = torch.zeros(2, 3, 16, 16)
    target[:, 1, 4:12, 4:12] = 1
    target[:, 2] = 1 - target[:, 1]
    per = soft_dice_loss(target.clone(), target)
    assert torch.allclose(per, torch.zeros(3), atol=1e-6)
    wrong = soft_dice_loss(torch.full_like(target, 0.5), target)
    assert wrong[0] == 0 and wrong[1] > 0  # OC absent in the batch -> 0
    assert seg_dice_loss(target.clone(), target) == pytest.approx(0.0, abs=1e-6)


def test_curriculum_phases_and_ablations() -> None:
    full = {"seg", "heatmap", "distance"}
    assert curriculum_terms(0, 300, (1 / 6, 1 / 3), full) == ("distance",)
    assert curriculum_terms(60, 300, (1 / 6, 1 / 3), full) == ("distance", "heatmap")
    assert curriculum_terms(100, 300, (1 / 6, 1 / 3), full) == ("distance", "heatmap", "seg")
    assert curriculum_terms(0, 300, (1 / 6, 1 / 3), {"seg", "heatmap"}) == ("heatmap",)
    assert curriculum_terms(0, 300, (1 / 6, 1 / 3), {"seg"}) == ("seg",)
    loss_fn = CoarseLoss((0.0, 0.0))
    out = {"seg": torch.rand(1, 3, 8, 8), "heatmap": torch.rand(1, 2, 8, 8), "distance": torch.rand(1, 1, 8, 8)}
    batch = {k: torch.rand_like(v) for k, v in out.items()}
    total, parts = loss_fn(out, batch, 0, 10)
    assert total.item() == pytest.approx(parts["seg"] + parts["heatmap"] + parts["distance"], rel=1e-5)


def test_decode_floor_ignores_a_border_rim_that_breaks_the_raw_marginal_argmax() -> None:
    h, w, x, y = 120, 140, 40, 90
    hm = 0.9 * heatmap((h, w), (x, y), 0.05 * h) + 0.15  # a low background everywhere ...
    hm[:, -3:] = 0.4  # ... and a rim along the right border, as an undertrained network leaves
    hm[-3:, :] = 0.4
    assert decode_marginal(hm) != (x, y)  # the raw (JOINED) decode sums the rim over whole rows/columns
    assert decode_marginal(hm, floor=0.5) == (x, y)
    clean = heatmap((h, w), (x, y), 0.05 * h)
    assert decode_marginal(clean, floor=0.5) == decode_marginal(clean)


def test_heatmap_pos_weight_scales_only_the_error_inside_the_target() -> None:
    target = torch.zeros(1, 2, 8, 8)
    target[0, 0, 3:5, 3:5] = 0.5
    pred = torch.full_like(target, 0.25)
    batch = {"seg": torch.zeros(1, 3, 8, 8), "heatmap": target, "distance": torch.zeros(1, 1, 8, 8)}
    outs = {"seg": torch.zeros(1, 3, 8, 8), "heatmap": pred, "distance": torch.zeros(1, 1, 8, 8)}
    plain = CoarseLoss((0.0, 0.0))(outs, batch, 0, 10)[1]["heatmap"]
    weighted = CoarseLoss((0.0, 0.0), heatmap_pos_weight=9.0)(outs, batch, 0, 10)[1]["heatmap"]
    inside, outside = 4 * 0.25**2, (128 - 4) * 0.25**2
    assert plain == pytest.approx((inside + outside) / 128)
    assert weighted == pytest.approx((10 * inside + outside) / 128)


def test_vessel_loss_pos_weight_weights_only_the_vessel_pixels_and_bad_values_are_refused() -> None:
    from joinedtrans.pipeline import vessel_loss
    from joinedtrans.settings import PretrainConfig

    target = torch.zeros(1, 1, 8, 8)
    target[..., 3, :] = 1.0  # one thin "vessel" row: 1/8 of the pixels
    pred = torch.full_like(target, 0.3)
    model = lambda x: pred  # noqa: E731
    batch = {"image": torch.zeros(1, 3, 8, 8), "target": target}
    _, plain = vessel_loss(1.0)(model, batch, 0, 1)
    _, weighted = vessel_loss(5.0)(model, batch, 0, 1)
    bce_pos, bce_neg = -np.log(0.3), -np.log(0.7)
    assert plain["bce"] == pytest.approx((bce_pos + 7 * bce_neg) / 8, rel=1e-5)
    assert weighted["bce"] == pytest.approx((5 * bce_pos + 7 * bce_neg) / 8, rel=1e-5)
    assert weighted["dice_loss"] == pytest.approx(plain["dice_loss"])
    # at a constant output below 0.5 the weighted BCE pulls the output up, the plain one down
    p = torch.full_like(target, 0.2, requires_grad=True)
    for w, sign in ((1.0, 1), (12.0, -1)):
        p.grad = None
        bce = torch.nn.functional.binary_cross_entropy(p, target, weight=1 + (w - 1) * target)
        bce.backward()
        assert sign * float(p.grad.sum()) > 0
    with pytest.raises(ValueError, match="pretrain.pos_weight"):
        PretrainConfig(pos_weight=0.0)


def _fundus(h: int = 120, w: int = 140, radius: int = 55) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    image = np.zeros((h, w, 3), np.uint8)
    image[(xx - w / 2) ** 2 + (yy - h / 2) ** 2 < radius ** 2] = (180, 80, 40)  # circular FOV on black
    return image


def test_field_of_view_is_the_eroded_bright_aperture() -> None:
    image = _fundus()
    fov = field_of_view(image, 20)
    assert fov[60, 70] and not fov[0, 0] and not fov[60, 139]
    assert not fov[60, 70 + 54]  # the aperture's rim (1 px inside the circle) is eroded away
    assert fov.sum() < (image.max(axis=2) > 20).sum()


def test_fovea_constraints_skip_the_disc_and_the_border_and_never_leave_an_empty_map() -> None:
    h, w = 120, 140
    image = _fundus(h, w)
    od = np.zeros((h, w), bool)
    od[50:70, 30:46] = True  # predicted disc, vertical diameter 20, centre (37.5, 59.5)
    fovea = (95, 64)
    hm = 0.6 * heatmap((h, w), fovea, 6.0)
    hm = np.maximum(hm, heatmap((h, w), (38, 60), 6.0))  # the fovea channel also fires on the disc, brighter
    assert decode_marginal(hm, 0.5)[0] == 38.0  # the raw decode lands on the disc
    assert decode_marginal(constrain_fovea_map(hm, image, od, 0, 0.5), 0.5) == fovea
    rim = hm.copy()
    rim[:, :2] = 1.0  # a bright column on the black border, outside the field of view
    assert decode_marginal(constrain_fovea_map(rim, image, od, 0, 0.5), 0.5)[0] == 0.0
    assert decode_marginal(constrain_fovea_map(rim, image, od, 20, 0.5), 0.5) == fovea
    assert np.array_equal(constrain_fovea_map(hm, image, od, 0, 0.0), hm.astype(np.float32))  # 0 = JOINED, off
    only_disc = heatmap((h, w), (38, 60), 2.0)  # support (< 0.01 cut) inside the excluded disc
    assert np.array_equal(constrain_fovea_map(only_disc, image, od, 20, 0.5), only_disc.astype(np.float32))


def test_fovea_constraint_keys_are_validated() -> None:
    from joinedtrans.settings import CoarseConfig

    with pytest.raises(ValueError, match="fovea_fov_threshold"):
        CoarseConfig(fovea_fov_threshold=300)
    with pytest.raises(ValueError, match="fovea_disc_exclusion"):
        CoarseConfig(fovea_disc_exclusion=-1.0)


def test_calibration_disc_rule_places_the_fovea_from_the_gt_disc(synth_root, ci_config, tmp_path) -> None:
    from joinedtrans.calibrate import disc_geometry, disc_rule

    cfg = ci_config(tmp_path / "runs", synth_root)
    train = disc_geometry(cfg, "train")
    assert train and all(r["dd"] > 0 and r["side"] in (1.0, -1.0) for r in train)
    out = disc_rule(train, disc_geometry(cfg, "test"))
    assert 2.0 < out["offset_temporal_dd"] < 3.0  # the generator puts the fovea 2.5 DD temporal of the disc
    assert out["disc_rule"] < out["mean_position"]
