"""Synthetic long-tailed ISIC-2018-like data set, written in exactly the ISIC 2018 Task 3 layout (see data.py).

What it carries (the structure SPMix exists for: "keep the tail lesion, borrow the head image's context"):

- seven classes with ISIC's training proportions (NV ≈ 67 %, DF ≈ 1 %, imbalance ratio ≈ 58);
- **the class is a lesion pattern**: every lesion is a dark-brown ellipse of the same colour distribution, and its
  interior carries a luminance pattern that decides the class (:data:`PATTERNS`: radial streaks, a reticular
  network, parallel stripes, concentric rings, one dark eccentric blotch, a few light globules, many small dots), with
  intra-class variation in count, size, spacing, orientation and layout;
- **nuisance context** outside the lesion: a pool of :data:`N_CONTEXTS` contexts, each a skin-tone band, a hair
  density, a vignetting strength and an artefact (none, ruler ticks, an ink mark, a gel-bubble ring). In the
  *training* part each tail class (:data:`TAIL_CLASSES`: AKIEC, VASC, DF) draws its context from its own small
  pool of ``tail_pool`` contexts (disjoint between tail classes), while every other class spans all contexts. In
  the validation and test parts the context is drawn independently of the class. A tail class's few training
  images thus share a spurious context that a re-sampled network can memorise, and that does not transfer;
- the lesion is the salient region (dark, textured, large), the context is not (smooth vignetting, thin light
  hair, pale marks): ``tests/test_synthetic.py`` checks that the saliency peak falls on the lesion;
- several images per training lesion (``lesion_id`` in the lesion-groupings CSV).

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
PATTERNS = {"MEL": "streaks", "NV": "network", "BCC": "stripes", "AKIEC": "rings", "BKL": "blotch",
            "DF": "globules", "VASC": "dots"}
TAIL_CLASSES = ("AKIEC", "VASC", "DF")
N_CONTEXTS = 12
SKIN_BANDS = ((0.07, 0.22, 0.93), (0.06, 0.35, 0.82), (0.05, 0.45, 0.68))   # HSV centres: light, medium, tan
ARTEFACTS = ("none", "ruler", "ink", "bubble")
GENERATOR_VERSION = 2


def long_tailed_counts(total: int, proportions: Sequence[int] = ISIC_TRAIN_COUNTS, minimum: int = 4) -> list[int]:
    """Scale ISIC's class counts to ``total`` images (each class at least ``minimum``)."""
    p = np.asarray(proportions, dtype=np.float64)
    counts = np.maximum(np.round(p / p.sum() * total).astype(int), minimum)
    return counts.tolist()


