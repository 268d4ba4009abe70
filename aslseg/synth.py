"""A synthetic liver-tumour CT set in the LiTS (or MSD Task03_Liver) on-disk format, with the structure ASLseg
exploits (OURS).

``n_volumes`` int16 volumes (``size`` x ``size`` x 24-48 slices) from three sites that differ in liver HU (55 / 70 /
95), correlated noise (sigma 10 / 18 / 25 HU), slice spacing (2.5 / 4 / 5 mm) and pixel size (2.8 / 3.1 / 3.4 mm: a
128 px slice stands for a 512 px LiTS slice of 0.7-0.85 mm pixels, so body, liver and lesions have their real
physical size and a lesion spans as many slices as its diameter says); one volume is stored with a
flipped first axis (and a matching affine), so a reader must reorient. Each volume holds a body with fat ring and
muscle, a spine, a spleen of liver-like HU (outside the liver label) and a lobulated liver containing hypodense
vessels and sharp water cysts (both labelled liver) and 1-5 lobulated tumours of in-plane radius 2-14 px, HU offset
-90..-35 (20 % hyperdense, +30..+60) scaled so that the per-pixel contrast-to-noise ratio is 2.5-5 (defaults of
``SynthConfig``; at 0.5-3 a 1,200-iteration CPU budget did not learn the tumour class), with a 1.5-3 px
soft boundary (the label is its midpoint). Why: per-pixel evidence is ambiguous and the extent of a lesion
decides (what a box prior helps with); three labelled volumes cannot cover three sites (expanding the labelled set
can); cysts and vessels are dark like tumours and cause the false positives a refinement stage must reject.

``python synth.py --out DIR [--layout lits|msd] [--n-volumes N] [--seed S]``
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
from scipy import ndimage

from aslseg.settings import SynthConfig
from common.synthetic import as_rng, vessel_tree

__all__ = ["SITES", "synth_volume", "write_synthetic", "ensure_synthetic", "main"]

SITES = (
    {"liver_hu": 55.0, "noise": 10.0, "slice_mm": 2.5, "pixel_mm": 2.8},
    {"liver_hu": 70.0, "noise": 18.0, "slice_mm": 4.0, "pixel_mm": 3.1},
    {"liver_hu": 95.0, "noise": 25.0, "slice_mm": 5.0, "pixel_mm": 3.4},
)
FLIPPED_CASE = 1  # stored with its first axis reversed


def _ellipsoid_sd(grid: tuple[np.ndarray, ...], center: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Approximate signed distance (px) to an axis-aligned ellipsoid: (normalised radius - 1) x min radius."""
    d = np.sqrt(sum(((g - c) / r) ** 2 for g, c, r in zip(grid, center, radii)))
    return (d - 1.0) * float(np.min(radii))


def _lobulated_sd(grid, center: np.ndarray, radius: float, z_scale: float, rng: np.random.Generator,
                  lobes: int) -> np.ndarray:
    """Signed distance (px) of a union of a main sphere and ``lobes`` smaller ones on its surface."""
    radii = np.array([radius, radius, max(radius * z_scale, 0.6)])
    sd = _ellipsoid_sd(grid, center, radii)
    for _ in range(lobes):
        direction = rng.normal(size=3)
        direction[2] *= 0.3
        direction /= np.linalg.norm(direction) + 1e-9
        r = radius * rng.uniform(0.4, 0.7)
        c = center + direction * radii * rng.uniform(0.5, 0.8)
        sd = np.minimum(sd, _ellipsoid_sd(grid, c, np.array([r, r, max(r * z_scale, 0.6)])))
    return sd


def _soft(sd: np.ndarray, width: float) -> np.ndarray:
    """Smooth step: 1 inside, 0 outside, 10-90 % over ``width`` px centred on sd = 0."""
    return 1.0 / (1.0 + np.exp(np.clip(sd * 4.4 / width, -50, 50)))


