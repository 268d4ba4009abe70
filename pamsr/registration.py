"""Odd/even-row registration (paper: "a registration module across odd and even rows in the preprocessing";
the official code has none, so this is our design).

Convention: a displacement ``d`` of the odd rows means ``odd_observed[:, c] = odd_true[:, c - d]`` (content moved by
``+d`` columns). :func:`estimate_shift` returns ``d``; :func:`apply_registration` undoes it.

1. ``O = P[1::2]``; the reference ``E`` is the mean of the two even rows around each odd row (same angle to
   first order, so anatomy that crosses the rays obliquely does not bias the estimate).
2. Integer search: ``d* = argmax_{|d| <= K} NCC(E, roll(O, -d))`` over the columns ``[K, W - K)``.
3. Optional sub-pixel refinement: maximise the NCC over a continuous shift in ``[d* - 1, d* + 1]`` (bounded scalar
   search), shifting ``O`` exactly with a Fourier phase ramp along the columns.
4. Banded mode: one estimate per band of ``band`` rows, median-filtered over bands (size 3) and linearly
   interpolated to every odd row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, optimize

__all__ = ["RegistrationResult", "ncc", "fourier_shift_columns", "estimate_shift", "estimate_row_shifts",
           "shift_rows", "apply_registration", "register"]


@dataclass
class RegistrationResult:
    """Estimated odd-row shifts: ``shift`` (global, or median of bands), ``row_shifts`` per odd row, best ``score``."""

    shift: float
    row_shifts: np.ndarray
    score: float


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised cross-correlation of two equally shaped arrays (0 when either is constant)."""
    a = np.asarray(a, np.float64) - np.mean(a)
    b = np.asarray(b, np.float64) - np.mean(b)
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else 0.0


def fourier_shift_columns(rows: np.ndarray, shift: float) -> np.ndarray:
    """Shift ``(R, W)`` rows by ``shift`` columns (content moves right for ``shift > 0``), periodic, sub-pixel exact."""
    w = rows.shape[-1]
    freq = np.fft.rfftfreq(w)
    spectrum = np.fft.rfft(rows, axis=-1) * np.exp(-2j * np.pi * freq * shift)
    return np.fft.irfft(spectrum, n=w, axis=-1)