def context_pool() -> list[dict]:
    """The :data:`N_CONTEXTS` nuisance contexts: skin band x artefact, with hair density and vignetting cycling."""
    return [{"skin": SKIN_BANDS[i % 3], "artefact": ARTEFACTS[(i // 3) % 4], "hair": (0, 3, 7)[(i // 2) % 3],
             "vignette": (0.0, 0.45)[(i // 6) % 2]} for i in range(N_CONTEXTS)]


def tail_context_pools(tail_pool: int, seed: int) -> dict[int, list[int]]:
    """Training-context pool of each tail class (label -> context ids), disjoint between tail classes."""
    order = np.random.default_rng(seed + 99).permutation(N_CONTEXTS)
    tails = [CLASSES.index(c) for c in TAIL_CLASSES]
    if tail_pool * len(tails) > N_CONTEXTS:
        raise ValueError(f"tail_pool={tail_pool} x {len(tails)} tail classes exceeds the {N_CONTEXTS} contexts")
    return {c: [int(v) for v in order[k * tail_pool:(k + 1) * tail_pool]] for k, c in enumerate(tails)}


def _disc(rows: np.ndarray, cols: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    """Soft disc (anti-aliased edge) ``(H, W)`` in [0, 1]."""
    d = np.sqrt((rows - cy) ** 2 + (cols - cx) ** 2)
    return np.clip(r + 0.5 - d, 0.0, 1.0)


def render_background(context: dict, rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Skin of the context's tone band with shading, hair, vignetting and its artefact: ``(H, W, 3)`` float."""
    from common.synthetic import smooth_field

    H, W = size
    rows, cols = np.mgrid[:H, :W].astype(np.float32)
    h, s, v = context["skin"]
    skin = np.array(colorsys.hsv_to_rgb(h + rng.uniform(-0.01, 0.01), s + rng.uniform(-0.04, 0.04),
                                        v + rng.uniform(-0.03, 0.03)), dtype=np.float32)
    image = skin[None, None, :] * (0.92 + 0.16 * smooth_field((H, W), scale=14, rng=rng))[..., None]
    for _ in range(context["hair"] + int(rng.integers(0, 2))):  # thin, moderately dark hair
        y0, x0, angle = rng.uniform(0, H), rng.uniform(0, W), rng.uniform(0, np.pi)
        t = np.linspace(-0.5, 0.5, 300) * rng.uniform(0.4, 1.0) * W
        ys = np.clip(y0 + t * np.sin(angle) + 3 * np.sin(t / 8), 0, H - 1).astype(int)
        xs = np.clip(x0 + t * np.cos(angle), 0, W - 1).astype(int)
        image[ys, xs] *= 0.75
    if context["vignette"] > 0:
        r2 = ((rows - H / 2) / (H / 2)) ** 2 + ((cols - W / 2) / (W / 2)) ** 2
        image *= (1 - context["vignette"] * np.clip(r2 - 0.6, 0, None))[..., None]
    art = context["artefact"]
    if art == "ruler":  # grey ticks along the bottom edge
        for x in range(int(rng.integers(2, 6)), W, 6):
            image[H - 4 - 3 * (x % 18 == 0):H - 1, x] = (0.55, 0.55, 0.58)
    elif art == "ink":  # a pale violet marker blot near a corner
        cy, cx = rng.choice([8, H - 8]) + rng.uniform(-3, 3), rng.choice([10, W - 10]) + rng.uniform(-3, 3)
        d = _disc(rows, cols, cy, cx, rng.uniform(6, 9))[..., None] * 0.7
        image = image * (1 - d) + d * np.array((0.62, 0.5, 0.8), np.float32)
    elif art == "bubble":  # a light gel-bubble ring
        cy, cx, r = rng.uniform(10, H - 10), rng.uniform(10, W - 10), rng.uniform(6, 10)
        ring = np.clip(1.2 - np.abs(np.sqrt((rows - cy) ** 2 + (cols - cx) ** 2) - r), 0, 1)[..., None] * 0.5
        image = image * (1 - ring) + ring
    return image


def lesion_pattern(name: str, u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The class pattern in lesion coordinates (``u, v`` in pixels from the lesion centre, rotated): ``(H, W)`` in
    [-1, 1]; negative = darker, positive = lighter than the lesion's base colour."""
    r, phi = np.sqrt(u ** 2 + v ** 2), np.arctan2(u, v)
    period = rng.uniform(8.0, 10.5)
    if name == "streaks":
        lines = (np.cos(int(rng.integers(4, 7)) * phi + rng.uniform(0, 6.3)) > 0.5) & (r > 3)
    elif name == "network":
        lines = (np.abs(np.sin(np.pi * u / period)) < 0.35) | (np.abs(np.sin(np.pi * v / period)) < 0.35)
    elif name == "stripes":
        lines = np.abs(np.sin(np.pi * u / period)) < 0.5
    elif name == "rings":
        lines = np.abs(np.sin(np.pi * r / period)) < 0.5
    elif name == "blotch":  # one large, very dark, eccentric blotch
        a, off = rng.uniform(0, 2 * np.pi), rng.uniform(2, 5)
        lines = _disc(u, v, off * np.sin(a), off * np.cos(a), rng.uniform(5.5, 7.5)) > 0.5
    else:  # globules (few, large, light) or dots (many, small, dark)
        globules = name == "globules"
        count = int(rng.integers(2, 4)) if globules else int(rng.integers(6, 10))
        out = np.zeros_like(u)
        for _ in range(count):
            rr, a = rng.uniform(0, 0.6) * 12, rng.uniform(0, 2 * np.pi)
            size = rng.uniform(3.5, 4.5) if globules else rng.uniform(1.6, 2.2)
            out = np.maximum(out, _disc(u, v, rr * np.sin(a), rr * np.cos(a), size))
        return out if globules else -out
    return -lines.astype(np.float32)


def render_image(label: int, context: dict, lesion: dict, rng: np.random.Generator,
                 size: tuple[int, int] = (72, 96), contrast: float = 0.75) -> tuple[np.ndarray, np.ndarray]:
    """One RGB uint8 image ``(H, W, 3)`` and its lesion mask ``(H, W)`` bool; ``contrast`` is the relative
    luminance change of the class pattern against the lesion's base colour."""
    from scipy import ndimage

    from common.synthetic import ellipse_mask, smooth_field

    H, W = size
    image = render_background(context, rng, size)
    rows, cols = np.mgrid[:H, :W].astype(np.float32)
    ay, ax = lesion["axes"]
    margin = max(ay, ax) + 3
    cy, cx = rng.uniform(margin, H - margin), rng.uniform(margin, W - margin)
    angle = lesion["angle"] + rng.uniform(-20, 20)
    mask = ellipse_mask((H, W), (cy, cx), (ay, ax), angle)
    theta = np.deg2rad(angle)
    u = (rows - cy) * np.cos(theta) + (cols - cx) * np.sin(theta)
    v = -(rows - cy) * np.sin(theta) + (cols - cx) * np.cos(theta)
    pattern = lesion_pattern(PATTERNS[CLASSES[label]], u, v, rng)
    shade = 1 + contrast * (1.1 * pattern * (pattern > 0) + pattern * (pattern < 0))
    lesion_rgb = lesion["colour"] * ((0.92 + 0.16 * smooth_field((H, W), scale=3, rng=rng)) * shade)[..., None]
    soft = ndimage.gaussian_filter(mask.astype(np.float32), 1.0)[..., None]
    image = image * (1 - soft) + soft * lesion_rgb
    image += rng.normal(0, 0.012, image.shape).astype(np.float32)
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8), mask


def random_lesion(rng: np.random.Generator, height: int = 72) -> dict:
    """Shape and base colour of one lesion (the same distribution for every class); axes scale with the image
    height (semi-axes 17-21 % and 19-25 % of it)."""
    brown = np.array(colorsys.hsv_to_rgb(rng.uniform(0.03, 0.07), rng.uniform(0.5, 0.7), rng.uniform(0.3, 0.42)),
                     dtype=np.float32)
    axes = (rng.uniform(0.17, 0.21) * height, rng.uniform(0.19, 0.25) * height)
    return {"axes": axes, "angle": rng.uniform(0, 180), "colour": brown}


def draw_context(label: int, part: str, pools: dict[int, list[int]], rng: np.random.Generator) -> int:
    """Context id of one image: a tail class's own pool in training, otherwise uniform over all contexts."""
    if part == "train" and label in pools:
        return int(rng.choice(pools[label]))
    return int(rng.integers(N_CONTEXTS))


def write_part(root: Path, part: str, counts: Sequence[int], rng: np.random.Generator, start_id: int,
               pools: dict[int, list[int]], size: tuple[int, int] = (72, 96), progress: bool = False
               ) -> tuple[pd.DataFrame, int]:
    """Render ``counts[c]`` images per class into ``<root>/ISIC2018_Task3_<Part>_Input`` and its GT CSV; returns the
    lesion groupings (+ the context id of each image, column ``context``) and the next image id."""
    from PIL import Image
    from tqdm import tqdm

    folder = input_dir(root, part)
    folder.mkdir(parents=True, exist_ok=True)
    rows, groups = [], []
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    order = labels if part == "train" else labels[rng.permutation(labels.size)]
    lesion, lesion_name, lesion_label, left = None, "", -1, 0
    for offset, label in enumerate(tqdm(order, desc=f"synthetic {part}", disable=not progress, leave=False)):
        image_id = start_id + offset
        if left <= 0 or label != lesion_label:  # new lesion; training lesions get 1-2 images
            lesion, lesion_name, lesion_label = random_lesion(rng, size[0]), f"HAM_{image_id:07d}", label
            left = 1 + int(rng.random() < 0.3) if part == "train" else 1
        context = draw_context(int(label), part, pools, rng)
        image, _ = render_image(int(label), context_pool()[context], lesion, rng, size)
        name = f"ISIC_{image_id:07d}"
        Image.fromarray(image).save(folder / f"{name}.jpg", quality=95, subsampling=0)
        rows.append({"image": name, **{c: float(i == label) for i, c in enumerate(CLASSES)}})
        groups.append({"image": name, "lesion_id": lesion_name, "diagnosis_confirm_type": "synthetic",
                       "context": context})
        left -= 1
    gt_name = f"ISIC2018_Task3_{PARTS[part]}_GroundTruth"
    (root / gt_name).mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(root / gt_name / f"{gt_name}.csv", index=False)
    return pd.DataFrame(groups), start_id + len(order)


def generate(out: str | Path, train: int = 400, val_per_class: int = 20, test_per_class: int = 30, seed: int = 0,
             size: tuple[int, int] = (72, 96), tail_pool: int = 1, progress: bool = False) -> Path:
    """Write the whole synthetic set into the folder ``out`` (which the caller owns); returns ``out``. IDs start at
    ISIC_0024306 like the real set. ``contexts.csv`` (image, part, context) records each image's nuisance context
    (not part of the ISIC layout; for analysis only). Use :func:`ensure_synthetic` for anything a user may point at
    real data."""
    root = Path(out)
    rng = np.random.default_rng(seed)
    pools = tail_context_pools(tail_pool, seed)
    groups, next_id = write_part(root, "train", long_tailed_counts(train), rng, 24306, pools, size, progress)
    groups.drop(columns=["context"]).to_csv(root / "ISIC2018_Task3_Training_LesionGroupings.csv", index=False)
    contexts = [groups.assign(part="train")]
    for part, per_class in (("val", val_per_class), ("test", test_per_class)):
        frame, next_id = write_part(root, part, [per_class] * len(CLASSES), rng, next_id, pools, size, progress)
        contexts.append(frame.assign(part=part))
    pd.concat(contexts)[["image", "part", "context"]].to_csv(root / "contexts.csv", index=False)
    return root


def ensure_synthetic(root: str | Path, train: int = 400, val_per_class: int = 20, test_per_class: int = 30,
                     seed: int = 0, size: tuple[int, int] = (72, 96), tail_pool: int = 1, progress: bool = False
                     ) -> Path:
    """The synthetic set under ``root``, generated on first use; a folder holding anything that this generator did
    not write (a real dataset) or a set of other parameters raises ``common.datasets.DatasetFolderError``."""
    from common.datasets import ensure_dataset

    params = {"generator": "spmix.synthetic_set", "version": GENERATOR_VERSION, "train": train,
              "val_per_class": val_per_class, "test_per_class": test_per_class, "seed": seed, "size": list(size),
              "tail_pool": tail_pool}
    return ensure_dataset(Path(root), params, lambda folder: generate(folder, train, val_per_class, test_per_class,
                                                                       seed, size, tail_pool, progress),
                          what="synthetic ISIC-2018-like set")
