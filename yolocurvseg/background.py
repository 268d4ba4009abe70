"""Background generator: inpaint the dilated noisy skeleton out of the single labelled image, then diversify.

YoloCurvSeg background generator (paper abstract): "A background generator delivers image backgrounds that closely
match real distributions through inpainting dilated skeletons." The inpainting method and the dilation radius are
not public; OURS: the mask is the skeleton dilated by a disk of ``radius`` px, filled with OpenCV
Telea / Navier-Stokes or scikit-image biharmonic inpainting; backgrounds are diversified with flips, 90-degree
rotations, random crops re-scaled to full size and intensity jitter (brightness, contrast, gamma).

Also here: the naive composite (background + curves, the synthesizer's domain A and the synthetic-only ablation) and
the estimate of the curve contrast from the inpainting residual of the labelled image.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from common.synthetic import as_rng

__all__ = ["inpainting_mask", "inpaint", "BackgroundAug", "augment_background", "estimate_curve_contrast",
           "composite"]

_METHODS = ("telea", "ns", "biharmonic")


def inpainting_mask(skeleton: np.ndarray, radius: int) -> np.ndarray:
    """The "inflated" skeleton: bool ``(H, W)`` dilation of the skeleton by a disk of ``radius`` px."""
    if radius < 0:
        raise ValueError(f"inpainting radius must be >= 0, got {radius}")
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate((np.asarray(skeleton) > 0).astype(np.uint8), disk) > 0


def inpaint(image: np.ndarray, mask: np.ndarray, method: str = "telea", cv_radius: int = 3) -> np.ndarray:
    """Fill ``mask`` (bool ``(H, W)``) in a grey float ``image`` ``(H, W)`` in [0, 1]; returns float32 ``(H, W)``."""
    if method not in _METHODS:
        raise ValueError(f"background.method={method!r}; choose one of {list(_METHODS)}")
    img = np.clip(np.asarray(image, np.float32), 0, 1)
    m = np.asarray(mask, bool)
    if img.shape != m.shape:
        raise ValueError(f"inpainting mask shape {m.shape} differs from image shape {img.shape}")
    if not m.any():
        return img.copy()
    if method == "biharmonic":
        from skimage.restoration import inpaint_biharmonic

        return inpaint_biharmonic(img, m).astype(np.float32)
    flag = cv2.INPAINT_TELEA if method == "telea" else cv2.INPAINT_NS
    u16 = np.round(img * 65535).astype(np.uint16)  # cv2.inpaint supports 16-bit one-channel images
    out = cv2.inpaint(u16, m.astype(np.uint8), cv_radius, flag)
    return (out.astype(np.float32) / 65535.0).astype(np.float32)


@dataclass
class BackgroundAug:
    """Diversification of the single extracted background (OURS)."""

    flip: bool = True
    rot90: bool = True
    crop_scale: tuple[float, float] = (0.7, 1.0)   # side of the random crop, fraction of the image side
    brightness: float = 0.08
    contrast: float = 0.15
    gamma: float = 0.2


def augment_background(bg: np.ndarray, rng: int | np.random.Generator | None, aug: BackgroundAug,
                       fov: np.ndarray | None = None) -> np.ndarray:
    """One random variant ``(H, W)`` float32 of the background ``bg``; outside ``fov`` the original is kept, so a
    fundus FOV stays where it is (crops and flips then act inside the FOV only)."""
    rng = as_rng(rng)
    h, w = bg.shape
    out = bg.astype(np.float32)
    if aug.flip and rng.random() < 0.5:
        out = out[:, ::-1]
    if aug.flip and rng.random() < 0.5:
        out = out[::-1, :]
    if aug.rot90 and h == w:
        out = np.rot90(out, int(rng.integers(4)))
    lo, hi = aug.crop_scale
    s = rng.uniform(lo, hi)
    ch, cw = max(int(round(h * s)), 8), max(int(round(w * s)), 8)
    y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    out = cv2.resize(np.ascontiguousarray(out[y0: y0 + ch, x0: x0 + cw]), (w, h), interpolation=cv2.INTER_LINEAR)
    mean = float(out.mean())
    out = (out - mean) * (1 + rng.uniform(-aug.contrast, aug.contrast)) + mean + rng.uniform(-aug.brightness,
                                                                                             aug.brightness)
    out = np.clip(out, 0, 1) ** np.exp(rng.uniform(-aug.gamma, aug.gamma))
    if fov is not None:
        out = np.where(fov, out, bg)
    return out.astype(np.float32)


def estimate_curve_contrast(image: np.ndarray, background: np.ndarray, skeleton: np.ndarray,
                            polarity: str) -> float:
    """Median vessel contrast on the skeleton pixels of the labelled image: ``|image - background|`` signed by the
    polarity (``dark`` vessels are below the background). Returns a positive float (at least 0.02)."""
    sk = np.asarray(skeleton) > 0
    diff = (np.asarray(background, np.float32) - np.asarray(image, np.float32))[sk]
    if polarity == "bright":
        diff = -diff
    return float(max(np.median(diff) if diff.size else 0.0, 0.02))


def composite(background: np.ndarray, curves: np.ndarray, contrast: float, polarity: str) -> np.ndarray:
    """Naive fusion ``(H, W)``: dark curves multiply the background down, bright curves add to it; curves in [0, 1]."""
    if polarity not in ("dark", "bright"):
        raise ValueError(f"polarity must be dark or bright, got {polarity!r}")
    if polarity == "dark":
        out = background - contrast * curves
    else:
        out = background + contrast * curves
    return np.clip(out, 0, 1).astype(np.float32)
