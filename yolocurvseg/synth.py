"""Hidden "real" domain in the DRIVE layout (spec §7.7): vessel images with exact masks whose appearance model the
pipeline never sees.

Geometry: ``common.synthetic.vessel_tree`` (a recursive branching tree, a different generator from the pipeline's
SCA, so the curve generator cannot simply copy the test distribution). Appearance (hidden from the pipeline):
textured, unevenly lit background inside a circular FOV with a bright optic-disc-like blob; dark vessels whose
contrast grows with calibre and follows a blurred (Gaussian-like) cross profile with a central light reflex on thick
vessels; multiplicative speckle, additive noise and a gamma curve. Written as DRIVE writes it::

    <root>/training/images/NN_training.tif      RGB uint8 (the green channel carries the vessels)
    <root>/training/1st_manual/NN_manual1.gif   {0, 255}
    <root>/training/mask/NN_training_mask.gif   FOV {0, 255}
    <root>/test/...                             same with _test
    <root>/skeleton/NN.png                      simulated noisy skeleton of every training image (DCA1 statistics)

``python synth.py --out data/synthetic/yolocurvseg --n-train 12 --n-test 8 --size 128``
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from common.rundir import resolve_path
from common.synthetic import as_rng, smooth_field, speckle_noise, vessel_tree
from yolocurvseg.skeleton import simulate_noisy_skeleton

__all__ = ["render_hidden_case", "write_drive_like", "main"]


def render_hidden_case(size: int, rng: int | np.random.Generator | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One hidden-domain case: RGB uint8 ``(S, S, 3)``, vessel mask bool ``(S, S)``, FOV bool ``(S, S)``."""
    rng = as_rng(rng)
    shape = (size, size)
    yy, xx = np.mgrid[:size, :size]
    c = (size - 1) / 2
    dist = np.hypot(yy - c, xx - c)
    fov = dist <= 0.47 * size
    tree = vessel_tree(shape, rng, roots=int(rng.integers(3, 5)), depth=5, root_radius=size / 48,
                       taper=0.75, min_radius=0.7, segment_length=0.16, branch_angle=32, wobble=14,
                       root_positions="center")
    mask = tree.mask & fov
    # background: illumination + large blobs + fine texture + optic disc
    illum = 0.62 - 0.25 * (dist / (0.5 * size)) ** 2
    bg = illum + 0.16 * (smooth_field(shape, size / 8, rng) - 0.5) + 0.08 * (smooth_field(shape, 1.5, rng) - 0.5)
    oy, ox = c + rng.normal(0, size * 0.08), c + rng.choice([-1, 1]) * size * 0.25
    bg += 0.18 * np.exp(-((yy - oy) ** 2 + (xx - ox) ** 2) / (2 * (size * 0.06) ** 2))
    # vessels: calibre-dependent contrast, blurred profile, central reflex on thick vessels
    radius = ndimage.grey_dilation(tree.radius, size=(3, 3))
    contrast = 0.18 + 0.22 * np.clip(radius / (size / 48), 0, 1)
    profile = ndimage.gaussian_filter(tree.intensity, 0.9)
    reflex = ndimage.gaussian_filter((ndimage.distance_transform_edt(tree.mask) > 1.8) * (radius > 2.0), 0.6)
    green = bg * (1 - contrast * profile + 0.12 * reflex)
    green = speckle_noise(np.clip(green, 0.01, 1), looks=40, rng=rng)
    green = ndimage.gaussian_filter(green, 0.5) + rng.normal(0, 0.015, shape)
    green = np.clip(green, 0, 1) ** 1.3
    green = np.where(fov, green, 0.02)
    red = np.where(fov, np.clip(0.35 + 0.6 * green, 0, 1), 0.03)
    blue = np.where(fov, np.clip(0.4 * green, 0, 1), 0.01)
    rgb = (np.stack([red, green, blue], axis=-1) * 255).round().astype(np.uint8)
    return rgb, mask, fov


def _save_gif(mask: np.ndarray, path: Path) -> None:
    Image.fromarray((mask > 0).astype(np.uint8) * 255, mode="L").save(path)


def write_drive_like(root: str | Path, n_train: int = 12, n_test: int = 8, size: int = 128, seed: int = 0
                     ) -> Path:
    """Write the hidden domain under ``root`` (DRIVE layout, see module docstring); returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    ids = {"test": range(1, n_test + 1), "training": range(n_test + 1, n_test + n_train + 1)}
    for folder, numbers in ids.items():
        for sub in ("images", "1st_manual", "mask"):
            (root / folder / sub).mkdir(parents=True, exist_ok=True)
        for n in numbers:
            rgb, mask, fov = render_hidden_case(size, rng)
            num = f"{n:02d}"
            Image.fromarray(rgb, mode="RGB").save(root / folder / "images" / f"{num}_{folder}.tif")
            _save_gif(mask, root / folder / "1st_manual" / f"{num}_manual1.gif")
            _save_gif(fov, root / folder / "mask" / f"{num}_{folder}_mask.gif")
            if folder == "training":
                (root / "skeleton").mkdir(exist_ok=True)
                sk = simulate_noisy_skeleton(mask, rng)
                Image.fromarray(sk, mode="L").save(root / "skeleton" / f"{num}.png")
    (root / "synth.json").write_text(json.dumps({"n_train": n_train, "n_test": n_test, "size": size, "seed": seed,
                                                 "layout": "drive"}, indent=2))
    return root


def ensure_synthetic(root: str | Path, n_train: int, n_test: int, size: int, seed: int) -> Path:
    """Generate the hidden domain once (first use); regenerate when its recorded parameters differ."""
    root = resolve_path(root)
    meta = root / "synth.json"
    want = {"n_train": n_train, "n_test": n_test, "size": size, "seed": seed, "layout": "drive"}
    if meta.is_file() and json.loads(meta.read_text()) == want:
        return root
    if root.exists():
        import shutil

        shutil.rmtree(root)
    return write_drive_like(root, n_train, n_test, size, seed)


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description="Write the hidden-domain vessel dataset in the DRIVE layout")
    parser.add_argument("--out", default="data/synthetic/yolocurvseg/drive_like")
    parser.add_argument("--n-train", type=int, default=12)
    parser.add_argument("--n-test", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    root = ensure_synthetic(args.out, args.n_train, args.n_test, args.size, args.seed)
    print(f"hidden domain written to {root}")
    return root


if __name__ == "__main__":
    main()
