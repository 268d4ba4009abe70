"""Weak (sparse) labels from a full mask: point, scribble, noisy scribble, box, rotated box, block.

The official generator is not released; the rules follow the examples of the paper's label figure
(``image/label.png`` of the official repository) and are otherwise ours:

- classes are nested structures: class ``c`` (1..C-1) has the object ``O_c = {1 <= mask <= c}`` (binary: the
  foreground; fundus: cup, then disc) and the region ``R_c = {mask == c}`` (fundus rim = disc minus cup);
  the background object is the outermost ``O_{C-1}`` and its region ``R_0 = {mask == 0}``;
- ``keypoint``: a "+" of four tiny discs per class at radius ``(r_{c-1} + r_c) / 2`` around the centroid of
  ``O_c`` (r = equivalent radius), background at ``1.5 r_out``; random rotation of the "+";
- ``scribble``: per class a 1-px curve at depth ``0.3 (r_c - r_{c-1})`` inside ``O_c`` with one random gap, and a
  background frame at distance ``0.25 r_out`` outside the object broken into four strokes;
- ``scribble_noisy``: the scribble shifted (3-6 % of the image side), rotated (up to 15 degrees) and
  elastically jittered; the ONLY label type that may be wrong (never clipped);
- ``box``: background outside the tight box of the outer object; per class the box core (60 % of the box)
  inside ``R_c``; ``rotated`` uses ``cv2.minAreaRect`` (endoscopy site C of the paper);
- ``block``: background outside the object dilated by ``0.25 r_out`` (rounded), per class the core of ``R_c``
  deeper than 20 % of its thickness; the band in between unlabelled.

Every mark except the noisy scribble is clipped to the ground-truth region of its class, so labels are sparse but
correct. Output: uint8 ``(H, W)`` with ``0..C-1`` labelled and ``C`` unlabelled; deterministic given the seed.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from scipy import ndimage

from common.synthetic import as_rng, smooth_field

__all__ = ["WEAK_TYPES", "SPARSITY", "make_weak_label", "all_weak_labels"]

WEAK_TYPES = ("scribble", "scribble_noisy", "keypoint", "block", "box")

# Geometry of the marks (ours). ``default``: the rules of the module docstring. ``sparse``: less of each object is
# marked and the background marks keep further away, so pCE leaves a wider band unconstrained: the keypoint
# background "+" at 2.5 r, the scribble a half ring and its background frame at 0.6 r in four short strokes, the
# noisy scribble shifted 8-14 % and rotated up to 30 degrees, the box core 30 % and the background only beyond the
# box grown by 15 % of its size, the block background beyond 0.4 r and its core deeper than 35 %.
SPARSITY = {
    "default": dict(kp_bg=1.5, scr_gap=60.0, frame=0.25, frame_gap=20.0, shift=(0.03, 0.06), rot=15.0, box_core=0.6,
                    box_grow=0.0, block_margin=0.25, block_depth=0.2),
    "sparse": dict(kp_bg=2.5, scr_gap=180.0, frame=0.6, frame_gap=60.0, shift=(0.08, 0.14), rot=30.0, box_core=0.3,
                   box_grow=0.15, block_margin=0.4, block_depth=0.35),
}


def _objects(mask: np.ndarray, num_classes: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """[(class, object O_c, region R_c)] for c = 1..C-1 with non-empty objects."""
    out = []
    for c in range(1, num_classes):
        obj = (mask >= 1) & (mask <= c)
        if obj.any():
            out.append((c, obj, mask == c))
    return out


def _radius(obj: np.ndarray) -> float:
    return math.sqrt(max(obj.sum(), 1) / math.pi)


def _centroid(obj: np.ndarray) -> tuple[float, float]:
    rows, cols = np.nonzero(obj)
    return float(rows.mean()), float(cols.mean())


def _disc(shape: tuple[int, int], center: tuple[float, float], radius: float) -> np.ndarray:
    rr, cc = np.ogrid[: shape[0], : shape[1]]
    return (rr - center[0]) ** 2 + (cc - center[1]) ** 2 <= radius**2


def _angles(shape: tuple[int, int], center: tuple[float, float]) -> np.ndarray:
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    return np.arctan2(rr - center[0], cc - center[1])


def _gap_free(angles: np.ndarray, starts: list[float], width: float) -> np.ndarray:
    keep = np.ones(angles.shape, bool)
    for s in starts:
        keep &= ((angles - s) % (2 * math.pi)) > width
    return keep


def _keypoint(mask: np.ndarray, num_classes: int, rng: np.random.Generator, geo: dict) -> np.ndarray:
    label = np.full(mask.shape, num_classes, np.uint8)
    objs = _objects(mask, num_classes)
    if not objs:
        return label
    dot = max(1.0, mask.shape[0] / 128)
    theta0 = rng.uniform(0, math.pi / 2)
    outer = objs[-1][1]
    cy, cx = _centroid(outer)
    prev_r = 0.0
    rings = []
    for c, obj, region in objs:
        r = _radius(obj)
        rings.append((c, region, _centroid(obj), 0.5 * (prev_r + r)))
        prev_r = r
    rings.append((0, mask == 0, (cy, cx), geo["kp_bg"] * _radius(outer)))
    for c, region, (py, px), rho in rings:
        for k in range(4):
            t = theta0 + k * math.pi / 2
            spot = _disc(mask.shape, (py + rho * math.sin(t), px + rho * math.cos(t)), dot) & region
            label[spot] = c
    return label


def _ring(obj: np.ndarray, depth: float, inside: bool) -> np.ndarray:
    dist = ndimage.distance_transform_edt(obj if inside else ~obj)
    return (dist > depth - 0.5) & (dist <= depth + 0.5)


def _scribble(mask: np.ndarray, num_classes: int, rng: np.random.Generator, geo: dict) -> np.ndarray:
    label = np.full(mask.shape, num_classes, np.uint8)
    objs = _objects(mask, num_classes)
    if not objs:
        return label
    prev_r = 0.0
    for c, obj, region in objs:
        r = _radius(obj)
        ring = _ring(obj, max(1.0, 0.3 * (r - prev_r)), inside=True)
        prev_r = r
        keep = _gap_free(_angles(mask.shape, _centroid(obj)), [rng.uniform(-math.pi, math.pi)],
                          math.radians(geo["scr_gap"]))
        label[ring & keep & region] = c
    outer = objs[-1][1]
    frame = _ring(outer, max(2.0, geo["frame"] * _radius(outer)), inside=False)
    start = rng.uniform(-math.pi, math.pi)
    gaps = [start + k * math.pi / 2 for k in range(4)]
    strokes = _gap_free(_angles(mask.shape, _centroid(outer)), gaps, math.radians(geo["frame_gap"]))
    label[frame & strokes & (mask == 0)] = 0
    return label


def _perturb(label: np.ndarray, num_classes: int, rng: np.random.Generator, geo: dict) -> np.ndarray:
    """Shift, rotate and elastically jitter the marks (nearest neighbour), WSL4MIS-style noisy scribbles."""
    h, w = label.shape
    marked = np.argwhere(label != num_classes)
    center = marked.mean(0) if len(marked) else np.array([h / 2, w / 2])
    angle = math.radians(rng.uniform(-geo["rot"], geo["rot"]))
    direction = rng.uniform(0, 2 * math.pi)
    shift = rng.uniform(*geo["shift"]) * np.array([h * math.sin(direction), w * math.cos(direction)])
    rr, cc = np.mgrid[:h, :w].astype(np.float64)
    dy, dx = rr - center[0] - shift[0], cc - center[1] - shift[1]
    src_r = center[0] + dy * math.cos(angle) - dx * math.sin(angle)
    src_c = center[1] + dy * math.sin(angle) + dx * math.cos(angle)
    amp = 0.02 * h
    src_r += amp * (2 * smooth_field((h, w), h / 10, rng) - 1)
    src_c += amp * (2 * smooth_field((h, w), h / 10, rng) - 1)
    return ndimage.map_coordinates(label, [src_r, src_c], order=0, mode="constant", cval=num_classes).astype(np.uint8)


def _box_poly(obj: np.ndarray, rotated: bool, scale: float) -> np.ndarray:
    """Filled (rotated) bounding box of ``obj`` scaled by ``scale`` about its centre (bool mask)."""
    points = cv2.findNonZero(obj.astype(np.uint8))
    if rotated:
        (cx, cy), (bw, bh), ang = cv2.minAreaRect(points)
    else:
        x, y, bw, bh = cv2.boundingRect(points)
        cx, cy, ang = x + (bw - 1) / 2, y + (bh - 1) / 2, 0.0
        bw, bh = bw - 1 + 1e-3, bh - 1 + 1e-3
    corners = cv2.boxPoints(((cx, cy), (bw * scale, bh * scale), ang))
    out = np.zeros(obj.shape, np.uint8)
    cv2.fillPoly(out, [np.round(corners).astype(np.int32)], 1)
    return out.astype(bool)


def _box(mask: np.ndarray, num_classes: int, rotated: bool, geo: dict) -> np.ndarray:
    label = np.full(mask.shape, num_classes, np.uint8)
    objs = _objects(mask, num_classes)
    if not objs:
        label[:] = 0
        return label
    outside = ~ndimage.binary_dilation(_box_poly(objs[-1][1], rotated, 1.0 + geo["box_grow"]), iterations=1)
    label[outside & (mask == 0)] = 0
    for c, obj, region in objs:
        label[_box_poly(obj, rotated, geo["box_core"]) & region] = c
    return label


def _block(mask: np.ndarray, num_classes: int, geo: dict) -> np.ndarray:
    label = np.full(mask.shape, num_classes, np.uint8)
    objs = _objects(mask, num_classes)
    if not objs:
        label[:] = 0
        return label
    outer = objs[-1][1]
    margin = max(2.0, geo["block_margin"] * _radius(outer))
    label[(ndimage.distance_transform_edt(~outer) > margin) & (mask == 0)] = 0
    for c, _, region in objs:
        depth = ndimage.distance_transform_edt(region)
        label[(depth > geo["block_depth"] * depth.max()) & region] = c
    return label


def make_weak_label(mask: np.ndarray, kind: str, num_classes: int, seed: int | np.random.Generator,
                    rotated_box: bool = False, sparsity: str = "default") -> np.ndarray:
    """The ``kind`` weak label of a full ``(H, W)`` mask (module docstring); ``C`` marks unlabelled pixels.
    ``sparsity``: a key of ``SPARSITY``."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    if sparsity not in SPARSITY:
        raise ValueError(f"unknown weak-label sparsity {sparsity!r}; expected one of {list(SPARSITY)}")
    geo = SPARSITY[sparsity]
    rng = as_rng(seed)
    if kind == "keypoint":
        return _keypoint(mask, num_classes, rng, geo)
    if kind == "scribble":
        return _scribble(mask, num_classes, rng, geo)
    if kind == "scribble_noisy":
        return _perturb(_scribble(mask, num_classes, rng, geo), num_classes, rng, geo)
    if kind == "box":
        return _box(mask, num_classes, rotated_box, geo)
    if kind == "block":
        return _block(mask, num_classes, geo)
    if kind == "mask":
        return mask.astype(np.uint8)
    raise ValueError(f"unknown weak label type {kind!r}; expected one of {list(WEAK_TYPES)} or 'mask'")


def all_weak_labels(mask: np.ndarray, num_classes: int, seed: int, rotated_box: bool = False,
                    kinds: tuple[str, ...] = WEAK_TYPES, sparsity: str = "default") -> dict[str, np.ndarray]:
    """Every weak label type of one mask, each from its own deterministic stream ``(seed, type index)``."""
    return {kind: make_weak_label(mask, kind, num_classes, np.random.default_rng([seed, i]), rotated_box, sparsity)
            for i, kind in enumerate(kinds)}
