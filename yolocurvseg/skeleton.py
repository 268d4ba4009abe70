"""Noisy skeleton annotations: reader, simulator with the DCA1 statistics, fg+bg scribble recipe.

YoloCurvSeg noisy skeletons (``datasets/README.md`` of llmir/YoloCurvSeg): the single annotation is a foreground-only,
1-pixel-wide, hand-drawn skeleton; it is used only to build the inpainting mask. The weakly supervised baselines use
the foreground+background variant, obtained by the release's recipe: dilate the fg skeleton, invert, skeletonize
(``skimage.morphology.skeletonize``) -> bg skeleton.

Simulator (OURS), reproducing the statistics measured on the 134 released DCA1 skeletons (skeleton/GT
pixel ratio 0.17 +- 0.04, 91 % of skeleton pixels inside the vessel, wobble, gaps, spurs): skeletonize the GT, drop
short terminal branches with probability ``p_prune``, displace laterally by a smooth random field whose amplitude
is capped by the local vessel radius, cut random gaps, add short spurs, re-skeletonize to 1-px width.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage
from skimage.morphology import skeletonize, thin

from common.readers import ImageReadError, read_image
from common.synthetic import as_rng, smooth_field

__all__ = ["SkeletonError", "read_noisy_skeleton", "validate_skeleton", "SkeletonNoise", "simulate_noisy_skeleton",
           "skeleton_stats", "scribble_from_skeleton", "FG", "BG", "UNLABELLED"]

FG, BG, UNLABELLED = 1, 0, 2  # WSL4MIS scribble convention (0 bg, 1 fg, 2 unlabelled)
_N8 = np.ones((3, 3), np.uint8)


class SkeletonError(ValueError):
    """A noisy-skeleton annotation that cannot be used; the message names the file and the fix."""


def validate_skeleton(skeleton: np.ndarray, image_shape: tuple[int, ...] | None, source: str = "skeleton"
                      ) -> np.ndarray:
    """Check a ``(H, W)`` skeleton array (values {0, 255} or {0, 1}); returns it as bool."""
    sk = np.asarray(skeleton)
    if sk.ndim != 2:
        raise SkeletonError(f"{source}: a skeleton must be a 2D grey image, got shape {sk.shape}")
    if image_shape is not None and tuple(sk.shape) != tuple(image_shape[:2]):
        raise SkeletonError(f"{source}: skeleton size {sk.shape} differs from its image size {tuple(image_shape[:2])}; "
                            f"draw the skeleton on the image itself (same width and height)")
    values = np.unique(sk)
    if not (set(values.tolist()) <= {0, 255} or set(values.tolist()) <= {0, 1}):
        raise SkeletonError(f"{source}: mask values {values[:8].tolist()} are outside {{0, 255}}; save the skeleton "
                            f"as a binary PNG (0 background, 255 skeleton), without anti-aliasing")
    out = sk > 0
    if not out.any():
        raise SkeletonError(f"{source}: the skeleton is empty; draw at least one vessel centreline")
    return out


def read_noisy_skeleton(path: str | Path, image_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Read a foreground-only skeleton PNG (mode L, {0, 255}) as a bool ``(H, W)`` array; checks size and values."""
    try:
        arr = read_image(path, allowed_modes=("L", "1", "P"))
    except ImageReadError as exc:
        raise SkeletonError(str(exc)) from exc
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    return validate_skeleton(arr, image_shape, str(path))


@dataclass
class SkeletonNoise:
    """Simulator settings (OURS). Lengths in pixels."""

    prune_length: int = 10       # terminal branches shorter than this may be dropped
    p_prune: float = 0.5
    wobble: float = 1.2          # displacement amplitude (px, std), capped by the local vessel radius + 0.5
    wobble_scale: float = 6.0    # smoothness of the displacement field (sigma, px)
    gap_per_50px: float = 0.3    # expected number of gaps per 50 skeleton pixels
    gap_length: tuple[int, int] = (2, 5)
    spur_per_100px: float = 0.5  # expected number of spurs per 100 skeleton pixels
    spur_length: tuple[int, int] = (3, 7)


def _endpoints(sk: np.ndarray) -> np.ndarray:
    nb = ndimage.convolve(sk.astype(np.uint8), _N8, mode="constant") - sk
    return sk & (nb == 1)


def _junctions(sk: np.ndarray) -> np.ndarray:
    nb = ndimage.convolve(sk.astype(np.uint8), _N8, mode="constant") - sk
    return sk & (nb >= 3)


def _prune(sk: np.ndarray, cfg: SkeletonNoise, rng: np.random.Generator) -> np.ndarray:
    """Drop terminal branches (endpoint .. junction) shorter than ``prune_length`` with probability ``p_prune``."""
    branches = sk & ~ndimage.binary_dilation(_junctions(sk), _N8)
    lab, n = ndimage.label(branches, _N8)
    if n == 0:
        return sk
    sizes = ndimage.sum(branches, lab, index=np.arange(1, n + 1))
    ends = np.unique(lab[_endpoints(sk) & branches])
    out = sk.copy()
    for k in ends[ends > 0]:
        touches_junction = ndimage.binary_dilation(lab == k, _N8, iterations=2) & _junctions(sk)
        if sizes[k - 1] < cfg.prune_length and touches_junction.any() and rng.random() < cfg.p_prune:
            out[lab == k] = False
    return out


