"""Degradation model (official ``src/data/burst_v3.py``).

- ``prepare_hr``: zero-pad the HR polar image (12 px: 1000 -> 1024) and check it divides by the scale.
- ``decimate``: LR = HR[::s, ::s] along both axes (no blur, no noise).
- ``minmax``: per-image min-max normalisation to [0, 1]; LR and HR are normalised independently as in the
  official loader (switchable to joint normalisation with the HR's range).
- ``displace_odd_rows``: the displacement degradation (paper v1; absent from the code, our design): with
  probability ``p`` the odd LR rows are shifted along the columns by ``delta ~ U{-m..m} \\ {0}``, one value per image
  or one per band of ``band`` LR rows; zero fill; even rows untouched. Training-only augmentation of the LR.
"""

from __future__ import annotations

import numpy as np

from pamsr.geometry import pad_image
from pamsr.registration import shift_rows

__all__ = ["DegradationError", "prepare_hr", "decimate", "minmax", "make_pair", "scale_like", "displace_odd_rows"]


class DegradationError(ValueError):
    """An image that cannot be degraded as configured; the message names the image and the fix."""


def prepare_hr(hr: np.ndarray, pad: int, scale: int, name: str = "image") -> np.ndarray:
    """``(H, W)`` HR -> zero-padded float64 ``(H + 2 pad, W + 2 pad)``; errors when not divisible by ``scale``."""
    hr = np.asarray(hr)
    if hr.ndim != 2:
        raise DegradationError(f"{name}: expected a single-channel (H, W) image, got shape {hr.shape}")
    padded = pad_image(hr.astype(np.float64), pad)
    h, w = padded.shape
    if h % scale or w % scale:
        raise DegradationError(
            f"{name}: size {hr.shape[0]}x{hr.shape[1]} padded by {pad} px is {h}x{w}, not divisible by scale "
            f"{scale}. Use data.pad so that (size + 2*pad) is a multiple of {scale} (official: 1000 + 2*12 = 1024)")
    return padded


def decimate(hr: np.ndarray, scale: int) -> np.ndarray:
    """LR = HR[::s, ::s] -> ``(H / s, W / s)``."""
    return hr[::scale, ::scale]


def minmax(image: np.ndarray, name: str = "image", lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Min-max scale to [0, 1] (own range unless ``lo``/``hi`` given); a constant image is an error."""
    lo = float(image.min()) if lo is None else lo
    hi = float(image.max()) if hi is None else hi
    if hi <= lo:
        raise DegradationError(f"{name} is constant (all pixels = {lo:g}); an empty scan cannot be normalised. "
                               f"Remove it from the dataset folder")
    return np.clip((image - lo) / (hi - lo), 0.0, 1.0)


def make_pair(hr: np.ndarray, scale: int, pad: int = 12, normalise: str = "independent", name: str = "image"
              ) -> tuple[np.ndarray, np.ndarray]:
    """HR polar image -> ``(lr, hr)`` float32 in [0, 1]: padded HR ``(H', W')`` and its decimation ``(H'/s, W'/s)``."""
    padded = prepare_hr(hr, pad, scale, name)
    if padded.max() <= 0:
        raise DegradationError(f"{name} is all zeros; an empty scan cannot be used. Remove it from the dataset")
    lr = decimate(padded, scale)
    if normalise == "independent":
        hr_n, lr_n = minmax(padded, name), minmax(lr, f"{name} (LR)")
    elif normalise == "joint":
        lo, hi = float(padded.min()), float(padded.max())
        hr_n, lr_n = minmax(padded, name, lo, hi), minmax(lr, name, lo, hi)
    else:
        raise ValueError(f"data.normalise must be independent or joint, got {normalise!r}")
    return lr_n.astype(np.float32), hr_n.astype(np.float32)


def scale_like(image: np.ndarray, reference: np.ndarray, pad: int, name: str = "image") -> np.ndarray:
    """Pad ``image`` like the HR and put it on the intensity scale of the normalised HR made from ``reference``
    (``(x - min) / (max - min)`` of the padded reference, clipped to [0, 1]) -> float32. Used for the clean ground
    truth, so that its PSNR against the SR measures the error of the signal, not of a different normalisation."""
    if np.shape(image) != np.shape(reference):
        raise DegradationError(f"{name}: size {np.shape(image)} differs from its HR image {np.shape(reference)}; "
                               f"the clean ground truth must have the HR's size (regenerate the synthetic set)")
    padded = pad_image(np.asarray(reference, np.float64), pad)
    lo, hi = float(padded.min()), float(padded.max())
    return minmax(pad_image(np.asarray(image, np.float64), pad), name, lo, hi).astype(np.float32)


def displace_odd_rows(lr: np.ndarray, rng: np.random.Generator, p: float = 0.5, max_shift: int = 2,
                      banded: bool = False, band: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Displacement degradation of an ``(h, w)`` LR image -> ``(displaced, shifts)``.

    ``shifts`` holds the column shift applied to each odd row (``(h // 2,)``, zeros when not applied).
    """
    odd_rows = np.arange(1, lr.shape[0], 2)
    shifts = np.zeros(len(odd_rows))
    if max_shift <= 0 or rng.random() >= p:
        return lr, shifts
    choices = np.concatenate([np.arange(-max_shift, 0), np.arange(1, max_shift + 1)])
    if banded:
        band_of_row = odd_rows // max(band, 1)
        per_band = rng.choice(choices, size=int(band_of_row.max()) + 1)
        shifts = per_band[band_of_row].astype(np.float64)
    else:
        shifts[:] = rng.choice(choices)
    return shift_rows(lr, odd_rows, shifts).astype(lr.dtype), shifts
