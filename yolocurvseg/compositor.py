"""Fusion of the generated curves with an extracted background (the naive composite that is the synthesizer's domain
A and the synthetic-only ablation), with an appearance fitted on the ONE labelled image (OURS; the paper's fusion
synthesizer is learned, its input composite is not described).

The labelled image gives three facts, all read off its residual ``R`` against its own inpainted background inside
the inflated skeleton (``R = (background - image) / background`` for dark curves, ``image - background`` for
bright ones):

- **edge profile -> point-spread function, contrast -> calibre.** Profiles of ``R`` across the vessel at the ridge
  points next to the noisy skeleton (direction across from the residual's Hessian, sub-pixel peak alignment) are
  ranked by their area and split into groups; the groups' median profiles are fitted jointly by a blurred box
  ``b + c(r_k) [Phi((t + r_k) / sigma) - Phi((t - r_k) / sigma)]`` with one PSF width ``sigma``, one line
  ``c(r) = c0 + c1 r`` (contrast as a function of calibre, clipped to the groups' range) and one half-width ``r_k``
  per group. Below the PSF width a profile shows mainly its area ``2 c r``, so the slope ``c1`` is weakly determined;
  on the hidden domain it comes out near zero and the composites' contrast-by-calibre comes mostly from the PSF;
- **texture.** The high-pass residual ``image - G_1.5 * image`` outside the band (inside the FOV) is copied into the
  band by a few random shifts, so the inpainted band carries the same fine texture as the rest of the background
  instead of a smooth scar (:func:`renoise_band`).

The curve layer is then ``G_sigma * (c(r) coverage)`` with ``r`` the local radius of the generated tree
(:func:`radius_map`), applied multiplicatively for dark curves (``background (1 - layer)``) and additively for bright
ones (:func:`fuse`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, optimize
from scipy.spatial import cKDTree
from scipy.special import erf

from common.synthetic import as_rng

__all__ = ["CurveAppearance", "residual", "ridge_points", "cross_profiles", "fit_appearance", "radius_map",
           "curve_layer", "fuse", "renoise_band", "centre_contrast", "texture_std"]


@dataclass(frozen=True)
class CurveAppearance:
    """Curve appearance of one labelled image: PSF ``sigma`` (px, 0 = none), contrast ``c0 + c1 r`` clipped to
    ``[c_min, c_max]`` (relative for dark curves, absolute for bright ones)."""

    sigma: float
    c0: float
    c1: float
    c_min: float
    c_max: float

    def contrast(self, radius: np.ndarray | float) -> np.ndarray:
        return np.clip(self.c0 + self.c1 * np.asarray(radius, np.float64), self.c_min, self.c_max)


def residual(image: np.ndarray, background: np.ndarray, polarity: str) -> np.ndarray:
    """``(H, W)`` float32 curve signal of ``image`` against its inpainted ``background`` (positive on curves)."""
    img, bg = np.asarray(image, np.float64), np.asarray(background, np.float64)
    if polarity == "dark":
        return ((bg - img) / np.maximum(bg, 1e-3)).astype(np.float32)
    if polarity == "bright":
        return (img - bg).astype(np.float32)
    raise ValueError(f"polarity must be dark or bright, got {polarity!r}")


def ridge_points(res: np.ndarray, skeleton: np.ndarray, reach: int = 2) -> np.ndarray:
    """``(N, 2)`` int pixel positions: for each skeleton pixel, the maximum of the lightly smoothed residual within
    ``reach`` px (the vessel centre next to a wobbly hand-drawn line), duplicates removed."""
    smooth = ndimage.gaussian_filter(np.asarray(res, np.float64), 0.7)
    h, w = smooth.shape
    pts = np.argwhere(np.asarray(skeleton, bool))
    offsets = np.array([(dy, dx) for dy in range(-reach, reach + 1) for dx in range(-reach, reach + 1)])
    cand = np.clip(pts[:, None, :] + offsets[None], 0, [h - 1, w - 1])
    best = smooth[cand[..., 0], cand[..., 1]].argmax(axis=1)
    return np.unique(cand[np.arange(len(pts)), best], axis=0)


def cross_profiles(res: np.ndarray, points: np.ndarray, half: float, step: float = 0.5, scale: float = 1.5
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Profiles of ``res`` across the curve at ``points``: ``(t, profiles)`` with ``t`` ``(T,)`` offsets in px in
    ``[-half, half]`` and ``profiles`` ``(N, T)``. The direction across is the Hessian eigenvector of the residual
    (smoothed at ``scale``) with the most negative eigenvalue (a bright ridge in ``res``); each profile is then
    shifted by the sub-pixel offset of its peak (parabola through the three samples around the central maximum),
    so neither the pixel grid nor the hand-drawn line's wobble widens the median profile."""
    r = np.asarray(res, np.float64)
    hyy = ndimage.gaussian_filter(r, scale, order=(2, 0))
    hxx = ndimage.gaussian_filter(r, scale, order=(0, 2))
    hxy = ndimage.gaussian_filter(r, scale, order=(1, 1))
    py, px = points[:, 0], points[:, 1]
    a, b, c = hyy[py, px], hxy[py, px], hxx[py, px]
    theta = 0.5 * np.arctan2(2 * b, a - c)  # principal axis of [[a, b], [b, c]] with the larger eigenvalue
    lam1 = 0.5 * (a + c) + np.hypot(0.5 * (a - c), b)
    lam2 = 0.5 * (a + c) - np.hypot(0.5 * (a - c), b)
    theta = np.where(lam2 < lam1, theta + np.pi / 2, theta)  # the direction of the most negative curvature
    normals = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    t = np.arange(-half, half + step / 2, step)
    wide = np.arange(-half - 2, half + 2 + step / 2, step)
    coords = points[:, None, :] + wide[None, :, None] * normals[:, None, :]
    prof = ndimage.map_coordinates(r, [coords[..., 0], coords[..., 1]], order=1, mode="nearest")
    mid = len(wide) // 2
    k = int(round(1.0 / step))
    peak = mid - k + prof[:, mid - k: mid + k + 1].argmax(axis=1)
    y0, y1, y2 = (prof[np.arange(len(prof)), peak + d] for d in (-1, 0, 1))
    den = y0 - 2 * y1 + y2
    frac = np.where(den < 0, 0.5 * (y0 - y2) / np.where(den < 0, den, -1), 0.0).clip(-0.5, 0.5)
    centre = wide[peak] + frac * step
    out = np.stack([np.interp(t + c0, wide, p) for c0, p in zip(centre, prof, strict=True)])
    return t, out


