"""Synthetic rotationally scanned PAM data in the official folder layout (our design; no real data is available).

Each sample is a Cartesian vessel network (``common.synthetic.vessel_tree``, roots near the scan centre) with a
PAM-like intensity profile (bright, blurred vessel cores whose brightness varies smoothly along the network, a dim
haemoglobin background), resampled on the rotational-scan grid (rows = angles over 180 degrees, columns = a diameter).
The odd B-scans are sampled with a known column displacement (a scanner's odd/even offset: a fixed-sign shift per scan
plus a slow drift along the scan), then Gamma speckle, additive noise and 8-bit quantisation are applied. Written
tree (``<root>`` = ``data.root``)::

    <root>/
      raw/<sample>/1_X1_X1.png          as acquired: noisy, odd rows displaced (registration input)
      mid_filter/<sample>/1_X1_X1.png   3x3 median of raw, unregistered (the official "mid_filter" set)
      clean/<sample>/1_X1_X1.png        noise-free and registered ground truth (synthetic only)
      shifts.csv                        sample, shift (fixed odd-row displacement, px), mean_shift, drift

      reg/<sample>/1_X1_X1.png          raw registered by our registration module (``pipeline.register_folder``)
      reg_mid/<sample>/1_X1_X1.png      the same + 3x3 median (as the official sets were prepared), each with its
                                        ``registration.csv``

The set is written only into a folder the generator creates (``<root>.partial``, renamed at the end, with a stamp
of its parameters; :func:`common.datasets.ensure_dataset`): a folder holding anything else is refused untouched.

Usage: ``python synth.py [--config configs/default.yaml] [--out DIR] [--n 15] [--size 488] [key=value ...]``.
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from common.config import ConfigError, load_config
from common.synthetic import as_rng, smooth_field, speckle_noise, vessel_tree
from pamsr.geometry import cartesian_to_polar
from pamsr.pipeline import ensure_synthetic
from pamsr.settings import PROJECT_DIR, Config, SynthConfig

__all__ = ["HR_NAME", "render_cartesian", "render_polar", "odd_row_shifts", "make_sample", "scan_shift",
           "write_dataset", "main"]

HR_NAME = "1_X1_X1.png"


def render_cartesian(size: int, rng: int | np.random.Generator | None = None, blur: float = 0.4,
                     min_radius: float = 0.4, capillaries: int = 12, coverage: float = 1.0) -> np.ndarray:
    """``(size, size)`` float32 Cartesian PAM image in [0, 1] (vessels on a dim background, zero outside the disc).

    A tree of vessels from near the centre (root radius ``size / 100``, tapering to ``min_radius`` px), plus
    ``capillaries`` thin short trees (radius 0.7 px) entering from the border, Gaussian blur ``blur`` px (the optical
    point spread), a smoothly varying brightness and a dim background. ``coverage < 1`` keeps vessels only in a
    smooth random region covering that fraction of the disc (soft edge), as a scan whose field of view holds
    vessel-free tissue; ``1`` = vessels everywhere (no random numbers drawn for the region)."""
    rng = as_rng(rng)
    tree = vessel_tree((size, size), rng, roots=int(rng.integers(4, 7)), depth=7, root_radius=size / 100,
                       taper=0.75, min_radius=min_radius, segment_length=0.14, root_positions="center")
    vessels = tree.intensity
    if capillaries:
        fine = vessel_tree((size, size), rng, roots=capillaries, depth=3, root_radius=0.7, taper=0.9,
                           min_radius=0.2, segment_length=0.06, root_positions="border", wobble=25.0)
        vessels = np.maximum(vessels, 0.6 * fine.intensity)
    yy, xx = np.mgrid[:size, :size]
    disc = np.hypot(yy - size / 2, xx - size / 2) <= size / 2
    if coverage < 1:
        field = smooth_field((size, size), size / 8, rng)
        region = (field >= np.quantile(field[disc], 1 - coverage)).astype(np.float32)
        vessels = vessels * cv2.GaussianBlur(region, (0, 0), size / 100)
    if blur > 0:
        vessels = cv2.GaussianBlur(vessels, (0, 0), blur)
    brightness = 0.45 + 0.55 * smooth_field((size, size), size / 12, rng)
    background = 0.06 * smooth_field((size, size), size / 25, rng)
    image = np.clip(vessels * brightness + background, 0, 1)
    return (image * disc).astype(np.float32)


def render_polar(cartesian: np.ndarray, n_angles: int, shift: float | np.ndarray = 0.0) -> np.ndarray:
    """Rotational scan of a Cartesian image; odd rows displaced by ``shift`` columns (scalar or per odd row)."""
    offsets = np.zeros(n_angles)
    offsets[1::2] = shift
    return cartesian_to_polar(cartesian, n_angles, cartesian.shape[0], offsets)


def odd_row_shifts(n_angles: int, base: float, drift: float, rng: np.random.Generator) -> np.ndarray:
    """Column displacement of every odd B-scan: a fixed ``base`` for the scan plus a slow drift (one sine period
    over the scan, amplitude ``drift`` px, random phase), as a scanner's odd/even offset behaves."""
    k = np.arange(1, n_angles, 2) / n_angles
    return base + drift * np.sin(2 * np.pi * k + rng.uniform(0, 2 * np.pi))


