"""Synthetic fine-grained grading dataset in the official ``{train,val,test}/<class>/`` layout (FPT+ Sec. I: the
diagnostic cue of high-resolution medical images is small and fine-grained; CONVENTIONS "Data").

Each image is a fundus-like RGB picture (dark surround, illuminated disc, optic disc, vessel tree, smooth
illumination field, mild noise). Its *grade* g in 0..G-1 (DR-like: ``0_none`` ... ``4_proliferative``) is the number
of "lesions": discs of radius ``lesion_radius`` px filled with a zero-mean checkerboard of period 2 px
(amplitude ``texture_amplitude``). Every image also carries a random number of *decoys*: discs of the same size
with the same low-frequency appearance but no texture. A zero-mean period-2 texture averages out exactly under
the 4x area down-sampling of the side branch (256 -> 64 px), so the low-resolution image carries (almost) no
information about the grade, while the LPM at full resolution can see it: side-only should stay near chance and
FPT+ should climb, by how much depends on how well the LPM's features carry the texture.

Calibration (measured while building this task): 3-6 patches of radius 3-6 px were too weak (FPT+ AUC 0.57 vs
0.52), 1-2 regions of radius 20-40 px too easy (1.00 vs 0.47); the grade-by-count task with radius 9-14 px lies
between.

The set is written only into a folder the generator creates (``common.datasets.ensure_dataset``: ``<out>.partial``,
renamed at the end, with a stamp of the parameters); a non-empty folder without that stamp is refused untouched.

    python synth.py --out data/synthetic/fpt_plus/default [--image-size 256 --num-train 400 ...]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.datasets import ensure_dataset
from common.synthetic import as_rng, ellipse_mask, smooth_field, vessel_tree
from fpt_plus.settings import SynthConfig

__all__ = ["GRADE_NAMES", "grade_names", "render_image", "write_dataset", "main"]

GRADE_NAMES = ("0_none", "1_mild", "2_moderate", "3_severe", "4_proliferative")


def grade_names(num_grades: int) -> list[str]:
    """Class folder names, in alphabetical (= label) order."""
    if num_grades <= len(GRADE_NAMES):
        return list(GRADE_NAMES[:num_grades])
    return [f"{g:02d}_grade" for g in range(num_grades)]


def _place_discs(rng: np.random.Generator, count: int, size: int, radius: Sequence[int], fov: float,
                 taken: list[tuple[float, float, float]]) -> list[tuple[float, float, float]]:
    """Non-overlapping disc centres inside the field of view (circle of radius ``fov`` around the centre)."""
    out = []
    for _ in range(count):
        for _attempt in range(200):
            r = float(rng.uniform(radius[0], radius[1]))
            rho = float(np.sqrt(rng.uniform(0, 1))) * (fov - r - 2)
            phi = float(rng.uniform(0, 2 * np.pi))
            cy, cx = size / 2 + rho * np.sin(phi), size / 2 + rho * np.cos(phi)
            if all((cy - y) ** 2 + (cx - x) ** 2 > (r + rr + 3) ** 2 for y, x, rr in taken + out):
                out.append((cy, cx, r))
                break
    return out


def render_image(grade: int, cfg: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """One ``(S, S, 3)`` uint8 image of the given grade (``grade`` textured lesions, random decoys)."""
    s = cfg.image_size
    fov = 0.46 * s
    yy, xx = np.mgrid[:s, :s].astype(np.float32)
    inside = ((yy - s / 2) ** 2 + (xx - s / 2) ** 2) <= fov ** 2
    base = 0.45 + 0.25 * smooth_field((s, s), scale=s / 6, rng=rng)
    tree = vessel_tree((s, s), rng, roots=2, depth=5, root_radius=max(1.5, s / 96), root_positions="center")
    base = base * (1.0 - 0.45 * tree.intensity)
    od_y, od_x = s / 2 + rng.uniform(-0.1, 0.1) * s, s / 2 + rng.choice([-1, 1]) * 0.25 * s
    base = base + 0.35 * ellipse_mask((s, s), (od_y, od_x), (0.07 * s, 0.07 * s))
    texture = np.zeros((s, s), np.float32)
    checker = np.where((yy.astype(int) + xx.astype(int)) % 2 == 0, 1.0, -1.0).astype(np.float32)
    lesions = _place_discs(rng, grade, s, cfg.lesion_radius, fov, [(od_y, od_x, 0.07 * s)])
    decoys = _place_discs(rng, int(rng.integers(0, cfg.num_grades)), s, cfg.decoy_radius, fov,
                          [(od_y, od_x, 0.07 * s)] + lesions)
    for cy, cx, r in lesions + decoys:
        base = base - 0.06 * ellipse_mask((s, s), (cy, cx), (r, r))  # same low-frequency look for both
    amplitude = float(rng.uniform(*cfg.texture_amplitude))
    for cy, cx, r in lesions:
        texture += amplitude * checker * ellipse_mask((s, s), (cy, cx), (r, r))
    tint = np.array([1.0, 0.55, 0.3], np.float32) * rng.uniform(0.9, 1.1, size=3).astype(np.float32)
    rgb = base[..., None] * tint + texture[..., None]
    rgb = rgb + rng.normal(0.0, 0.01, size=rgb.shape).astype(np.float32)
    rgb = np.where(inside[..., None], rgb, 0.02)
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_dataset(root: str | Path, cfg: SynthConfig, progress: bool = False) -> Path:
    """Write ``root/{train,val,test}/<grade>/<split>_<i>.png`` with balanced grades (``root`` exists and is empty;
    go through ``common.datasets.ensure_dataset`` rather than calling this on a folder of your own)."""
    from PIL import Image
    from tqdm import tqdm

    root = Path(root)
    rng = as_rng(cfg.seed)
    names = grade_names(cfg.num_grades)
    jobs = [(split, i, g) for split, count in (("train", cfg.num_train), ("val", cfg.num_val), ("test", cfg.num_test))
            for i, g in enumerate(np.arange(count) % cfg.num_grades)]
    for split, i, g in tqdm(jobs, desc="synthetic images", leave=False, disable=not progress):
        folder = root / split / names[g]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(render_image(int(g), cfg, rng)).save(folder / f"{split}_{i:05d}.png")
    return root


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description="Write the synthetic fine-grained grading dataset (ImageFolder).")
    parser.add_argument("--out", required=True, help="output folder (created)")
    defaults = SynthConfig()
    for key in ("image_size", "num_train", "num_val", "num_test", "num_grades", "seed"):
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, default=getattr(defaults, key))
    args = parser.parse_args(argv)
    from common.datasets import DatasetFolderError
    from common.rundir import resolve_path

    try:
        cfg = SynthConfig(**{k: getattr(args, k) for k in ("image_size", "num_train", "num_val", "num_test",
                                                           "num_grades", "seed")})
        params = {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}
        out = ensure_dataset(resolve_path(args.out), params, lambda folder: write_dataset(folder, cfg, progress=True),
                             what="synthetic fine-grained grading dataset")
    except (ValueError, DatasetFolderError) as exc:
        parser.error(str(exc))
    print(f"synthetic dataset at {out}")
    return out


if __name__ == "__main__":
    main()
