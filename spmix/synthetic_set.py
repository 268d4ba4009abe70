"""Synthetic long-tailed ISIC-2018-like data set, written in exactly the ISIC 2018 Task 3 layout (see data.py).

What it carries (the structure SPMix exploits):
- seven classes with ISIC's training proportions (NV ≈ 67 %, DF ≈ 1 %, imbalance ratio ≈ 58);
- each image: a skin-tone background (illumination field, noise, hair-like lines, sometimes a freckle of a random
  class colour outside the lesion) and one dark elliptical lesion at a random position, i.e. the salient region;
- the class is decided **only** by a localized feature inside the lesion: a cluster of small dots whose hue is
  the class hue. Lesion colour, size, position and the background carry no class signal;
- several images per lesion (``lesion_id`` in the lesion-groupings CSV), balanced validation/test sets so that
  tail recall can be measured.

It is written only through :func:`ensure_synthetic` (``common.datasets.ensure_dataset``): into a folder the
generator creates itself (``<root>.partial``, renamed at the end, with a stamp of its parameters), never into a
folder that holds anything else. Command line: ``python -m spmix.synth --out data/synthetic/spmix``.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from spmix.data import CLASSES, PARTS, input_dir

ISIC_TRAIN_COUNTS = (1113, 6705, 514, 327, 1099, 115, 142)  # MEL NV BCC AKIEC BKL DF VASC (official training set)
CLASS_HUES = tuple(i / len(CLASSES) for i in range(len(CLASSES)))


def long_tailed_counts(total: int, proportions: Sequence[int] = ISIC_TRAIN_COUNTS, minimum: int = 4) -> list[int]:
    """Scale ISIC's class counts to ``total`` images (each class at least ``minimum``)."""
    p = np.asarray(proportions, dtype=np.float64)
    counts = np.maximum(np.round(p / p.sum() * total).astype(int), minimum)
    return counts.tolist()


def _hue_rgb(hue: float, sat: float = 0.9, val: float = 0.95) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue, sat, val), dtype=np.float32)