def _box_profile(t: np.ndarray, c: float, r: float, sigma: float) -> np.ndarray:
    s = max(sigma, 1e-3) * np.sqrt(2)
    return 0.5 * c * (erf((t + r) / s) - erf((t - r) / s))


def fit_appearance(image: np.ndarray, background: np.ndarray, skeleton: np.ndarray, polarity: str, half: float,
                   groups: int = 4) -> CurveAppearance:
    """Fit the PSF width and the contrast-calibre line on the labelled image (module docstring). ``half``: the
    half-length of the cross profiles (the inflated-skeleton radius). Profiles without a curve at their centre
    (skeleton pieces off any vessel) are dropped; the rest are ranked by area into ``groups``, and the groups' median
    profiles are fitted jointly by ``b + c(r_k) box(t; r_k, sigma)`` with ``c(r) = c0 + c1 r`` (one line for all
    groups: that is what makes contrast and width separable below the PSF width) and a baseline ``b``."""
    res = residual(image, background, polarity)
    t, prof = cross_profiles(res, ridge_points(res, skeleton), half)
    prof = prof[prof[:, np.abs(t) <= 1].mean(axis=1) > 0]
    if len(prof) < 4 * groups:
        raise ValueError(f"the noisy skeleton gives {len(prof)} usable cross profiles; at least {4 * groups} are "
                         f"needed to fit the curve appearance (use curves.contrast_model=median and curves.psf=off)")
    area = prof.sum(axis=1)
    edges = np.quantile(area, np.linspace(0, 1, groups + 1))
    med = np.stack([np.median(prof[(area >= lo) & (area <= hi)], axis=0) for lo, hi in zip(edges, edges[1:])])

    def resid(theta: np.ndarray) -> np.ndarray:
        sigma, c0, c1, b, radii = theta[0], theta[1], theta[2], theta[3], theta[4:]
        return np.concatenate([b + _box_profile(t, c0 + c1 * r, r, sigma) - m for r, m in zip(radii, med,
                                                                                             strict=True)])

    start = np.r_[1.0, max(float(med.max()), 0.05), 0.0, 0.0, np.linspace(0.8, 2.0, groups)]
    lower = np.r_[0.2, 0.0, -1.0, -0.5, np.full(groups, 0.3)]
    upper = np.r_[3.0, 1.5, 1.0, 0.5, np.full(groups, half)]
    fit = optimize.least_squares(resid, start, bounds=(lower, upper))
    sigma, c0, c1, radii = float(fit.x[0]), float(fit.x[1]), float(fit.x[2]), fit.x[4:]
    cs = c0 + c1 * radii
    return CurveAppearance(sigma, c0, c1, float(max(cs.min(), 0.01)), float(max(cs.max(), 0.01)))


def radius_map(pos: np.ndarray, radius: np.ndarray, coverage: np.ndarray) -> np.ndarray:
    """``(H, W)`` float32 local radius of a rendered tree (nodes ``pos`` ``(N, 2)``, ``radius`` ``(N,)``): the radius
    of the nearest node on every pixel with ``coverage > 0``, 0 elsewhere."""
    out = np.zeros(coverage.shape, np.float32)
    where = np.argwhere(coverage > 0)
    if len(where) and len(pos):
        _, idx = cKDTree(np.asarray(pos, np.float64)).query(where)
        out[where[:, 0], where[:, 1]] = np.asarray(radius)[idx]
    return out