def _anatomy(grid, shape, site: dict, rng: np.random.Generator):
    """Body, spine, spleen and liver signed distances + HU volume without lesions."""
    x, y, z = grid
    size, n_z = shape[0], shape[2]
    hu = np.full(shape, -1000.0)
    body = _ellipsoid_sd((x, y), np.array([size * 0.5, size * 0.52]), np.array([size * 0.44, size * 0.36]))
    hu[body <= 0] = -100.0                                        # subcutaneous fat
    hu[body <= -4] = 45.0                                         # muscle / soft tissue
    spine = _ellipsoid_sd((x, y), np.array([size * 0.5, size * 0.78]), np.array([size * 0.07, size * 0.07]))
    hu[spine <= 0] = 450.0
    z_mid, z_half = n_z * rng.uniform(0.45, 0.55), n_z * rng.uniform(0.33, 0.4)
    liver_c = np.array([size * rng.uniform(0.3, 0.36), size * rng.uniform(0.45, 0.52), z_mid])
    liver_r = np.array([size * rng.uniform(0.19, 0.24), size * rng.uniform(0.17, 0.21), z_half])
    bumps = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=(size / 10, size / 10, n_z / 6))
    bumps *= 6.0 / (bumps.std() + 1e-9)
    liver = _ellipsoid_sd(grid, liver_c, liver_r) + bumps
    liver = np.maximum(liver, body + 6)                           # stays inside the body
    spleen_c = np.array([size * 0.72, size * 0.6, z_mid + rng.uniform(-2, 2)])
    spleen = _ellipsoid_sd(grid, spleen_c, np.array([size * 0.08, size * 0.12, z_half * 0.6]))
    hu[spleen <= 0] = site["liver_hu"] + rng.uniform(-6, 6)
    hu[liver <= 0] = site["liver_hu"]
    return hu, liver


def _vessels_and_cysts(hu, grid, liver, shape, site, rng):
    """Hypodense vessel tree (constant along z with a slow drift) and sharp water cysts, inside the liver."""
    tree = vessel_tree(shape[:2], rng, roots=2, depth=4, root_radius=2.2, min_radius=0.8, root_positions="center")
    soft = ndimage.gaussian_filter(tree.intensity, 0.6)
    inside = liver <= -2
    for k in range(shape[2]):
        shifted = ndimage.shift(soft, (0.4 * np.sin(k / 5), 0.3 * k), order=1, mode="constant")
        hu[..., k] -= 30.0 * shifted * inside[..., k]
    cysts = np.full(shape, np.inf)
    for _ in range(int(rng.integers(0, 4))):
        c = _random_point(liver, -8, rng)
        if c is not None:
            r = rng.uniform(2.0, 5.0)
            cysts = np.minimum(cysts, _ellipsoid_sd(grid, c, np.array([r, r, max(r * 0.8 / site["slice_mm"], 0.7)])))
    cyst = (cysts <= 0) & inside
    hu[cyst] = rng.uniform(0, 10)
    return hu


def _random_point(sd: np.ndarray, depth: float, rng: np.random.Generator) -> np.ndarray | None:
    candidates = np.argwhere(sd <= depth)
    if len(candidates) == 0:
        return None
    return candidates[int(rng.integers(len(candidates)))].astype(np.float64)


def _tumours(hu, grid, liver, site, rng, cfg: SynthConfig) -> np.ndarray:
    """1-5 lobulated tumours with soft edges; returns the tumour label mask (sd <= 0, inside the liver)."""
    label = np.zeros(hu.shape, bool)
    z_scale = site["pixel_mm"] / site["slice_mm"]
    for _ in range(int(rng.integers(1, 6))):
        radius = float(np.exp(rng.uniform(*np.log(cfg.tumour_radius))))
        c = _random_point(liver, -max(radius * 0.5, 2.0), rng)
        if c is None:
            continue
        sd = _lobulated_sd(grid, c, radius, z_scale, rng, int(rng.integers(0, 4)))
        cnr = rng.uniform(*cfg.tumour_cnr)
        if rng.random() < 0.2:
            delta = float(np.clip(cnr * site["noise"], *cfg.hyper_hu))
        else:
            delta = -float(np.clip(cnr * site["noise"], *cfg.hypo_hu))
        weight = _soft(sd, rng.uniform(1.5, 3.0)) * (liver <= 0)
        hu += delta * weight
        label |= (sd <= 0) & (liver <= 0)
    return label


