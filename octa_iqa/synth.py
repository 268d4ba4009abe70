"""Synthetic sOCTA-3x3-10k stand-in (our design): 3x3 mm superficial-plexus en-face images in the
published layout ``<root>/{train,test}/{0,1,2}/<image>.png`` (0 = ungradable, 1 = gradable, 2 = outstanding).

An outstanding image is a capillary mesh (zero crossings of band-pass noise), a few larger vessels (a seeded
branching tree), a dark foveal avascular zone (FAZ) near the centre, grainy speckle and a mild optical blur.
Gradable and ungradable images are the same kind of image with graded artefacts seen in real OCTA:

- ``motion``: bright horizontal decorrelation lines and a horizontally displaced row block (saccades);
- ``blur``: defocus;
- ``low_signal``: lower gain and more noise;
- ``shadow``: a dark ellipse (media opacity / floaters / vignetting);
- ``projection``: a displaced, blurred ghost of the large vessels.

Severity ``t`` in [0, 1] maps to each kind's physical strength through ``KIND_GAIN``, calibrated so that equal
severity means equal anomaly magnitude (standardised distance of global image statistics from outstanding
images, :mod:`octa_iqa.handcrafted`). A gradable image carries one artefact (default ``t`` in 0.6-0.95) inside a
local region (an ellipse with axes of 45-75 % of the side); an ungradable image carries one severe artefact over
the whole image (``t`` in 0.75-1.0) or two to three co-occurring moderate ones (``t`` in 0.45-0.7): the quality
grade is a matter of extent and co-occurrence, not only of one artefact's strength. ``meta.csv`` at the root
records the severity and kinds of every image (not part of the real format; the readers ignore it).

    python synth.py [--root DIR] [--size 128] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

from common.config import to_dict
from common.datasets import ensure_dataset
from common.rundir import resolve_path
from common.synthetic import as_rng, ellipse_mask, vessel_tree
from octa_iqa.settings import SynthConfig

__all__ = ["ARTEFACTS", "render_outstanding", "apply_artefact", "degrade", "make_image", "write_dataset", "main"]

ARTEFACTS = ("motion", "blur", "low_signal", "shadow", "projection")
_MAX_LINES = 10
# severity -> physical strength, calibrated (tests/test_data.py re-measures it) so that the anomaly magnitude
# averaged over severities 0.25-1 is the same (3.0 standardised units) for every kind at 128 px
KIND_GAIN = {"motion": 0.785, "blur": 0.377, "low_signal": 1.011, "shadow": 1.913, "projection": 1.537}


def render_outstanding(size: int, rng: int | np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """One artefact-free en-face image. Returns ``image`` (S, S) float32 in [0, 1], ``faz`` (S, S) bool and
    ``vessels`` (S, S) float32 (large-vessel intensity, reused by the projection artefact)."""
    rng = as_rng(rng)
    s = size
    noise = rng.standard_normal((s, s))
    dog = ndimage.gaussian_filter(noise, 1.0) - ndimage.gaussian_filter(noise, 2.5)
    dog /= dog.std() + 1e-12
    mesh = np.exp(-((dog / 0.25) ** 2)).astype(np.float32)  # soft zero crossings: a connected capillary net
    tree = vessel_tree((s, s), rng, roots=int(rng.integers(2, 4)), depth=4, root_radius=max(0.8, s / 128),
                       min_radius=0.4, segment_length=0.14)
    vessels = tree.intensity
    center = (s / 2 + rng.normal(0, s / 40), s / 2 + rng.normal(0, s / 40))
    radius = rng.uniform(0.08, 0.11) * s
    faz = ellipse_mask((s, s), center, (radius * rng.uniform(0.85, 1.0), radius), rng.uniform(0, 180))
    keep = ndimage.gaussian_filter((~faz).astype(np.float32), 1.0)
    vessel_keep = ndimage.gaussian_filter((~ndimage.binary_dilation(faz, iterations=2)).astype(np.float32), 1.0)
    brightness = rng.uniform(0.95, 1.05)
    image = brightness * np.maximum(0.55 * mesh * keep, 0.9 * vessels * vessel_keep)
    image = image * rng.gamma(8.0, 1 / 8.0, size=(s, s))  # speckle of the decorrelation signal
    image = ndimage.gaussian_filter(image, 0.6) + rng.normal(0, rng.uniform(0.005, 0.015), (s, s))
    return {"image": np.clip(image, 0, 1).astype(np.float32), "faz": faz, "vessels": vessels.astype(np.float32)}


def apply_artefact(image: np.ndarray, kind: str, severity: float, rng: int | np.random.Generator | None = None,
                   vessels: np.ndarray | None = None) -> np.ndarray:
    """Apply one artefact at ``severity`` in [0, 1] to an (S, S) float image; severity 0 returns the image.

    The physical strength is ``u = KIND_GAIN[kind] * severity``: the gains are calibrated so that one severity gives
    about the same anomaly magnitude (:func:`octa_iqa.handcrafted.anomaly_magnitude`) for every kind. Random
    placements are drawn in a fixed order whatever the severity, so for the same ``rng`` seed a higher severity is
    the same artefact, only stronger (the severity sweeps of the tests rely on it)."""
    rng = as_rng(rng)
    if kind not in ARTEFACTS:
        raise ValueError(f"unknown artefact {kind!r}; choose from {ARTEFACTS}")
    u = KIND_GAIN[kind] * float(np.clip(severity, 0.0, 1.0))
    img = image.astype(np.float32).copy()
    s = img.shape[0]
    if kind == "motion":
        rows = rng.integers(0, s - 2, size=_MAX_LINES)
        levels = rng.uniform(0.6, 1.0, size=_MAX_LINES)
        shift_row = int(rng.integers(s // 5, 4 * s // 5))
        direction = int(rng.choice([-1, 1]))
        n_lines = min(_MAX_LINES, int(np.ceil(4 * u - 1e-9)))
        for r, level in zip(rows[:n_lines], levels):
            img[r : r + 2] = np.maximum(img[r : r + 2], level * min(1.0, u))
        shift = int(round(direction * u * 0.04 * s))
        if shift:
            img[shift_row:] = np.roll(img[shift_row:], shift, axis=1)
        return img
    if kind == "blur":
        return ndimage.gaussian_filter(img, 2.2 * u) if u > 0.02 else img
    if kind == "low_signal":
        noise = rng.standard_normal(img.shape).astype(np.float32)
        return np.clip(img * max(0.05, 1.0 - 0.6 * u) + noise * 0.08 * u, 0, 1)
    if kind == "shadow":
        center = (rng.uniform(0.2, 0.8) * s, rng.uniform(0.2, 0.8) * s)
        axes = tuple(rng.uniform(0.18, 0.35, size=2) * s * (0.6 + 0.4 * min(u, 2.0)))
        angle = rng.uniform(0, 180)
        mask = ndimage.gaussian_filter(ellipse_mask((s, s), center, axes, angle).astype(np.float32), s / 20)
        return img * (1.0 - min(0.95, 0.85 * u) * mask)
    # projection: a displaced, blurred copy of the large vessels
    ghost = vessels if vessels is not None else (img > 0.7).astype(np.float32)
    dy, dx = rng.integers(-s // 12, s // 12 + 1, size=2)
    ghost = ndimage.gaussian_filter(np.roll(ghost, (int(dy), int(dx)), axis=(0, 1)), 1.5)
    return np.clip(img + 0.6 * u * ghost / (ghost.max() + 1e-6), 0, 1)


def degrade(image: np.ndarray, severity: float, kinds: Sequence[str], rng: int | np.random.Generator | None = None,
            vessels: np.ndarray | None = None) -> np.ndarray:
    """Apply several artefacts over the whole image, each at ``severity`` times a jitter in [0.9, 1.1]."""
    rng = as_rng(rng)
    img = image
    for kind in kinds:
        img = apply_artefact(img, kind, float(np.clip(severity * rng.uniform(0.9, 1.1), 0, 1)), rng, vessels)
    return np.clip(img, 0, 1).astype(np.float32)


def local_region(size: int, extent: float, rng: np.random.Generator) -> np.ndarray:
    """Soft (S, S) mask in [0, 1] of one ellipse whose axes are about ``extent * S`` / 2, placed at random."""
    center = tuple(rng.uniform(0.25, 0.75, size=2) * size)
    axes = tuple(rng.uniform(0.8, 1.2, size=2) * extent * size / 2)
    mask = ellipse_mask((size, size), center, axes, rng.uniform(0, 180)).astype(np.float32)
    return ndimage.gaussian_filter(mask, size / 40)


def make_image(label: int, cfg: SynthConfig, rng: np.random.Generator) -> tuple[np.ndarray, float, list[str]]:
    """One image of class ``label`` (0, 1, 2) -> (uint8 (S, S) image, severity, artefact kinds).

    gradable: one mild artefact confined to a local region; ungradable: one severe artefact over the whole image
    (probability ``1 - ungradable_multi_fraction``) or 2-3 co-occurring moderate ones over the whole image."""
    base = render_outstanding(cfg.size, rng)
    if label == 2:
        return (base["image"] * 255).round().astype(np.uint8), 0.0, []
    if label == 1:
        severity = float(rng.uniform(*cfg.gradable_severity))
        kind = str(rng.choice(ARTEFACTS))
        region = local_region(cfg.size, float(rng.uniform(*cfg.local_extent)), rng)
        hit = degrade(base["image"], severity, [kind], rng, base["vessels"])
        img = region * hit + (1 - region) * base["image"]
        return (np.clip(img, 0, 1) * 255).round().astype(np.uint8), severity, [kind]
    multi = bool(rng.random() < cfg.ungradable_multi_fraction)
    severity = float(rng.uniform(*(cfg.combined_severity if multi else cfg.ungradable_severity)))
    n_kinds = int(rng.integers(2, 4)) if multi else 1
    kinds = [str(k) for k in rng.choice(ARTEFACTS, size=n_kinds, replace=False)]
    img = degrade(base["image"], severity, kinds, rng, base["vessels"])
    return (img * 255).round().astype(np.uint8), severity, kinds


def write_dataset(root: str | Path, cfg: SynthConfig) -> Path:
    """Write ``<root>/{train,test}/{0,1,2}/<split>_<label>_<index>.png`` and ``<root>/meta.csv``."""
    root = Path(root)
    rng = np.random.default_rng(cfg.seed)
    rows = []
    for split, counts in (("train", cfg.train_counts), ("test", cfg.test_counts)):
        for label, count in enumerate(counts):
            folder = root / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            for index in tqdm(range(count), desc=f"synth {split}/{label}", leave=False, disable=count < 50):
                img, severity, kinds = make_image(label, cfg, rng)
                name = f"{split}_{label}_{index:05d}.png"
                Image.fromarray(img, mode="L").save(folder / name)
                rows.append({"split": split, "label": label, "path": f"{split}/{label}/{name}",
                             "severity": f"{severity:.4f}", "artefacts": ";".join(kinds)})
    with (root / "meta.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["split", "label", "path", "severity", "artefacts"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def synth_params(cfg: SynthConfig) -> dict:
    """What determines the synthetic set's content (stored in its stamp)."""
    return {"generator": "octa_iqa.synth/2", **to_dict(cfg)}


def generate_dataset(root: str | Path, cfg: SynthConfig) -> Path:
    """The synthetic set at ``root``, generated on first use through ``common.datasets.ensure_dataset`` (only into a
    folder this generator creates; a foreign folder or one generated with other parameters is refused)."""
    return ensure_dataset(Path(root), synth_params(cfg), lambda folder: write_dataset(folder, cfg),
                          what="synthetic OCTA quality set")


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description="Write a synthetic sOCTA-3x3-10k-style quality dataset")
    parser.add_argument("--root", default="data/synthetic/octa_iqa_v2")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-counts", type=int, nargs=3, default=[80, 80, 240], metavar=("N0", "N1", "N2"))
    parser.add_argument("--test-counts", type=int, nargs=3, default=[60, 60, 60], metavar=("N0", "N1", "N2"))
    args = parser.parse_args(argv)
    cfg = SynthConfig(size=args.size, seed=args.seed, train_counts=args.train_counts, test_counts=args.test_counts)
    root = generate_dataset(resolve_path(args.root), cfg)
    print(f"wrote {root}")
    return root


if __name__ == "__main__":
    main()