def curve_layer(coverage: np.ndarray, radii: np.ndarray, appearance: CurveAppearance | None, contrast: float
                ) -> np.ndarray:
    """``(H, W)`` float32 curve signal: ``G_sigma * (c(r) coverage)`` with the fitted appearance, or
    ``contrast * coverage`` (one median contrast, no PSF) when ``appearance`` is None."""
    if appearance is None:
        return (contrast * coverage).astype(np.float32)
    layer = appearance.contrast(radii) * coverage
    if appearance.sigma > 0:
        layer = ndimage.gaussian_filter(layer, appearance.sigma)
    return layer.astype(np.float32)


def fuse(background: np.ndarray, layer: np.ndarray, polarity: str, multiplicative: bool = True) -> np.ndarray:
    """Composite ``(H, W)`` float32 in [0, 1]: dark curves ``background (1 - layer)`` (``multiplicative``) or
    ``background - layer``; bright curves ``background + layer``."""
    if polarity not in ("dark", "bright"):
        raise ValueError(f"polarity must be dark or bright, got {polarity!r}")
    if polarity == "bright":
        out = background + layer
    else:
        out = background * (1 - layer) if multiplicative else background - layer
    return np.clip(out, 0, 1).astype(np.float32)


def renoise_band(background: np.ndarray, image: np.ndarray, band: np.ndarray, fov: np.ndarray,
                 rng: int | np.random.Generator | None, shifts: int = 12, sigma: float = 1.5) -> np.ndarray:
    """The inpainted ``background`` with the high-pass texture of ``image`` (``image - G_sigma * image``) copied into
    ``band`` from outside it: for every band pixel the first of ``shifts`` random offsets (2-6 band widths) whose
    source lies inside the FOV and outside the band; pixels no offset reaches get a random valid source pixel."""
    rng = as_rng(rng)
    img = np.asarray(image, np.float32)
    high = img - ndimage.gaussian_filter(img, sigma)
    band = np.asarray(band, bool)
    valid = ndimage.binary_erosion(np.asarray(fov, bool), iterations=2) & ~ndimage.binary_dilation(band, iterations=2)
    if not band.any() or not valid.any():
        return np.asarray(background, np.float32).copy()
    h, w = img.shape
    ys, xs = np.nonzero(band)
    texture = np.full(len(ys), np.nan, np.float32)
    width = max(float(ndimage.distance_transform_edt(band).max()) * 2, 2.0)
    for _ in range(shifts):
        ang, dist = rng.uniform(0, 2 * np.pi), rng.uniform(2, 6) * width
        sy, sx = ys + int(round(dist * np.sin(ang))), xs + int(round(dist * np.cos(ang)))
        inside = (sy >= 0) & (sy < h) & (sx >= 0) & (sx < w)
        ok = np.zeros(len(ys), bool)
        ok[inside] = valid[sy[inside], sx[inside]]
        take = ok & np.isnan(texture)
        texture[take] = high[sy[take], sx[take]]
    left = np.isnan(texture)
    if left.any():
        texture[left] = rng.choice(high[valid], size=int(left.sum()))
    out = np.asarray(background, np.float32).copy()
    out[ys, xs] += texture
    return np.clip(out, 0, 1)


def centre_contrast(image: np.ndarray, mask: np.ndarray, fov: np.ndarray, polarity: str, sigma: float = 3.0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``(radius, contrast)`` at the centre-line pixels of ``mask``: the radius is the distance transform of the mask
    there, the contrast is the centre value against the local background (the Gaussian-weighted mean of the pixels
    at least 2 px away from any curve, inside the FOV), relative for dark curves as in :func:`residual`."""
    from skimage.morphology import skeletonize

    m = np.asarray(mask, bool)
    far = np.asarray(fov, bool) & ~ndimage.binary_dilation(m, iterations=2)
    img = np.asarray(image, np.float64)
    local = ndimage.gaussian_filter(img * far, sigma) / np.maximum(ndimage.gaussian_filter(far * 1.0, sigma), 1e-6)
    centre = skeletonize(m) & (ndimage.gaussian_filter(far * 1.0, sigma) > 0.05)
    res = residual(img, local, polarity)
    return ndimage.distance_transform_edt(m)[centre], res[centre]


def texture_std(image: np.ndarray, region: np.ndarray, sigma: float = 1.5) -> float:
    """Standard deviation of the high-pass ``image - G_sigma * image`` over the bool ``region``."""
    img = np.asarray(image, np.float64)
    high = img - ndimage.gaussian_filter(img, sigma)
    r = np.asarray(region, bool)
    return float(high[r].std()) if r.any() else float("nan")