def synth_volume(index: int, cfg: SynthConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Volume ``index``: int16 HU ``(X, Y, Z)``, uint8 labels (0/1/2) and the RAS affine (before any flip)."""
    rng = as_rng(np.random.default_rng([cfg.seed, index]))
    site = SITES[index % len(SITES)]
    n_z = int(rng.integers(cfg.min_slices, cfg.max_slices + 1))
    shape = (cfg.size, cfg.size, n_z)
    grid = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij")
    hu, liver = _anatomy(grid, shape, site, rng)
    hu = _vessels_and_cysts(hu, grid, liver, shape, site, rng)
    tumour = _tumours(hu, grid, liver, site, rng, cfg)
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=(1.0, 1.0, 0.0))
    hu = hu + noise * (site["noise"] / (noise.std() + 1e-9))
    labels = np.zeros(shape, np.uint8)
    labels[liver <= 0] = 1
    labels[tumour] = 2
    affine = np.diag([site["pixel_mm"], site["pixel_mm"], site["slice_mm"], 1.0])
    return np.clip(np.round(hu), -1024, 3071).astype(np.int16), labels, affine


def _save(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(array, affine)
    img.header.set_data_dtype(array.dtype)
    nib.save(img, str(path))


def _flip_first_axis(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same physical image stored with the first voxel axis reversed (affine adjusted accordingly)."""
    flipped = affine.copy()
    flipped[:3, 0] = -affine[:3, 0]
    flipped[:3, 3] = affine[:3, 3] + affine[:3, 0] * (array.shape[0] - 1)
    return array[::-1].copy(), flipped


def write_synthetic(folder: str | Path, cfg: SynthConfig) -> Path:
    """Write ``cfg.n_volumes`` cases into ``folder`` in the ``cfg.layout`` format; returns the dataset root."""
    folder = Path(folder)
    cases = []
    for i in range(cfg.n_volumes):
        image, labels, affine = synth_volume(i, cfg)
        if i == FLIPPED_CASE:
            image, affine_img = _flip_first_axis(image, affine)
            labels, _ = _flip_first_axis(labels, affine)
            affine = affine_img
        cases.append((i, image, labels, affine))
    if cfg.layout == "lits":
        for i, image, labels, affine in cases:
            batch = folder / ("Training Batch 1" if i < 28 else "Training Batch 2")
            batch.mkdir(parents=True, exist_ok=True)
            _save(image, affine, batch / f"volume-{i}.nii")
            _save(labels, affine, batch / f"segmentation-{i}.nii")
        return folder
    task = folder / "Task03_Liver"
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (task / sub).mkdir(parents=True, exist_ok=True)
    training = []
    for i, image, labels, affine in cases:
        _save(image, affine, task / "imagesTr" / f"liver_{i}.nii.gz")
        _save(labels, affine, task / "labelsTr" / f"liver_{i}.nii.gz")
        training.append({"image": f"./imagesTr/liver_{i}.nii.gz", "label": f"./labelsTr/liver_{i}.nii.gz"})
    (task / "imagesTr" / "._liver_0.nii.gz").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS junk, as shipped
    meta = {"name": "Liver", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "liver", "2": "cancer"},
            "numTraining": len(training), "numTest": 0, "training": training, "test": []}
    (task / "dataset.json").write_text(json.dumps(meta, indent=2))
    return folder


def ensure_synthetic(root: str | Path, cfg: SynthConfig) -> Path:
    """The synthetic set at ``root`` (written on first use through ``common.datasets.ensure_dataset``: never into
    a folder it did not create, never regenerated with other parameters)."""
    from common.datasets import ensure_dataset
    from common.rundir import resolve_path

    params = {"generator": "aslseg.synth", "version": 3, **asdict(cfg)}
    return ensure_dataset(resolve_path(root), params, lambda folder: write_synthetic(folder, cfg),
                          what="synthetic liver-tumour CT set")


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description="Write the synthetic LiTS/MSD-format liver-tumour CT set")
    parser.add_argument("--out", required=True, help="new or empty folder (never a real dataset)")
    parser.add_argument("--layout", choices=["lits", "msd"], default="lits")
    parser.add_argument("--n-volumes", type=int, default=SynthConfig.n_volumes)
    parser.add_argument("--size", type=int, default=SynthConfig.size)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    cfg = SynthConfig(n_volumes=args.n_volumes, size=args.size, seed=args.seed, layout=args.layout)
    root = ensure_synthetic(args.out, cfg)
    print(f"[aslseg] synthetic {cfg.layout} set: {cfg.n_volumes} volumes in {root}")
    return root


if __name__ == "__main__":
    main()
