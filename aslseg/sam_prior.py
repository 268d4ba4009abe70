"""The stand-in for SAM's general knowledge: pre-train the whole tiny SAM on generic promptable shapes
(``pretrain_sam.py`` is its command line).

The real ASLseg starts from SAM's SA-1B weights, which cannot be downloaded here; the tiny CPU SAM gets a small
version of that prior instead: box (and sometimes point) prompts on an on-the-fly set of shapes (ellipses, stars,
polygons, rings, blobs) drawn on smooth textures, both polarities, contrast-to-noise 0.5-6, soft or sharp edges,
Gaussian or speckle noise, with distractor shapes outside the box and 10 % boxes over background that must
answer "nothing". Never CT anatomy. Boxes are drawn the way inference draws them from an SSL mask (tight box +
``box_margin`` px, each edge moved in or out by up to ``box_jitter`` px: OURS, since a SAM pre-trained on
near-tight boxes met 3 px looser ones at inference). Loss: Dice + BCE on the mask and MSE of the IoU head. The
result is cached under ``sam_pretrain.cache_dir`` keyed by the settings (reused, never silently retrained), with a
report of the held-out Dice against the box's inscribed ellipse (what a box alone says about the shape), for
boxes drawn as in training and for tight boxes, and optionally a learning curve (``eval_every``).

Under torchrun the ranks pre-train together (each its equal share of every step's images, DDP with
``find_unused_parameters``: a step without a point prompt leaves the point embeddings unused); rank 0 alone scores
the held-out shapes and writes the cache, the others wait at a barrier before reading it.
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

from aslseg.prompts import box_prior, boxes_from_mask, component_points, margin_box
from aslseg.sam_model import SAMSegmenter, build_tiny_sam, set_trainable
from aslseg.sam_tuning import SAMExample, rank_examples, sam_train_step, wrap_sam_ddp
from aslseg.settings import SAMPretrainConfig
from common.checkpoint import atomic_torch_save
from common.metrics import mask_dice
from common.rundir import resolve_path
from common.runtime import barrier, broadcast_object, dist_info
from common.synthetic import as_rng, ellipse_mask, smooth_field, speckle_noise

__all__ = ["SHAPES", "random_shape", "shape_sample", "shape_scene", "cache_path", "ellipse_baseline",
           "pretrain_tiny_sam", "ensure_pretrained"]

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


def shape_sample(size: int, rng: np.random.Generator, empty_box_prob: float = 0.1, point_prob: float = 0.3,
                 box_margin: float = 3.0, box_jitter: float = 3.0) -> tuple[np.ndarray, SAMExample]:
    """An image in [0, 1] and one prompt with its target (see module docstring)."""
    image, examples = shape_scene(size, rng, empty_box_prob, point_prob, box_margin, box_jitter, 1)
    return image, examples[0]


def shape_scene(size: int, rng: np.random.Generator, empty_box_prob: float = 0.1, point_prob: float = 0.3,
                box_margin: float = 3.0, box_jitter: float = 3.0, n_prompts: int = 1
                ) -> tuple[np.ndarray, list[SAMExample]]:
    """An image in [0, 1] and ``n_prompts`` prompts with their targets: the first as :func:`shape_sample`, the
    others boxes around the distractor components (each an object too) or, without one, the target again with
    another box draw (SAM trains several prompts per image embedding; the encoder pass dominates the cost)."""
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
    examples: list[SAMExample] = []
    if rng.random() < empty_box_prob:  # a box over background: the answer is nothing
        free = ~ndimage.binary_dilation(target | distractors, iterations=2)
        w = int(rng.integers(4, max(size // 4, 5)))
        for _ in range(20):
            x0, y0 = rng.integers(0, size - w, size=2)
            if free[y0:y0 + w, x0:x0 + w].all():
                box = np.array([x0, y0, x0 + w, y0 + w], np.float32)
                examples.append(SAMExample(0, box, np.zeros((size, size), np.float32)))
                break
    objects = [target] + [c for c in _components(distractors) if c.sum() >= 4]
    k = 0
    while len(examples) < n_prompts:
        obj = objects[k] if k < len(objects) else target
        k += 1
        box = margin_box(boxes_from_mask(obj)[0], (size, size), box_margin, box_jitter, rng)
        point = component_points(obj)[0] if rng.random() < point_prob else None
        examples.append(SAMExample(0, box, obj.astype(np.float32), point))
    return image, examples


def _components(mask: np.ndarray) -> list[np.ndarray]:
    labels, n = ndimage.label(mask)
    return [labels == i for i in range(1, n + 1)]


def ellipse_baseline(box: np.ndarray, size: int) -> np.ndarray:
    """The ellipse inscribed in an XYXY box: what the box alone says about the shape."""
    return box_prior(np.asarray(box)[None], (size, size))[0]


def cache_path(cfg: SAMPretrainConfig, size: int, mask_prompt: str = "none") -> Path:
    """``<cache_dir>/tiny-<hash of the settings, the slice size and the mask prompt>.pth``."""
    params = {**asdict(cfg), "size": size, "version": 2, "mask_prompt": mask_prompt}
    params.pop("cache_dir")
    params.pop("eval_every")
    digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    return resolve_path(cfg.cache_dir) / f"tiny-{digest}.pth"


def _heldout(model: SAMSegmenter, cfg: SAMPretrainConfig, size: int, n: int | None = None) -> dict[str, float]:
    """Held-out Dice of SAM and of the box's inscribed ellipse, on boxes drawn as in training and on tight ones
    (the same shapes; own seed, so never a training sample)."""
    out: dict[str, list[float]] = {k: [] for k in ("heldout_dice", "ellipse_dice", "heldout_dice_tight",
                                                     "ellipse_dice_tight")}
    for k in range(n or cfg.n_heldout):
        rng = as_rng(np.random.default_rng([cfg.seed, 999, k]))
        image, ex = shape_sample(size, rng, 0.0, 0.0, cfg.box_margin, cfg.box_jitter)
        target = ex.target > 0
        tight = boxes_from_mask(target)[0]
        for suffix, box in (("", ex.box), ("_tight", tight)):
            pred = model.predict(torch.from_numpy(image)[None], box[None]) > 0.5
            out[f"heldout_dice{suffix}"].append(mask_dice(pred, target, empty=1.0))
            out[f"ellipse_dice{suffix}"].append(mask_dice(ellipse_baseline(box, size), target, empty=1.0))
    return {k: float(np.mean(v)) for k, v in out.items()}


def pretrain_tiny_sam(cfg: SAMPretrainConfig, size: int, progress: bool = False, mask_prompt: str = "none"
                      ) -> tuple[SAMSegmenter, dict]:
    """Train a fresh tiny SAM (every parameter) for ``cfg.steps``; returns it and its report."""
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    model = SAMSegmenter(build_tiny_sam(), mask_prompt=mask_prompt)
    params = set_trainable(model.sam, "all")
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    info = dist_info()
    if info.distributed and torch.cuda.is_available():  # NCCL reduces CUDA tensors; one process trains on the CPU
        model.to(torch.device("cuda", info.local_rank))
    step_model = wrap_sam_ddp(model)
    start, losses, curve = time.time(), [], []
    for step in tqdm(range(cfg.steps), desc="pretrain_sam", disable=not progress or not info.is_main, leave=False):
        rng = as_rng(np.random.default_rng([cfg.seed, step]))
        samples = [shape_scene(size, rng, cfg.empty_box_prob, cfg.point_prob, cfg.box_margin, cfg.box_jitter,
                               cfg.prompts_per_image) for _ in range(cfg.batch_size)]
        mine = rank_examples(samples, info.rank, info.world_size)  # this rank's images, drawn as one process would
        images = torch.from_numpy(np.stack([s[0] for s in mine]))[:, None]
        examples = [SAMExample(i, e.box, e.target, e.point) for i, s in enumerate(mine) for e in s[1]]
        losses.append(sam_train_step(model, opt, images, examples, iou_w=1.0, step_model=step_model)["loss"])
        sched.step()
        if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.steps and info.is_main:
            model.eval()
            point = {"step": step + 1, "seconds": round(time.time() - start, 1),
                     "loss": float(np.mean(losses[-cfg.eval_every:])), **_heldout(model, cfg, size, 32)}
            curve.append(point)
            print(f"[aslseg] pretrain_sam {json.dumps(point)}", flush=True)
    model.eval()
    report = {"steps": cfg.steps, "seconds": round(time.time() - start, 1), "mask_prompt": mask_prompt,
              "final_loss": float(np.mean(losses[-50:]))}
    if info.is_main:  # the weights are the same on every rank; one scores them
        report.update(_heldout(model, cfg, size))
    if curve:
        report["curve"] = curve
    return model, report


def ensure_pretrained(cfg: SAMPretrainConfig, size: int, progress: bool = False, mask_prompt: str = "none") -> Path:
    """The cached pre-trained tiny SAM for these settings, trained (and its report written) on first use. Under
    torchrun rank 0 decides whether the cache exists, all ranks train, rank 0 writes, and every rank returns only
    once the file is there."""
    path = cache_path(cfg, size, mask_prompt)
    if broadcast_object(path.is_file()):
        return path
    # the global RNG is left as a cache hit leaves it, so a run that pre-trains and one that finds the cache go on
    # identically (the adapter's initialisation draws from it)
    with torch.random.fork_rng(devices=[]):
        model, report = pretrain_tiny_sam(cfg, size, progress, mask_prompt)
    if dist_info().is_main:
        atomic_torch_save({k: v.cpu() for k, v in model.sam.state_dict().items()}, path)
        path.with_suffix(".json").write_text(json.dumps(report, indent=2))
        print(f"[aslseg] pre-trained tiny SAM ({report['seconds']} s): held-out Dice {report['heldout_dice']:.3f} "
              f"vs inscribed ellipse {report['ellipse_dice']:.3f} -> {path}")
    barrier()
    return path
