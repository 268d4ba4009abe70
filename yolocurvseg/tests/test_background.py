"""Background generator: inpainting removes vessel energy on a known background; composites and augmentation."""

import numpy as np
import pytest
from skimage.filters import frangi

from common.synthetic import smooth_field
from yolocurvseg.background import (
    BackgroundAug,
    augment_background,
    composite,
    estimate_curve_contrast,
    inpaint,
    inpainting_mask,
)
from yolocurvseg.sca import SCAParams, generate_curves
from yolocurvseg.skeleton import simulate_noisy_skeleton


@pytest.fixture(scope="module")
def scene():
    shape = (96, 96)
    bg = 0.3 + 0.4 * smooth_field(shape, 10, 0)
    curves = generate_curves(shape, SCAParams(n_attractors=100, influence=30, kill=4, step=2, n_roots=(2, 2),
                                              max_radius=2.5, ref_size=96), 1)
    image = composite(bg, curves.intensity, 0.25, "dark")
    sk = simulate_noisy_skeleton(curves.mask, 2) > 0
    return bg, image, curves, sk


@pytest.mark.parametrize("method", ["telea", "ns", "biharmonic"])
def test_inpainting_removes_vessel_energy(scene, method):
    bg, image, curves, sk = scene
    mask = inpainting_mask(sk, 4)
    out = inpaint(image, mask, method)
    err_before = np.abs(image - bg)[mask & curves.mask].mean()
    err_after = np.abs(out - bg)[mask & curves.mask].mean()
    assert err_after < 0.35 * err_before
    v_before = frangi(image, sigmas=[1, 2], black_ridges=True)[mask].sum()
    v_after = frangi(out, sigmas=[1, 2], black_ridges=True)[mask].sum()
    assert v_after < 0.5 * v_before
    assert np.array_equal(out[~mask], image[~mask].astype(np.float32)) or np.abs(out[~mask] - image[~mask]).max() < 1e-3


def test_contrast_estimate_and_composite_polarity(scene):
    bg, image, curves, sk = scene
    est = estimate_curve_contrast(image, bg, curves.mask, "dark")
    assert 0.1 < est <= 0.25
    bright = composite(bg, curves.intensity, 0.2, "bright")
    assert (bright[curves.mask] >= bg[curves.mask] - 1e-6).all()
    with pytest.raises(ValueError, match="polarity"):
        composite(bg, curves.intensity, 0.2, "grey")


def test_background_augmentation_keeps_fov_and_varies():
    bg = smooth_field((64, 64), 5, 0)
    fov = np.zeros((64, 64), bool)
    fov[8:56, 8:56] = True
    a = augment_background(bg, 1, BackgroundAug(), fov)
    b = augment_background(bg, 2, BackgroundAug(), fov)
    assert np.array_equal(a[~fov], bg[~fov]) and not np.allclose(a, b)


def test_inpaint_rejects_unknown_method_and_shape():
    with pytest.raises(ValueError, match="background.method"):
        inpaint(np.zeros((8, 8)), np.zeros((8, 8), bool), "lama")
    with pytest.raises(ValueError, match="shape"):
        inpaint(np.zeros((8, 8)), np.zeros((9, 8), bool))