def _split(polar: np.ndarray, presmooth: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Even reference rows interpolated to the odd rows' angles, and the odd rows: ``(n, W)`` each.

    Odd row ``2k+1`` lies between even rows ``2k`` and ``2k+2``; their mean removes the first-order change of the
    anatomy between adjacent angles (otherwise vessels crossing the rays obliquely bias the sub-pixel estimate by
    a few tenths of a pixel). The last odd row has one even neighbour only and is compared with it.
    """
    polar = np.asarray(polar, np.float64)
    if polar.ndim != 2 or polar.shape[0] < 2:
        raise ValueError(f"registration needs a 2D polar image with >= 2 rows, got shape {polar.shape}")
    if presmooth > 0:  # along the columns only: rows must stay independent
        polar = ndimage.gaussian_filter1d(polar, presmooth, axis=1)
    even, odd = polar[0::2], polar[1::2]
    ref = even[: len(odd)].copy()
    both = min(len(odd), len(even) - 1)
    ref[:both] = 0.5 * (even[:both] + even[1 : both + 1])
    return ref, odd


def _estimate_pair(even: np.ndarray, odd: np.ndarray, max_shift: int, subpixel: bool) -> tuple[float, float]:
    w = even.shape[1]
    if w <= 2 * max_shift + 1:
        raise ValueError(f"image width {w} is too small for registration.max_shift={max_shift}")
    sl = slice(max_shift, w - max_shift)
    shifts = np.arange(-max_shift, max_shift + 1)
    scores = np.array([ncc(even[:, sl], np.roll(odd, -d, axis=1)[:, sl]) for d in shifts])
    best = int(shifts[int(np.argmax(scores))])
    score = float(scores.max())
    if not subpixel:
        return float(best), score

    def cost(d: float) -> float:
        return -ncc(even[:, sl], fourier_shift_columns(odd, -d)[:, sl])

    res = optimize.minimize_scalar(cost, bounds=(best - 1.0, best + 1.0), method="bounded",
                                   options={"xatol": 1e-3})
    if -res.fun >= score:
        return float(res.x), float(-res.fun)
    return float(best), score


def estimate_shift(polar: np.ndarray, max_shift: int = 8, subpixel: bool = False, presmooth: float = 1.0
                   ) -> tuple[float, float]:
    """Global odd-row column shift of an ``(N, W)`` polar image -> ``(shift, ncc)``.

    ``presmooth``: sigma (px) of a Gaussian along the columns applied before matching (noise robustness; 0 = off).
    Never median-filter across rows before registration: a 2D filter mixes odd and even rows.
    """
    even, odd = _split(polar, presmooth)
    return _estimate_pair(even, odd, max_shift, subpixel)


def estimate_row_shifts(polar: np.ndarray, max_shift: int = 8, mode: str = "global", band: int = 64,
                        subpixel: bool = False, presmooth: float = 1.0) -> RegistrationResult:
    """Shift of every odd row (``(N // 2,)``), globally or per band of ``band`` polar rows."""
    even, odd = _split(polar, presmooth)
    n = len(odd)
    if mode == "global":
        shift, score = _estimate_pair(even, odd, max_shift, subpixel)
        return RegistrationResult(shift, np.full(n, shift), score)
    if mode != "banded":
        raise ValueError(f"registration.mode must be global or banded, got {mode!r}")
    pairs = max(band // 2, 1)
    starts = list(range(0, n, pairs))
    estimates, scores, centres = [], [], []
    for s in starts:
        e, o = even[s:s + pairs], odd[s:s + pairs]
        if len(e) < max(pairs // 2, 1) and estimates:  # a short last band joins the previous estimate
            continue
        d, sc = _estimate_pair(e, o, max_shift, subpixel)
        estimates.append(d)
        scores.append(sc)
        centres.append(s + (len(e) - 1) / 2.0)
    estimates_arr = np.asarray(estimates)
    if len(estimates_arr) >= 3:
        estimates_arr = ndimage.median_filter(estimates_arr, size=3, mode="nearest")
    row_shifts = np.interp(np.arange(n), centres, estimates_arr)
    return RegistrationResult(float(np.median(estimates_arr)), row_shifts, float(np.mean(scores)))


def shift_rows(image: np.ndarray, row_indices: np.ndarray, shifts: np.ndarray | float, order: int = 1
               ) -> np.ndarray:
    """Move the content of the given rows by ``shifts`` columns (positive = right), zero fill; returns a copy.

    Integer shifts are exact; fractional ones use spline interpolation of ``order`` (1 = linear).
    """
    out = np.array(image, dtype=np.float64, copy=True)
    shifts = np.broadcast_to(np.asarray(shifts, np.float64), (len(row_indices),))
    w = out.shape[1]
    cols = np.arange(w, dtype=np.float64)
    for r, d in zip(row_indices, shifts):
        if d == 0:
            continue
        if float(d).is_integer():
            d = int(d)
            row = np.zeros(w)
            if d > 0:
                row[d:] = out[r, : w - d]
            else:
                row[: w + d] = out[r, -d:]
            out[r] = row
        else:
            out[r] = ndimage.map_coordinates(out[r][None], [np.zeros(w), cols - d], order=order, mode="constant",
                                             cval=0.0)
    return out


def apply_registration(polar: np.ndarray, result: RegistrationResult) -> np.ndarray:
    """Undo the estimated displacement: odd row ``k`` is moved by ``-row_shifts[k]`` columns (zero fill)."""
    odd_rows = np.arange(1, polar.shape[0], 2)[: len(result.row_shifts)]
    return shift_rows(polar, odd_rows, -result.row_shifts)


def register(polar: np.ndarray, max_shift: int = 8, mode: str = "global", band: int = 64, subpixel: bool = False,
             presmooth: float = 1.0) -> tuple[np.ndarray, RegistrationResult]:
    """Estimate and remove the odd-row displacement of an ``(N, W)`` polar image -> ``(registered, result)``."""
    result = estimate_row_shifts(polar, max_shift, mode, band, subpixel, presmooth)
    return apply_registration(polar, result), result
