"""Synthetic multi-site stand-in in the released layouts (h5, and optionally the PNG release).

``python synth.py --out DIR [--kind faz|odoc|polyp] [--size 64] [--png]``

What it carries is the structure FedLPPA exploits (paper Sec. I): five sites with fixed, different acquisition
styles AND the paper's five weak-label types, of unequal sizes (24/16/20/40/8 training images, 12 test images).
Sites b and d share a style, so prompt similarity has a pair to find.

- ``faz``: OCTA-like; a bright capillary texture and branching vessels around the dark foveal avascular zone (an
  irregular ellipse, label 1) that contains neither;
- ``odoc``: fundus-like RGB; bright optic disc (rim = 2) with a brighter cup (1), vessels, reddish background;
- ``polyp``: endoscopy-like RGB; an irregular raised blob (1) on folded mucosa texture.

Style knobs per site (``STYLES``): gamma, vessel/capillary contrast and density, Gaussian or speckle noise, blur,
down-up resolution, vignetting, brightness.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage

from common.datasets import ensure_dataset
from common.synthetic import ellipse_mask, gaussian_noise, smooth_field, speckle_noise, vessel_tree
from fedlppa.data import PNG_DIRS, PNG_MAPS
from fedlppa.settings import SynthConfig
from fedlppa.weak_labels import all_weak_labels

__all__ = ["STYLES", "WIDE_STYLES", "MODERATE_STYLES", "STYLE_SETS", "render_case", "write_dataset", "ensure_synthetic",
           "main"]

# one row per site (a..e); b and d share a style
STYLES = [
    dict(gamma=1.0, contrast=1.0, density=1.0, noise="gauss", sigma=0.04, blur=0.0, down=1, vignette=0.0, bright=0.0),
    dict(gamma=0.6, contrast=0.9, density=0.6, noise="speckle", sigma=10.0, blur=0.8, down=1, vignette=0.3,
         bright=0.15),
    dict(gamma=1.7, contrast=1.3, density=1.4, noise="gauss", sigma=0.12, blur=0.0, down=2, vignette=0.6,
         bright=-0.1),
    dict(gamma=0.6, contrast=0.9, density=0.6, noise="speckle", sigma=10.0, blur=0.8, down=1, vignette=0.3,
         bright=0.15),
    dict(gamma=1.3, contrast=0.7, density=1.8, noise="speckle", sigma=6.0, blur=1.2, down=2, vignette=0.0,
         bright=0.05),
]

# ``styles: wide``: larger acquisition gaps between the sites (ours): a unchanged; b and d (still one shared style)
# with inverted contrast (the avascular zone brighter than its surround), speckle, blur and vignetting; c with
# strong Gaussian noise, 2x down-up resolution and vignetting; e with strong speckle, blur, 2x down-up resolution
# and dense, faint capillaries.
WIDE_STYLES = [
    STYLES[0],
    dict(gamma=0.6, contrast=0.8, density=0.6, noise="speckle", sigma=8.0, blur=0.6, down=1, vignette=0.4,
         bright=0.2, invert=True),
    dict(gamma=2.0, contrast=1.5, density=1.6, noise="gauss", sigma=0.18, blur=0.0, down=2, vignette=0.7,
         bright=-0.15),
    dict(gamma=0.6, contrast=0.8, density=0.6, noise="speckle", sigma=8.0, blur=0.6, down=1, vignette=0.4,
         bright=0.2, invert=True),
    dict(gamma=1.4, contrast=0.6, density=2.0, noise="speckle", sigma=5.0, blur=1.0, down=2, vignette=0.0,
         bright=0.05),
]

# ``styles: moderate``: the wide table's acquisition gaps without the contrast inversion (ours): a unchanged; b and d
# (one shared style) low-contrast, bright, speckled, blurred and vignetted, the avascular zone still darker than its
# surround; c and e as in the wide table.
MODERATE_STYLES = [
    STYLES[0],
    dict(gamma=0.6, contrast=0.8, density=0.6, noise="speckle", sigma=8.0, blur=0.6, down=1, vignette=0.4,
         bright=0.2),
    WIDE_STYLES[2],
    dict(gamma=0.6, contrast=0.8, density=0.6, noise="speckle", sigma=8.0, blur=0.6, down=1, vignette=0.4,
         bright=0.2),
    WIDE_STYLES[4],
]
STYLE_SETS = {"default": STYLES, "wide": WIDE_STYLES, "moderate": MODERATE_STYLES}


def _irregular_ellipse(size: int, rng: np.random.Generator, radius: tuple[float, float]) -> np.ndarray:
    center = (size / 2 + rng.normal(0, size * 0.06), size / 2 + rng.normal(0, size * 0.06))
    axes = tuple(rng.uniform(*radius, size=2) * size)
    base = ellipse_mask((size, size), center, axes, rng.uniform(0, 180))
    wobble = smooth_field((size, size), size / 12, rng) - 0.5
    dist = ndimage.distance_transform_edt(base) - ndimage.distance_transform_edt(~base)
    return dist + wobble * 0.35 * min(axes) > 0


def _apply_style(image: np.ndarray, style: dict, rng: np.random.Generator) -> np.ndarray:
    size = image.shape[-1]
    img = np.clip(image, 0, 1) ** style["gamma"]
    if style["blur"] > 0:
        img = ndimage.gaussian_filter(img, sigma=(0,) * (img.ndim - 2) + (style["blur"],) * 2)
    if style["down"] > 1:
        small = size // style["down"]
        planes = [cv2.resize(cv2.resize(p, (small, small), interpolation=cv2.INTER_AREA), (size, size),
                             interpolation=cv2.INTER_LINEAR) for p in img.reshape(-1, size, size)]
        img = np.stack(planes).reshape(img.shape)
    if style["noise"] == "gauss":
        img = gaussian_noise(img, style["sigma"], rng)
    else:
        img = speckle_noise(np.clip(img, 0, None) + 0.05, style["sigma"], rng)
    if style["vignette"] > 0:
        rr, cc = np.mgrid[:size, :size] / (size - 1) - 0.5
        img = img * (1 - style["vignette"] * (rr**2 + cc**2) * 2)
    img = img + style["bright"]
    if style.get("invert", False):
        img = -img
    lo, hi = np.percentile(img, 0.5), np.percentile(img, 99.5)
    return np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)


def _faz(size: int, style: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    faz = _irregular_ellipse(size, rng, (0.13, 0.2))
    capillary = smooth_field((size, size), 0.6 * size / 64, rng)
    capillary = (capillary > 0.55 - 0.08 * style["density"]).astype(np.float32) * 0.5
    tree = vessel_tree((size, size), rng, roots=3, depth=5, root_radius=max(1.0, size / 48),
                       root_positions="border")
    soft_hole = ndimage.gaussian_filter((~faz).astype(np.float32), 0.8)
    image = (0.15 + style["contrast"] * (0.35 * capillary + 0.6 * tree.intensity)) * soft_hole + 0.1 * (1 - soft_hole)
    image = image + 0.08 * smooth_field((size, size), size / 6, rng)
    return _apply_style(image, style, rng)[None], faz.astype(np.uint8)


def _odoc(size: int, style: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    disc = _irregular_ellipse(size, rng, (0.18, 0.24))
    depth = ndimage.distance_transform_edt(disc)
    cup = disc & (depth > depth.max() * rng.uniform(0.35, 0.55))
    tree = vessel_tree((size, size), rng, roots=2, depth=4, root_radius=max(1.0, size / 64), root_positions="center")
    field = smooth_field((size, size), size / 8, rng)
    red = 0.55 + 0.2 * field + 0.35 * disc + 0.1 * cup
    green = 0.25 + 0.1 * field + 0.45 * disc * style["contrast"] + 0.25 * cup
    blue = 0.1 + 0.05 * field + 0.3 * disc * style["contrast"] + 0.3 * cup
    image = np.stack([red, green, blue]) * (1 - 0.5 * tree.intensity)
    mask = np.zeros((size, size), np.uint8)
    mask[disc] = 2
    mask[cup] = 1
    return _apply_style(image / image.max(), style, rng), mask


def _polyp(size: int, style: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    polyp = _irregular_ellipse(size, rng, (0.12, 0.22))
    folds = np.sin(smooth_field((size, size), size / 10, rng) * 12 * style["density"])
    shade = ndimage.gaussian_filter(polyp.astype(np.float32), size / 40)
    base = 0.45 + 0.12 * folds + 0.3 * style["contrast"] * shade
    image = np.stack([base + 0.25, 0.6 * base, 0.5 * base + 0.05 * shade])
    return _apply_style(image / image.max(), style, rng), polyp.astype(np.uint8)


RENDERERS = {"faz": _faz, "odoc": _odoc, "polyp": _polyp}


def render_case(kind: str, size: int, site: int, index: int, seed: int,
                styles: str = "default") -> tuple[np.ndarray, np.ndarray]:
    """One image ``(C, H, W)`` float32 in [0, 1] and its mask, deterministic in (seed, site, index)."""
    rng = np.random.default_rng([seed, site, index])
    table = STYLE_SETS[styles]
    return RENDERERS[kind](size, table[site % len(table)], rng)


def _write_h5(path: Path, arrays: dict[str, np.ndarray]) -> None:
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        for key, value in arrays.items():
            handle.create_dataset(key, data=value, compression="gzip")


def _write_png(root: Path, split: str, stem: str, arrays: dict[str, np.ndarray], kind: str) -> None:
    maps = PNG_MAPS.get(kind, PNG_MAPS["faz"])
    for key, value in arrays.items():
        folder = root / split / PNG_DIRS[key]
        folder.mkdir(parents=True, exist_ok=True)
        if key == "image":
            img = (np.clip(value, 0, 1) * 255).round().astype(np.uint8)
            out = img if img.ndim == 2 else np.moveaxis(img, 0, -1)[..., ::-1]  # RGB -> OpenCV's BGR
        else:
            table = maps["mask" if key == "mask" else "weak"]
            inverse = {v: k for k, v in table.items()}
            out = np.vectorize(inverse.get, otypes=[np.uint8])(value)
        cv2.imwrite(str(folder / f"{stem}.png"), out)


def write_dataset(out: Path, cfg: SynthConfig) -> Path:
    """All sites: ``Domain{k}/{train,test}/<stem>.h5`` (+ ``png/Domain{k}/...`` with ``cfg.png``)."""
    num_classes = 3 if cfg.kind == "odoc" else 2
    for site, n_train in enumerate(cfg.train_counts):
        domain = out / f"Domain{site + 1}"
        for split, count in (("train", n_train), ("test", cfg.test_count)):
            for i in range(count):
                index = i if split == "train" else 10_000 + i
                image, mask = render_case(cfg.kind, cfg.size, site, index, cfg.seed, cfg.styles)
                arrays = {"image": image[0] if image.shape[0] == 1 else image, "mask": mask}
                if split == "train":
                    arrays.update(all_weak_labels(mask, num_classes, cfg.seed * 1_000_003 + site * 10_007 + i,
                                                  rotated_box=cfg.kind == "polyp" and site == 2,
                                                  sparsity=cfg.sparsity))
                stem = f"s{site + 1}_{split}_{i:03d}"
                _write_h5(domain / split / f"{stem}.h5", arrays)
                if cfg.png:
                    _write_png(out / "png" / f"Domain{site + 1}", split, stem, arrays, cfg.kind)
    return out


def ensure_synthetic(root: str | Path, cfg: SynthConfig) -> Path:
    """Generate the set at ``root`` on first use (a folder this generator owns; see ``common.datasets``)."""
    params = {"generator": "fedlppa.synth/1", **{k: getattr(cfg, k) for k in cfg.__dataclass_fields__}}
    for key in ("styles", "sparsity"):  # the stamp of a set written before these options existed stays valid
        if params[key] == "default":
            del params[key]
    return ensure_dataset(Path(root), params, lambda folder: write_dataset(folder, cfg),
                          what="FedLPPA synthetic multi-site set")


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description="Write the synthetic multi-site FedLPPA set (h5 layout)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--kind", default="faz", choices=sorted(RENDERERS))
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--png", action="store_true", help="also write the PNG release layout under <out>/png")
    args = parser.parse_args(argv)
    cfg = SynthConfig(kind=args.kind, size=args.size, seed=args.seed, png=args.png)
    out = ensure_synthetic(args.out, cfg)
    print(f"[fedlppa] synthetic {args.kind} set at {out}")
    return out


if __name__ == "__main__":
    main()