def simulate_noisy_skeleton(mask: np.ndarray, rng: int | np.random.Generator | None = None,
                            cfg: SkeletonNoise | None = None) -> np.ndarray:
    """A hand-drawn-looking noisy skeleton of a binary vessel ``mask`` ``(H, W)``; returns uint8 {0, 255}."""
    rng = as_rng(rng)
    cfg = cfg or SkeletonNoise()
    gt = np.asarray(mask) > 0
    if not gt.any():
        raise SkeletonError("cannot simulate a skeleton from an empty mask")
    h, w = gt.shape
    sk = _prune(skeletonize(gt), cfg, rng)
    radius = ndimage.distance_transform_edt(gt)
    local = ndimage.grey_dilation(radius * sk, size=(5, 5))
    amp = np.minimum(cfg.wobble, local + 0.5)

    def unit_field() -> np.ndarray:
        f = smooth_field((h, w), cfg.wobble_scale, rng)
        return (f - f.mean()) / (f.std() + 1e-8)

    dy, dx = unit_field() * amp, unit_field() * amp
    ys, xs = np.nonzero(sk)
    ny = np.clip(np.round(ys + dy[ys, xs]), 0, h - 1).astype(int)
    nx = np.clip(np.round(xs + dx[ys, xs]), 0, w - 1).astype(int)
    moved = np.zeros_like(sk)
    moved[ny, nx] = True
    moved = skeletonize(ndimage.binary_closing(moved, _N8) | moved)
    # gaps: remove short runs around random skeleton pixels
    pts = np.argwhere(moved)
    n_gaps = rng.poisson(cfg.gap_per_50px * len(pts) / 50.0)
    for idx in rng.choice(len(pts), size=min(n_gaps, len(pts)), replace=False) if len(pts) else []:
        r = int(rng.integers(cfg.gap_length[0], cfg.gap_length[1] + 1)) // 2 + 1
        y, x = pts[idx]
        moved[max(y - r, 0): y + r, max(x - r, 0): x + r] = False
    # spurs: short straight strokes leaving the skeleton at random angles
    pts = np.argwhere(moved)
    n_spurs = rng.poisson(cfg.spur_per_100px * len(pts) / 100.0)
    canvas = moved.astype(np.uint8)
    for idx in rng.choice(len(pts), size=min(n_spurs, len(pts)), replace=False) if len(pts) else []:
        y, x = pts[idx]
        ang = rng.uniform(0, 2 * np.pi)
        length = rng.integers(cfg.spur_length[0], cfg.spur_length[1] + 1)
        cv2.line(canvas, (int(x), int(y)), (int(round(x + length * np.cos(ang))), int(round(y + length * np.sin(ang)))),
                 1, thickness=1, lineType=cv2.LINE_8)
    out = thin(canvas > 0)
    if not out.any():  # tiny masks: fall back to the plain skeleton
        out = skeletonize(gt)
    return out.astype(np.uint8) * 255


def skeleton_stats(skeleton: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """The DCA1 statistics (README "Design notes"): pixel counts, ratio to GT, fraction inside GT, endpoints,
    junction pixels, and ``blocks2x2`` (number of fully set 2x2 blocks; 0 for a 1-px-wide skeleton)."""
    sk = np.asarray(skeleton) > 0
    gt = np.asarray(mask) > 0
    blocks = sk[:-1, :-1] & sk[1:, :-1] & sk[:-1, 1:] & sk[1:, 1:]
    return {
        "skeleton_px": float(sk.sum()),
        "gt_px": float(gt.sum()),
        "ratio_to_gt": float(sk.sum() / max(gt.sum(), 1)),
        "inside_gt": float((sk & gt).sum() / max(sk.sum(), 1)),
        "endpoints": float(_endpoints(sk).sum()),
        "junction_px": float(_junctions(sk).sum()),
        "blocks2x2": float(blocks.sum()),
    }


def scribble_from_skeleton(skeleton: np.ndarray, bg_dilation: int = 8) -> np.ndarray:
    """Release recipe for the fg+bg noisy skeleton: dilate the fg skeleton by ``bg_dilation`` px, invert,
    skeletonize -> bg skeleton. Returns uint8 ``(H, W)`` labels: 1 fg, 0 bg, 2 unlabelled (WSL4MIS convention)."""
    fg = np.asarray(skeleton) > 0
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * bg_dilation + 1, 2 * bg_dilation + 1))
    dilated = cv2.dilate(fg.astype(np.uint8), disk) > 0
    bg = skeletonize(~dilated)
    out = np.full(fg.shape, UNLABELLED, np.uint8)
    out[bg] = BG
    out[fg] = FG
    return out
