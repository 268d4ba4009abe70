"""The stand-in for SAM's general knowledge: pre-train the whole tiny SAM on generic promptable shapes
(``pretrain_sam.py`` is its command line).

The real ASLseg starts from SAM's SA-1B weights, which cannot be downloaded here; the tiny CPU SAM gets a small
version of that prior instead: box (and sometimes point) prompts on an on-the-fly set of shapes (ellipses, stars,
polygons, rings, blobs) drawn on smooth textures, both polarities, contrast-to-noise 0.5-6, soft or sharp edges,
Gaussian or speckle noise, with distractor shapes outside the box and 10 % boxes over background that must
answer "nothing". Never CT anatomy. Loss: Dice + BCE on the mask and MSE of the IoU head. The result is cached
under ``sam_pretrain.cache_dir`` keyed by the settings (reused, never silently retrained), with a report of the
held-out Dice against the box's inscribed ellipse (what a box alone says about the shape).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from aslseg.prompts import boxes_from_mask, component_points, jitter_box
from aslseg.sam_model import SAMSegmenter, build_tiny_sam, set_trainable
from aslseg.sam_tuning import SAMExample, sam_train_step
from aslseg.settings import SAMPretrainConfig
from common.checkpoint import atomic_torch_save
from common.rundir import resolve_path
from common.synthetic import as_rng, ellipse_mask, smooth_field, speckle_noise

__all__ = ["SHAPES", "random_shape", "shape_sample", "cache_path", "ellipse_baseline", "pretrain_tiny_sam",
           "ensure_pretrained"]

SHAPES = ("ellipse", "star", "polygon", "ring", "blob")


def _polar_mask(size: int, center, radius_fn) -> np.ndarray:
    rows, cols = np.mgrid[:size, :size].astype(np.float64)
    dr, dc = rows - center[0], cols - center[1]
    return np.hypot(dr, dc) <= radius_fn(np.arctan2(dr, dc))


def random_shape(size: int, rng: np.random.Generator) -> np.ndarray:
    """One random shape of kind in ``SHAPES`` as a boolean ``(size, size)`` mask, radius 2-30 % of the side."""
    kind = SHAPES[int(rng.integers(len(SHAPES)))]
    r = size * float(np.exp(rng.uniform(np.log(0.04), np.log(0.3))))
    c = rng.uniform(r + 1, size - r - 1, size=2)
    if kind == "ellipse":
        return ellipse_mask((size, size), tuple(c), (r, r * rng.uniform(0.4, 1.0)), rng.uniform(0, 180))
    if kind == "star":
        k, depth, phase = int(rng.integers(4, 8)), rng.uniform(0.2, 0.5), rng.uniform(0, 2 * math.pi)
        return _polar_mask(size, c, lambda t: r * (1 - depth + depth * np.cos(k * t + phase)))
    if kind == "polygon":
        k = int(rng.integers(3, 8))
        angles = np.sort(rng.uniform(0, 2 * math.pi, k))
        pts = np.stack([c[1] + r * np.cos(angles), c[0] + r * np.sin(angles)], 1).astype(np.int32)
        import cv2

        out = np.zeros((size, size), np.uint8)
        cv2.fillPoly(out, [pts], 1)
        return out.astype(bool)
    if kind == "ring":
        outer = ellipse_mask((size, size), tuple(c), (r, r))
        return outer & ~ellipse_mask((size, size), tuple(c), (r * rng.uniform(0.4, 0.7),) * 2)
    coeffs = rng.normal(0, 0.15, size=(4, 2))
    return _polar_mask(size, c, lambda t: r * (1 + sum(a * np.cos((i + 2) * t) + b * np.sin((i + 2) * t)
                                                        for i, (a, b) in enumerate(coeffs))))


def shape_sample(size: int, rng: np.random.Generator, empty_box_prob: float = 0.1, point_prob: float = 0.3
                 ) -> tuple[np.ndarray, SAMExample]:
    """An image in [0, 1] and one prompt with its target (see module docstring)."""
    target = random_shape(size, rng)
    while not target.any():
        target = random_shape(size, rng)
    distractors = np.zeros_like(target)
    for _ in range(int(rng.integers(0, 3))):
        distractors |= random_shape(size, rng) & ~ndimage.binary_dilation(target, iterations=3)
    noise_sigma = rng.uniform(0.02, 0.08)
    contrast = rng.uniform(0.5, 6.0) * noise_sigma * rng.choice([-1.0, 1.0])
    base = 0.5 + 0.15 * (smooth_field((size, size), rng.uniform(2, 8), rng) - 0.5)
    edge = rng.uniform(0.0, 1.5)
    soft = ndimage.gaussian_filter(target.astype(np.float32), edge) if edge > 0.2 else target.astype(np.float32)
    dist_soft = ndimage.gaussian_filter(distractors.astype(np.float32), 0.7)
    image = base + contrast * soft + contrast * rng.uniform(0.5, 1.2) * dist_soft
    if rng.random() < 0.5:
        image = image + rng.normal(0, noise_sigma, image.shape)
    else:
        image = speckle_noise(np.clip(image, 0.05, 1), looks=rng.uniform(20, 80), rng=rng)
    image = ndimage.gaussian_filter(image, 0.5).clip(0, 1).astype(np.float32)
    if rng.random() < empty_box_prob:  # a box over background: the answer is nothing
        free = ~ndimage.binary_dilation(target | distractors, iterations=2)
        w = int(rng.integers(4, max(size // 4, 5)))
        for _ in range(20):
            x0, y0 = rng.integers(0, size - w, size=2)
            if free[y0:y0 + w, x0:x0 + w].all():
                box = np.array([x0, y0, x0 + w, y0 + w], np.float32)
                return image, SAMExample(0, box, np.zeros((size, size), np.float32))
    box = jitter_box(boxes_from_mask(target)[0], (size, size), 0.05, rng)
    point = component_points(target)[0] if rng.random() < point_prob else None
    return image, SAMExample(0, box, target.astype(np.float32), point)


def ellipse_baseline(box: np.ndarray, size: int) -> np.ndarray:
    """The ellipse inscribed in an XYXY box: what the box alone says about the shape."""
    x0, y0, x1, y1 = box
    return ellipse_mask((size, size), ((y0 + y1) / 2 - 0.5, (x0 + x1) / 2 - 0.5), ((y1 - y0) / 2, (x1 - x0) / 2))


def cache_path(cfg: SAMPretrainConfig, size: int) -> Path:
    """``<cache_dir>/tiny-<hash of the settings and slice size>.pth``."""
    params = {**asdict(cfg), "size": size, "version": 1}
    params.pop("cache_dir")
    digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    return resolve_path(cfg.cache_dir) / f"tiny-{digest}.pth"


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 1.0 if not a.any() and not b.any() else float(2 * (a & b).sum() / (a.sum() + b.sum()))


def _heldout(model: SAMSegmenter, cfg: SAMPretrainConfig, size: int) -> dict[str, float]:
    rng = as_rng(np.random.default_rng([cfg.seed, 999]))
    sam_d, ell_d = [], []
    for _ in range(cfg.n_heldout):
        image, ex = shape_sample(size, rng, empty_box_prob=0.0, point_prob=0.0)
        pred = model.predict(torch.from_numpy(image)[None], ex.box[None]) > 0.5
        sam_d.append(_dice(pred, ex.target > 0))
        ell_d.append(_dice(ellipse_baseline(ex.box, size), ex.target > 0))
    return {"heldout_dice": float(np.mean(sam_d)), "ellipse_dice": float(np.mean(ell_d))}


def pretrain_tiny_sam(cfg: SAMPretrainConfig, size: int, progress: bool = False) -> tuple[SAMSegmenter, dict]:
    """Train a fresh tiny SAM (every parameter) for ``cfg.steps``; returns it and its report."""
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    model = SAMSegmenter(build_tiny_sam())
    params = set_trainable(model.sam, "all")
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    start, losses = time.time(), []
    for step in tqdm(range(cfg.steps), desc="pretrain_sam", disable=not progress, leave=False):
        rng = as_rng(np.random.default_rng([cfg.seed, step]))
        samples = [shape_sample(size, rng, cfg.empty_box_prob, cfg.point_prob) for _ in range(cfg.batch_size)]
        images = torch.from_numpy(np.stack([s[0] for s in samples]))[:, None]
        examples = [SAMExample(i, s[1].box, s[1].target, s[1].point) for i, s in enumerate(samples)]
        losses.append(sam_train_step(model, opt, images, examples, iou_w=1.0)["loss"])
        sched.step()
    model.eval()
    report = {"steps": cfg.steps, "seconds": round(time.time() - start, 1),
              "final_loss": float(np.mean(losses[-50:])), **_heldout(model, cfg, size)}
    return model, report


def ensure_pretrained(cfg: SAMPretrainConfig, size: int, progress: bool = False) -> Path:
    """The cached pre-trained tiny SAM for these settings, trained (and its report written) on first use."""
    path = cache_path(cfg, size)
    if path.is_file():
        return path
    model, report = pretrain_tiny_sam(cfg, size, progress)
    atomic_torch_save(model.sam.state_dict(), path)
    path.with_suffix(".json").write_text(json.dumps(report, indent=2))
    print(f"[aslseg] pre-trained tiny SAM ({report['seconds']} s): held-out Dice {report['heldout_dice']:.3f} vs "
          f"inscribed ellipse {report['ellipse_dice']:.3f} -> {path}")
    return path