def make_sample(size: int, shift: float | np.ndarray, rng: np.random.Generator, noise: float = 0.005,
                speckle_looks: float = 200.0, style: SynthConfig | None = None) -> dict[str, np.ndarray]:
    """One sample: ``clean`` (registered, noise-free) and ``raw`` (displaced + speckle + noise), both uint8.
    ``style`` gives the vessel parameters (blur, minimum radius, capillaries; default :class:`SynthConfig`)."""
    style = style or SynthConfig()
    cart = render_cartesian(size, rng, style.blur, style.min_radius, style.capillaries, style.coverage)
    clean = render_polar(cart, size, 0.0)
    displaced = render_polar(cart, size, shift)
    noisy = speckle_noise(displaced, speckle_looks, rng) + rng.normal(0, noise, displaced.shape)
    to8 = lambda a: (np.clip(a, 0, 1) * 255).round().astype(np.uint8)  # noqa: E731
    return {"clean": to8(clean), "raw": to8(noisy)}


def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write {path}")


def sample_names(n: int) -> list[str]:
    """Official-style sample folder names (mouse brain and ear acquisitions)."""
    return [f"brain_{i + 1}" if i % 3 else f"ear_{i + 1}" for i in range(n)]


def scan_shift(cfg: SynthConfig, rng: np.random.Generator) -> float:
    """The fixed part of a scan's odd-row displacement: magnitude in ``[max_shift / 2, max_shift]`` (integer unless
    ``subpixel``), sign ``shift_sign`` (``0``: a random sign per scan)."""
    magnitude = rng.uniform(cfg.max_shift / 2, cfg.max_shift)
    magnitude = float(np.round(magnitude, 2)) if cfg.subpixel else float(np.round(magnitude))
    sign = cfg.shift_sign if cfg.shift_sign else float(rng.choice([-1.0, 1.0]))
    return sign * magnitude


def write_dataset(root: str | Path, cfg: SynthConfig | None = None, progress: bool = False) -> Path:
    """Write ``raw/``, ``mid_filter/``, ``clean/`` and ``shifts.csv`` under ``root`` (see module docstring).

    Low level: writes into ``root`` as it is; runs go through ``pipeline.ensure_synthetic`` instead."""
    cfg = cfg or SynthConfig()
    if cfg.size % 2:
        raise ValueError(f"synth size must be even (a diameter through the centre), got {cfg.size}")
    root = Path(root)
    rng = as_rng(cfg.seed)
    rows = []
    for name in tqdm(sample_names(cfg.n_samples), desc="synthesise", disable=not progress, leave=False):
        base = scan_shift(cfg, rng)
        shifts = odd_row_shifts(cfg.size, base, cfg.drift, rng)
        sample = make_sample(cfg.size, shifts, rng, cfg.noise, cfg.speckle_looks, cfg)
        _write_png(root / "raw" / name / HR_NAME, sample["raw"])
        _write_png(root / "mid_filter" / name / HR_NAME, cv2.medianBlur(sample["raw"], 3))
        _write_png(root / "clean" / name / HR_NAME, sample["clean"])
        rows.append({"sample": name, "shift": base, "mean_shift": round(float(shifts.mean()), 4),
                     "drift": cfg.drift})
    with (root / "shifts.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["sample", "shift", "mean_shift", "drift"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description="Write the synthetic rotational-scan PAM set in the official layout")
    parser.add_argument("--config", default="configs/default.yaml", help="config whose data.synth section is used")
    parser.add_argument("--out", default=None, help="data.root (relative: from the repo root); must be new or empty")
    parser.add_argument("--n", type=int, default=None, help="data.synth.n_samples")
    parser.add_argument("--size", type=int, default=None, help="data.synth.size (polar image side; official 1000)")
    parser.add_argument("--max-shift", type=int, default=None, help="data.synth.max_shift (odd-row displacement)")
    parser.add_argument("--subpixel", action="store_true", help="data.synth.subpixel: fractional displacements")
    parser.add_argument("--seed", type=int, default=None, help="data.synth.seed")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value")
    args = parser.parse_args(argv)
    flags = {"data.root": args.out, "data.synth.n_samples": args.n, "data.synth.size": args.size,
             "data.synth.max_shift": args.max_shift, "data.synth.seed": args.seed,
             "data.synth.subpixel": "true" if args.subpixel else None}
    overrides = [f"{k}={v}" for k, v in flags.items() if v is not None] + ["data.synthetic=true", *args.overrides]
    try:
        cfg = load_config(Config, args.config, overrides, search_dirs=[PROJECT_DIR])
    except ConfigError as exc:
        parser.error(str(exc))
    root = ensure_synthetic(cfg)
    print(f"synthetic set with {cfg.data.synth.n_samples} samples at {root}")
    return root


if __name__ == "__main__":
    main()
