"""Synthetic fine-grained grading dataset in the official ``{train,val,test}/<class>/`` layout (FPT+ Sec. I: the
diagnostic cue of high-resolution medical images is small and fine-grained; CONVENTIONS "Data").

Each image is a fundus-like RGB picture (dark surround, illuminated disc, optic disc, vessel tree, smooth
illumination field, mild noise). Every image, whatever its grade, carries the same number ``G - 1`` of dark discs
("lesion candidates") of radius ``lesion_radius`` px with the same darkening; the *grade* g in 0..G-1 (DR-like:
``0_none`` ... ``4_proliferative``) is how many of them are filled with a zero-mean checkerboard of period 2 px
(amplitude ``texture_amplitude``). So the low-frequency content (disc count, positions, darkening) is drawn from
the same distribution for every grade, and the only grade cue is the texture.

The texture is exactly invisible after an even area down-sampling: its mask is constant on the aligned 2x2 pixel
cells (each cell of a period-2 checkerboard sums to zero), and the untextured image is clamped to
``[a_max, 1 - a_max]`` before the texture is added, so no pixel clips. Every random number is drawn in the same
order for every grade (the textured subset is the first g of a permutation), so one seed rendered at two grades
gives two images whose area-down-sampled versions differ only by the uint8 rounding:
``tests/test_data.py`` checks this information bound (a low-resolution observer is at chance). An earlier version
drew a grade-independent number of decoys *besides* g lesions of the same low-frequency look, so the count of dark
discs (g + decoys) leaked the grade into the low-resolution image (Bayes macro AUC about 0.78 from the count alone).

The set is written only into a folder the generator creates (``common.datasets.ensure_dataset``: ``<out>.partial``,
renamed at the end, with a stamp of the parameters); a non-empty folder without that stamp is refused untouched.

    python synth.py --out data/synthetic/fpt_plus/grading [--image-size 192 --num-train 400 ...]
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


def _cell_mask(mask: np.ndarray) -> np.ndarray:
    """``mask`` made constant on the aligned 2x2 pixel cells (a cell is in when most of its pixels are)."""
    h, w = mask.shape
    cells = mask.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)) >= 0.5
    return np.kron(cells, np.ones((2, 2), bool))


def render_image(grade: int, cfg: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """One ``(S, S, 3)`` uint8 image of the given grade: ``G - 1`` dark discs, the first ``grade`` of a random
    permutation of them textured. The random numbers drawn do not depend on ``grade``."""
    if not 0 <= grade < cfg.num_grades:
        raise ValueError(f"grade {grade} outside 0..{cfg.num_grades - 1}")
    s = cfg.image_size
    fov = 0.46 * s
    yy, xx = np.mgrid[:s, :s].astype(np.float32)
    inside = ((yy - s / 2) ** 2 + (xx - s / 2) ** 2) <= fov ** 2
    base = 0.45 + 0.25 * smooth_field((s, s), scale=s / 6, rng=rng)
    tree = vessel_tree((s, s), rng, roots=2, depth=5, root_radius=max(1.5, s / 96), root_positions="center")
    base = base * (1.0 - 0.45 * tree.intensity)
    od_y, od_x = s / 2 + rng.uniform(-0.1, 0.1) * s, s / 2 + rng.choice([-1, 1]) * 0.25 * s
    base = base + 0.35 * ellipse_mask((s, s), (od_y, od_x), (0.07 * s, 0.07 * s))
    discs = _place_discs(rng, cfg.num_grades - 1, s, cfg.lesion_radius, fov, [(od_y, od_x, 0.07 * s)])
    for cy, cx, r in discs:
        base = base - 0.06 * ellipse_mask((s, s), (cy, cx), (r, r))
    textured = rng.permutation(len(discs))[:grade]
    amplitude = float(rng.uniform(*cfg.texture_amplitude))
    tint = np.array([1.0, 0.55, 0.3], np.float32) * rng.uniform(0.9, 1.1, size=3).astype(np.float32)
    rgb = base[..., None] * tint + rng.normal(0.0, 0.01, size=(s, s, 3)).astype(np.float32)
    high = cfg.texture_amplitude[1]
    rgb = np.clip(rgb, high, 1.0 - high)  # the texture added below never clips (clipping would un-zero its mean)
    checker = np.where((yy.astype(int) + xx.astype(int)) % 2 == 0, 1.0, -1.0).astype(np.float32)
    texture = np.zeros((s, s), np.float32)
    for j in textured:
        cy, cx, r = discs[j]
        texture += amplitude * checker * _cell_mask(ellipse_mask((s, s), (cy, cx), (r, r)))
    rgb = rgb + texture[..., None]
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