def _disc(rows: np.ndarray, cols: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    """Soft disc (anti-aliased edge) ``(H, W)`` in [0, 1]."""
    d = np.sqrt((rows - cy) ** 2 + (cols - cx) ** 2)
    return np.clip(r + 0.5 - d, 0.0, 1.0)


def render_image(label: int, lesion: dict, rng: np.random.Generator, size: tuple[int, int] = (96, 128)
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One RGB uint8 image ``(H, W, 3)`` and its lesion mask ``(H, W)`` bool; ``lesion`` fixes lesion shape/colour."""
    from common.synthetic import ellipse_mask, smooth_field

    H, W = size
    rows, cols = np.mgrid[:H, :W].astype(np.float32)
    skin = np.array(colorsys.hsv_to_rgb(rng.uniform(0.03, 0.09), rng.uniform(0.25, 0.45), rng.uniform(0.75, 0.95)),
                    dtype=np.float32)
    light = 0.85 + 0.3 * smooth_field((H, W), scale=12, rng=rng)
    image = skin[None, None, :] * light[..., None]
    image += 0.03 * (smooth_field((H, W), scale=1.5, rng=rng)[..., None] - 0.5)
    for _ in range(rng.integers(0, 4)):  # hair-like dark lines
        y0, x0 = rng.uniform(0, H), rng.uniform(0, W)
        angle, length = rng.uniform(0, np.pi), rng.uniform(0.3, 1.0) * W
        t = np.linspace(-0.5, 0.5, 200) * length
        ys = np.clip(y0 + t * np.sin(angle) + 4 * np.sin(t / 9), 0, H - 1).astype(int)
        xs = np.clip(x0 + t * np.cos(angle), 0, W - 1).astype(int)
        image[ys, xs] *= 0.45
    if rng.random() < 0.3:  # freckle of a random class colour outside the lesion: no class signal
        cy, cx = rng.uniform(4, H - 4), rng.uniform(4, W - 4)
        d = _disc(rows, cols, cy, cx, 2.0)[..., None]
        image = image * (1 - d) + d * _hue_rgb(rng.choice(CLASS_HUES), 0.6, 0.7)
    ay, ax = lesion["axes"]
    margin = max(ay, ax) + 2
    cy, cx = rng.uniform(margin, H - margin), rng.uniform(margin, W - margin)
    mask = ellipse_mask((H, W), (cy, cx), (ay, ax), lesion["angle"])
    from scipy import ndimage

    soft = ndimage.gaussian_filter(mask.astype(np.float32), 1.2)[..., None]
    lesion_rgb = lesion["colour"] * (0.9 + 0.2 * smooth_field((H, W), scale=3, rng=rng))[..., None]
    image = image * (1 - soft) + soft * lesion_rgb
    dots = np.zeros((H, W), np.float32)
    for _ in range(rng.integers(4, 8)):  # the class cue: dots of the class hue inside the lesion
        r = rng.uniform(0.0, 0.5)
        phi = rng.uniform(0, 2 * np.pi)
        dy, dx = r * ay * np.sin(phi), r * ax * np.cos(phi)
        dots = np.maximum(dots, _disc(rows, cols, cy + dy, cx + dx, rng.uniform(2.8, 4.0)))
    dots = dots[..., None]
    image = image * (1 - dots) + dots * _hue_rgb(CLASS_HUES[label])
    image += rng.normal(0, 0.015, image.shape).astype(np.float32)
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8), mask


def random_lesion(rng: np.random.Generator) -> dict:
    brown = np.array(colorsys.hsv_to_rgb(rng.uniform(0.02, 0.08), rng.uniform(0.45, 0.75), rng.uniform(0.2, 0.42)),
                     dtype=np.float32)
    return {"axes": (rng.uniform(11, 17), rng.uniform(13, 21)), "angle": rng.uniform(0, 180), "colour": brown}


def write_part(root: Path, part: str, counts: Sequence[int], rng: np.random.Generator, start_id: int,
               images_per_lesion: float = 1.3, size: tuple[int, int] = (96, 128), progress: bool = False
               ) -> tuple[pd.DataFrame, int]:
    """Render ``counts[c]`` images per class into ``<root>/ISIC2018_Task3_<Part>_Input`` and its GT CSV."""
    from PIL import Image
    from tqdm import tqdm

    folder = input_dir(root, part)
    folder.mkdir(parents=True, exist_ok=True)
    rows, groups = [], []
    image_id = start_id
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    order = labels if part == "train" else labels[rng.permutation(labels.size)]
    lesion, lesion_name, lesion_label, left = None, "", -1, 0
    for label in tqdm(order, desc=f"synthetic {part}", disable=not progress, leave=False):
        if left <= 0 or label != lesion_label:  # new lesion; training lesions get ~images_per_lesion images
            lesion, lesion_name, lesion_label = random_lesion(rng), f"HAM_{image_id:07d}", label
            left = 1 + int(rng.random() < images_per_lesion - 1) if part == "train" else 1
        image, _ = render_image(int(label), lesion, rng, size)
        name = f"ISIC_{image_id:07d}"
        Image.fromarray(image).save(folder / f"{name}.jpg", quality=95, subsampling=0)
        rows.append({"image": name, **{c: float(i == label) for i, c in enumerate(CLASSES)}})
        groups.append({"image": name, "lesion_id": lesion_name, "diagnosis_confirm_type": "synthetic"})
        image_id += 1
        left -= 1
    frame = pd.DataFrame(rows)
    gt_name = f"ISIC2018_Task3_{PARTS[part]}_GroundTruth"
    (root / gt_name).mkdir(parents=True, exist_ok=True)
    frame.to_csv(root / gt_name / f"{gt_name}.csv", index=False)
    return pd.DataFrame(groups), image_id


def generate(out: str | Path, train: int = 700, val_per_class: int = 8, test_per_class: int = 30, seed: int = 0,
             size: tuple[int, int] = (96, 128), progress: bool = False) -> Path:
    """Write the whole synthetic set into the folder ``out`` (which the caller owns); returns ``out``. IDs start at
    ISIC_0024306 like the real set. Use :func:`ensure_synthetic` for anything a user may point at real data."""
    root = Path(out)
    rng = np.random.default_rng(seed)
    groups, next_id = write_part(root, "train", long_tailed_counts(train), rng, 24306, size=size, progress=progress)
    groups.to_csv(root / "ISIC2018_Task3_Training_LesionGroupings.csv", index=False)
    _, next_id = write_part(root, "val", [val_per_class] * len(CLASSES), rng, next_id, size=size, progress=progress)
    write_part(root, "test", [test_per_class] * len(CLASSES), rng, next_id, size=size, progress=progress)
    return root


def ensure_synthetic(root: str | Path, train: int = 700, val_per_class: int = 8, test_per_class: int = 30,
                     seed: int = 0, size: tuple[int, int] = (96, 128), progress: bool = False) -> Path:
    """The synthetic set under ``root``, generated on first use; a folder holding anything that this generator did
    not write (a real dataset) or a set of other parameters raises ``common.datasets.DatasetFolderError``."""
    from common.datasets import ensure_dataset

    params = {"generator": "spmix.synthetic_set", "version": 1, "train": train, "val_per_class": val_per_class,
              "test_per_class": test_per_class, "seed": seed, "size": list(size)}
    return ensure_dataset(Path(root), params, lambda folder: generate(folder, train, val_per_class, test_per_class,
                                                                       seed, size, progress),
                          what="synthetic ISIC-2018-like set")
