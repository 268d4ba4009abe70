"""Compositor: the curve appearance fitted on one labelled image recovers a known PSF and contrast-calibre line; the
re-noised band carries the texture of the rest of the background; local radii of a rendered tree."""

import numpy as np
import pytest
from scipy import ndimage

from common.synthetic import smooth_field
from yolocurvseg.background import inpaint, inpainting_mask
from yolocurvseg.compositor import (
    CurveAppearance,
    centre_contrast,
    curve_layer,
    fit_appearance,
    fuse,
    radius_map,
    renoise_band,
    texture_std,
)
from yolocurvseg.sca import SCAParams, generate_curves
from yolocurvseg.skeleton import simulate_noisy_skeleton

TRUE = CurveAppearance(sigma=1.0, c0=0.15, c1=0.12, c_min=0.1, c_max=0.6)


@pytest.fixture(scope="module")
def scene():
    shape = (128, 128)
    rng = np.random.default_rng(0)
    bg = (0.45 + 0.2 * smooth_field(shape, 12, 0) + 0.06 * (smooth_field(shape, 1.0, 1) - 0.5)).astype(np.float32)
    curves = generate_curves(shape, SCAParams(n_attractors=140, influence=30, kill=4, step=2, n_roots=(3, 3),
                                              leaf_radius=0.8, min_radius=0.7, max_radius=3.0, ref_size=128), 1)
    layer = curve_layer(curves.intensity, radius_map(curves.tree.pos, curves.tree.radius, curves.intensity), TRUE, 0)
    image = fuse(bg, layer, "dark") + rng.normal(0, 0.005, shape).astype(np.float32)
    skeleton = simulate_noisy_skeleton(curves.mask, 2) > 0
    return bg, np.clip(image, 0, 1), curves, skeleton


def test_fit_recovers_psf_and_contrast_line(scene):
    bg, image, curves, skeleton = scene
    band = inpainting_mask(skeleton, 4)
    fitted = fit_appearance(image, inpaint(image, band), skeleton, "dark", 4.0)
    assert fitted.sigma == pytest.approx(TRUE.sigma, abs=0.4)
    for r in (1.0, 2.0):  # the contrast at a thin and a thick calibre, relative to the background
        assert fitted.contrast(r) == pytest.approx(TRUE.contrast(r), rel=0.3), (r, fitted)


def test_centre_contrast_grows_with_calibre_in_the_fitted_composite(scene):
    bg, image, curves, _ = scene
    radius, contrast = centre_contrast(image, curves.mask, np.ones_like(curves.mask), "dark")
    assert np.median(contrast[radius > 2]) > np.median(contrast[radius < 1.2]) + 0.05


def test_renoised_band_has_the_outside_texture(scene):
    bg, image, curves, skeleton = scene
    band = inpainting_mask(skeleton, 4)
    inpainted = inpaint(image, band)
    fov = np.ones_like(band)
    outside = ~ndimage.binary_dilation(band | curves.mask, iterations=2)
    before = texture_std(inpainted, band & ~curves.mask)
    ref = texture_std(image, outside)
    after_img = renoise_band(inpainted, image, band, fov, 0)
    after = texture_std(after_img, band)
    assert before < 0.6 * ref  # the smooth scar the segmenter could learn
    assert after == pytest.approx(ref, rel=0.25)
    np.testing.assert_array_equal(after_img[~band], inpainted[~band])  # only the band changes
    np.testing.assert_array_equal(after_img, renoise_band(inpainted, image, band, fov, 0))  # deterministic


def test_radius_map_takes_the_nearest_node():
    pos = np.array([[10.0, 10.0], [10.0, 30.0]])
    cov = np.zeros((20, 40), np.float32)
    cov[10, 8:13] = 1
    cov[10, 28:33] = 1
    out = radius_map(pos, np.array([2.5, 0.8]), cov)
    assert np.all(out[10, 8:13] == 2.5) and np.all(out[10, 28:33] == np.float32(0.8)) and out[0].sum() == 0
    with pytest.raises(ValueError, match="polarity"):
        fuse(np.zeros((2, 2)), np.zeros((2, 2)), "grey")
