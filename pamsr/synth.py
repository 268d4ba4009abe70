"""Synthetic rotationally scanned PAM data in the official folder layout (our design; no real data is available).

Each sample is a Cartesian vessel network (``common.synthetic.vessel_tree``, roots near the scan centre) with a
PAM-like intensity profile (bright, blurred vessel cores whose brightness varies smoothly along the network, a dim
haemoglobin background), resampled on the rotational-scan grid (rows = angles over 180 degrees, columns = a diameter).
The odd B-scans are sampled with a known column displacement (scanner wobble), then Gamma speckle, additive noise and
8-bit quantisation are applied. Written tree (``<root>`` = ``data.root``)::

    <root>/
      raw/<sample>/1_X1_X1.png          as acquired: noisy, odd rows displaced (registration input)
      mid_filter/<sample>/1_X1_X1.png   3x3 median of raw, unregistered (the official "mid_filter" set)
      clean/<sample>/1_X1_X1.png        noise-free and registered ground truth (synthetic only)
      shifts.csv                        sample, shift (true odd-row displacement in pixels)

      reg_mid/<sample>/1_X1_X1.png      raw registered by our registration module + 3x3 median (as real data
                                        would be, ``pipeline.register_folder``), with ``registration.csv``

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
from pamsr.settings import PROJECT_DIR, Config

__all__ = ["HR_NAME", "render_cartesian", "render_polar", "make_sample", "write_dataset", "main"]

HR_NAME = "1_X1_X1.png"


def render_cartesian(size: int, rng: int | np.random.Generator | None = None) -> np.ndarray:
    """``(size, size)`` float32 Cartesian PAM image in [0, 1] (vessels on a dim background, zero outside the disc)."""
    rng = as_rng(rng)
    tree = vessel_tree((size, size), rng, roots=int(rng.integers(4, 7)), depth=6, root_radius=size / 150,
                       taper=0.75, min_radius=0.6, segment_length=0.14, root_positions="center")
    vessels = cv2.GaussianBlur(tree.intensity, (0, 0), 1.2)
    brightness = 0.45 + 0.55 * smooth_field((size, size), size / 12, rng)
    background = 0.06 * smooth_field((size, size), size / 25, rng)
    image = np.clip(vessels * brightness + background, 0, 1)
    yy, xx = np.mgrid[:size, :size]
    disc = np.hypot(yy - size / 2, xx - size / 2) <= size / 2
    return (image * disc).astype(np.float32)


def render_polar(cartesian: np.ndarray, n_angles: int, shift: float | np.ndarray = 0.0) -> np.ndarray:
    """Rotational scan of a Cartesian image; odd rows displaced by ``shift`` columns (scalar or per odd row)."""
    offsets = np.zeros(n_angles)
    offsets[1::2] = shift
    return cartesian_to_polar(cartesian, n_angles, cartesian.shape[0], offsets)


def make_sample(size: int, shift: float | np.ndarray, rng: np.random.Generator, noise: float = 0.02,
                speckle_looks: float = 12.0) -> dict[str, np.ndarray]:
    """One sample: ``clean`` (registered, noise-free) and ``raw`` (displaced + speckle + noise), both uint8."""
    cart = render_cartesian(size, rng)
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


def write_dataset(root: str | Path, n_samples: int = 12, size: int = 488, max_shift: int = 4,
                  subpixel: bool = False, noise: float = 0.02, speckle_looks: float = 12.0, seed: int = 0,
                  progress: bool = False) -> Path:
    """Write ``raw/``, ``mid_filter/``, ``clean/`` and ``shifts.csv`` under ``root`` (see module docstring).

    Low level: writes into ``root`` as it is; runs go through ``pipeline.ensure_synthetic`` instead."""
    if size % 2:
        raise ValueError(f"synth size must be even (a diameter through the centre), got {size}")
    root = Path(root)
    rng = as_rng(seed)
    rows = []
    for name in tqdm(sample_names(n_samples), desc="synthesise", disable=not progress, leave=False):
        if subpixel:
            shift = float(np.round(rng.uniform(-max_shift, max_shift), 2))
        else:
            shift = float(rng.integers(-max_shift, max_shift + 1))
        sample = make_sample(size, shift, rng, noise, speckle_looks)
        _write_png(root / "raw" / name / HR_NAME, sample["raw"])
        _write_png(root / "mid_filter" / name / HR_NAME, cv2.medianBlur(sample["raw"], 3))
        _write_png(root / "clean" / name / HR_NAME, sample["clean"])
        rows.append({"sample": name, "shift": shift})
    with (root / "shifts.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["sample", "shift"])
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
