"""Synthetic fundus photographs in the published layouts of REFUGE, GAMMA, PALM, DRIVE, CHASE_DB1 and HRF.

The images carry the spatial prior JOINEDTrans exploits (abstract: "the positional relationship among vessel,
OD/OC, and fovea"): the main vessels leave the optic disc, the temporal arcades curve around the fovea at about two
disc diameters (DD), small branches stop at an avascular zone of 0.4 DD around it, and the fovea lies 2.5 DD
temporal of the disc and a little below; left and right eyes are mirror images. So the disc is where the vessels
converge and the fovea is the centre of the arcades. Hard cases hide one landmark's own appearance while keeping
the vessels, so that only the prior locates it:

- ``fovea_occluded``: no foveal dip; a 1.2 DD lesion over the fovea (its centre off the fovea), arcades intact;
- ``fovea_low_quality`` / ``disc_low_quality``: blur and haze on the half of the image holding that landmark, the
  main vessels still visible;
- ``disc_degraded``: disc contrast down to 30-50 % plus a disc-sized bright decoy where no vessels converge.

Appearance: circular field of view, orange-red retina, low-frequency illumination, per-image colour gain (another
camera, i.e. another gain and size, for validation/test), drusen and haemorrhages, peripapillary atrophy, noise,
JPEG. Disc: yellow vertical ellipse, DD = 0.12-0.16 of the FOV diameter; cup whiter with lower contrast, vertical
cup/disc ratio 0.3-0.8 (>= 0.6 in the Glaucoma class).

    python synth.py --out data/synthetic/joinedtrans [key=value ...]   # the six trees, seeded
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from common.config import from_dict, to_dict
from common.datasets import ensure_dataset
from common.synthetic import as_rng, ellipse_mask
from joinedtrans.settings import SynthConfig

__all__ = ["Geometry", "HARD_KINDS", "sample_geometry", "vessel_segments", "render_vessels", "render_fundus",
           "write_refuge", "write_gamma", "write_palm", "write_vessel_sets", "write_all", "ensure_synthetic",
           "write_table", "main"]

HARD_KINDS = ("fovea_occluded", "fovea_low_quality", "disc_low_quality", "disc_degraded")
DISC_HARD = ("disc_low_quality", "disc_degraded")
FOVEA_HARD = ("fovea_occluded", "fovea_low_quality")


@dataclass
class Geometry:
    """Landmarks of one synthetic eye, in pixels (x right, y down). ``side`` = +1 when the disc is right of the
    fovea (right eye), -1 otherwise. ``disc_axes``/``cup_axes`` = (vertical, horizontal) semi-axes."""

    width: int
    height: int
    fov_centre: tuple[float, float]
    fov_radius: float
    side: int
    dd: float
    disc: tuple[float, float]
    disc_axes: tuple[float, float]
    cup: tuple[float, float]
    cup_axes: tuple[float, float]
    fovea: tuple[float, float]


def sample_geometry(rng: np.random.Generator, width: int, height: int, glaucoma: bool) -> Geometry:
    """Random eye: disc size, cup ratio, left/right, fovea 2.5 DD temporal and ~0.3 DD below the disc."""
    cx, cy = width / 2 + rng.normal(0, 0.01 * width), height / 2 + rng.normal(0, 0.01 * height)
    radius = 0.47 * min(width, height)
    dd = rng.uniform(0.12, 0.16) * 2 * radius
    side = int(rng.choice([-1, 1]))
    gap = rng.uniform(2.3, 2.7) * dd
    mid_x, mid_y = cx + rng.normal(0, 0.15 * dd), cy + rng.normal(0, 0.3 * dd)
    drop = rng.uniform(0.15, 0.45) * dd
    disc = (mid_x + side * gap / 2, mid_y - drop / 2)
    fovea = (mid_x - side * gap / 2, mid_y + drop / 2)
    vcdr = rng.uniform(0.6, 0.8) if glaucoma else rng.uniform(0.3, 0.6)
    disc_axes = (dd / 2, dd / 2 * rng.uniform(0.85, 0.95))
    cup_axes = (vcdr * disc_axes[0], vcdr * disc_axes[1] * rng.uniform(0.9, 1.05))
    shift = (disc_axes[0] - cup_axes[0]) * rng.uniform(0.0, 0.3)
    cup = (disc[0] - side * shift, disc[1] + rng.normal(0, 0.03 * dd))
    return Geometry(width, height, (cx, cy), radius, side, dd, disc, disc_axes, cup, cup_axes, fovea)


def _polyline(points: np.ndarray, width0: float, width1: float) -> list[tuple[float, float, float, float, float]]:
    widths = np.linspace(width0, width1, len(points) - 1)
    return [(*points[i], *points[i + 1], float(widths[i])) for i in range(len(points) - 1)]


def _branch(rng: np.random.Generator, start: np.ndarray, target: np.ndarray, stop: float, width: float,
            n: int = 6) -> list:
    """A wobbly branch from ``start`` towards ``target`` that ends ``stop`` px before it."""
    vec = target - start
    length = max(np.linalg.norm(vec) - stop, 0.0)
    if length < 3:
        return []
    direction = vec / np.linalg.norm(vec)
    normal = np.array([-direction[1], direction[0]])
    t = np.linspace(0, length, n)
    wobble = np.cumsum(rng.normal(0, 0.04 * length / n, n))
    pts = start + t[:, None] * direction + wobble[:, None] * normal
    return _polyline(pts, width, max(0.5, 0.5 * width))


def vessel_segments(g: Geometry, rng: np.random.Generator) -> tuple[list, list]:
    """``(main, small)`` vessel segments ``(x0, y0, x1, y1, half_width)``: two temporal arcades around the fovea,
    two nasal trunks, and branches (towards the fovea, stopping at 0.4 DD from it; outwards to the periphery)."""
    disc, fovea = np.array(g.disc), np.array(g.fovea)
    scale = g.dd / 40.0
    w_main = 1.6 * scale
    rel = disc - fovea
    r_disc, a_disc = float(np.hypot(*rel)), math.atan2(rel[1], rel[0])
    main, small = [], []
    for sign in (-1.0, 1.0):  # superior (-) and inferior (+) temporal arcade, in image coordinates
        sweep = np.linspace(0, math.radians(rng.uniform(140, 165)), 24)
        radius = r_disc + (rng.uniform(1.8, 2.2) * g.dd - r_disc) * np.clip(sweep / 0.9, 0, 1)
        angle = a_disc + sign * sweep
        pts = fovea + np.stack([radius * np.cos(angle), radius * np.sin(angle)], 1)
        pts[0] = disc
        main += _polyline(pts, w_main, 0.55 * w_main)
        for k in rng.choice(np.arange(4, 22), size=5, replace=False):
            stop = 0.4 * g.dd + rng.uniform(0.3, 1.0) * g.dd  # the avascular zone ends branches at >= 0.4 DD
            small += _branch(rng, pts[k], fovea + rng.normal(0, 0.3 * g.dd, 2), stop, 0.5 * w_main)
            out = pts[k] + (pts[k] - fovea) * rng.uniform(0.4, 0.8)
            small += _branch(rng, pts[k], out, 0.0, 0.55 * w_main)
    for sign in (-1.0, 1.0):  # nasal trunks
        angle = (0.0 if g.side > 0 else math.pi) + sign * rng.uniform(0.5, 1.1)
        end = disc + 2.2 * g.dd * np.array([math.cos(angle), math.sin(angle)])
        main += _branch(rng, disc, end, 0.0, 0.8 * w_main, n=8)
        small += _branch(rng, disc + 0.6 * (end - disc), end + rng.normal(0, 0.8 * g.dd, 2), 0.0, 0.45 * w_main)
    return main, small


def render_vessels(shape: tuple[int, int], segments: Sequence, supersample: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Anti-aliased intensity in [0, 1] and a boolean mask (coverage >= 0.5) of ``segments`` on ``shape``."""
    h, w = shape
    big = np.zeros((h * supersample, w * supersample), np.float32)
    for x0, y0, x1, y1, half in segments:
        p0 = (int(round((x0 + 0.5) * supersample)), int(round((y0 + 0.5) * supersample)))
        p1 = (int(round((x1 + 0.5) * supersample)), int(round((y1 + 0.5) * supersample)))
        cv2.line(big, p0, p1, 1.0, thickness=max(1, int(round(2 * half * supersample))), lineType=cv2.LINE_8)
    cover = cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA)
    return cover, cover >= 0.5


def _blend(img: np.ndarray, weight: np.ndarray, colour: Sequence[float]) -> None:
    img += weight[..., None] * (np.asarray(colour, np.float32) - img)


def _haze(img: np.ndarray, region: np.ndarray, rng: np.random.Generator, scale: float) -> None:
    blurred = cv2.GaussianBlur(img, (0, 0), sigmaX=scale)
    haze = np.array([0.62, 0.48, 0.38], np.float32) * rng.uniform(0.9, 1.1)
    soft = cv2.GaussianBlur(region.astype(np.float32), (0, 0), sigmaX=2 * scale)[..., None]
    img[:] = img * (1 - soft) + soft * (0.35 * blurred + 0.65 * haze)


def _half(g: Geometry, landmark: tuple[float, float]) -> np.ndarray:
    """The half of the image (split half-way between disc and fovea) that holds ``landmark``."""
    xs = np.arange(g.width)[None, :].repeat(g.height, 0)
    mid = (g.disc[0] + g.fovea[0]) / 2
    return (xs > mid) if landmark[0] > mid else (xs <= mid)


def render_fundus(g: Geometry, rng: np.random.Generator, hard: str = "", gain: Sequence[float] = (1, 1, 1),
                  palm: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGB uint8 image, 0/128/255 disc/cup mask, boolean vessel mask of eye ``g`` (``hard`` in HARD_KINDS or "")."""
    h, w = g.height, g.width
    shape = (h, w)
    rows, cols = np.mgrid[:h, :w].astype(np.float32)
    r_fov = np.hypot(cols - g.fov_centre[0], rows - g.fov_centre[1]) / g.fov_radius
    illum = 0.75 + 0.35 * _low_frequency(shape, 5, rng) - 0.25 * r_fov**2
    base = np.array([0.78, 0.36, 0.16], np.float32) * rng.uniform(0.92, 1.08, 3).astype(np.float32)
    img = base[None, None] * illum[..., None]
    texture = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), 2.0)
    img *= (1 + 0.25 * texture)[..., None]
    scale = g.dd / 40.0
    disc_mask = ellipse_mask(shape, g.disc[::-1], g.disc_axes)
    cup_mask = ellipse_mask(shape, g.cup[::-1], g.cup_axes) & disc_mask
    if palm or rng.random() < 0.25:  # peripapillary atrophy: a pale crescent on the temporal side
        ring = ellipse_mask(shape, g.disc[::-1], (g.disc_axes[0] * 1.35, g.disc_axes[1] * 1.6)) & ~disc_mask
        ring &= (cols - g.disc[0]) * g.side < 0
        _blend(img, cv2.GaussianBlur(ring.astype(np.float32), (0, 0), 1.5 * scale) * 0.55, (0.85, 0.7, 0.55))
    contrast = rng.uniform(0.3, 0.5) if hard == "disc_degraded" else 1.0
    disc_w = cv2.GaussianBlur(disc_mask.astype(np.float32), (0, 0), 1.0 * scale)
    _blend(img, disc_w * 0.8 * contrast, (0.98, 0.82, 0.45))
    cup_w = cv2.GaussianBlur(cup_mask.astype(np.float32), (0, 0), 1.5 * scale)
    _blend(img, cup_w * 0.45 * contrast, (1.0, 0.95, 0.8))
    if hard == "disc_degraded":  # a disc-sized decoy where no vessels converge
        decoy = _decoy_centre(g, rng)
        dm = ellipse_mask(shape, decoy[::-1], g.disc_axes)
        _blend(img, cv2.GaussianBlur(dm.astype(np.float32), (0, 0), 1.0 * scale) * 0.7, (0.98, 0.84, 0.5))
    d_fov = np.hypot(cols - g.fovea[0], rows - g.fovea[1])
    if hard != "fovea_occluded" and not (palm and rng.random() < 0.3):
        img *= (1 - 0.45 * np.exp(-(d_fov / (0.35 * g.dd)) ** 2))[..., None]
        _blend(img, 0.6 * np.exp(-(d_fov / (0.05 * g.dd + 0.6)) ** 2), (0.95, 0.85, 0.75))
    _lesions(img, g, rng, shape)
    if hard in ("fovea_low_quality", "disc_low_quality"):
        small_only = img.copy()
        _haze(small_only, _half(g, g.fovea if hard == "fovea_low_quality" else g.disc), rng, 3.0 * scale)
        img = small_only
    vessels = _draw_vessels(img, g, rng, hard, scale)
    if hard == "fovea_occluded":  # a 1.2 DD lesion over the fovea, drawn over the vessels; centre off the fovea
        offset = rng.normal(0, 0.15 * g.dd, 2)
        occ = ellipse_mask(shape, (g.fovea[1] + offset[1], g.fovea[0] + offset[0]), (0.6 * g.dd, 0.6 * g.dd))
        _blend(img, cv2.GaussianBlur(occ.astype(np.float32), (0, 0), 2 * scale) * 0.9,
               rng.choice([(0.9, 0.8, 0.5), (0.35, 0.12, 0.08)]))
    img = img * np.asarray(gain, np.float32)[None, None]
    img = img + rng.normal(0, 0.015, img.shape).astype(np.float32)
    img *= (r_fov <= 1.0)[..., None]
    rgb = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    mask = np.full(shape, 255, np.uint8)
    mask[disc_mask] = 128
    mask[cup_mask] = 0
    if palm:
        mask[disc_mask] = 0
    return rgb, mask, vessels & (r_fov <= 1.0)


def _draw_vessels(img: np.ndarray, g: Geometry, rng: np.random.Generator, hard: str, scale: float) -> np.ndarray:
    """Blend the arcade and small vessels of eye ``g`` into ``img`` (in place; faded in a low-quality half);
    returns the boolean vessel mask."""
    shape = img.shape[:2]
    main, small = vessel_segments(g, rng)
    v_small, m_small = render_vessels(shape, small)
    v_main, m_main = render_vessels(shape, main)
    vessel_colour = np.array([0.45, 0.1, 0.06], np.float32)
    if hard in ("fovea_low_quality", "disc_low_quality"):
        region = cv2.GaussianBlur(_half(g, g.fovea if hard == "fovea_low_quality" else g.disc).astype(np.float32),
                                  (0, 0), 6 * scale)
        v_small = v_small * (1 - 0.85 * region)
        v_main = v_main * (1 - 0.4 * region)
    _blend(img, 0.55 * v_small, vessel_colour)
    _blend(img, 0.75 * v_main, vessel_colour)
    return m_small | m_main


def _low_frequency(shape: tuple[int, int], cells: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth field in [0, 1]: ``cells`` x ``cells`` uniform noise, bicubically upsampled."""
    field = cv2.resize(rng.random((cells, cells)).astype(np.float32), shape[::-1], interpolation=cv2.INTER_CUBIC)
    return (field - field.min()) / (field.max() - field.min() + 1e-6)


def _decoy_centre(g: Geometry, rng: np.random.Generator) -> tuple[float, float]:
    """A point in the FOV, away from disc (> 2 DD) and fovea (> 1.5 DD), on the nasal or vertical periphery."""
    for _ in range(100):
        angle, r = rng.uniform(0, 2 * math.pi), rng.uniform(0.35, 0.8) * g.fov_radius
        p = (g.fov_centre[0] + r * math.cos(angle), g.fov_centre[1] + r * math.sin(angle))
        if math.dist(p, g.disc) > 2 * g.dd and math.dist(p, g.fovea) > 1.5 * g.dd:
            return p
    return (g.fov_centre[0], g.fov_centre[1] - 0.7 * g.fov_radius)


def _lesions(img: np.ndarray, g: Geometry, rng: np.random.Generator, shape: tuple[int, int]) -> None:
    """A few drusen (small bright yellow spots) and haemorrhages (dark red blobs) anywhere in the FOV."""
    for _ in range(int(rng.integers(0, 6))):
        angle, r = rng.uniform(0, 2 * math.pi), math.sqrt(rng.uniform(0, 0.8)) * g.fov_radius
        centre = (g.fov_centre[1] + r * math.sin(angle), g.fov_centre[0] + r * math.cos(angle))
        size = rng.uniform(0.05, 0.25) * g.dd
        blob = ellipse_mask(shape, centre, (size, size * rng.uniform(0.6, 1.4)), rng.uniform(0, 180))
        colour = (0.95, 0.85, 0.45) if rng.random() < 0.5 else (0.4, 0.08, 0.05)
        _blend(img, cv2.GaussianBlur(blob.astype(np.float32), (0, 0), 0.8) * 0.6, colour)


# --------------------------------------------------------------------------------------------- writers
def write_table(path: Path, rows: list[dict]) -> None:
    """A fovea table in the format its suffix names (``.xlsx`` through pandas/openpyxl, ``.csv``)."""
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows)
    if path.suffix.lower() == ".xlsx":
        frame.to_excel(path, index=False)
    else:
        frame.to_csv(path, index=False)


def _save(path: Path, array: np.ndarray, quality: int = 92) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if path.suffix.lower() in (".jpg", ".jpeg") else []
    if not cv2.imwrite(str(path), array, params):
        raise OSError(f"could not write {path}")


def _hard_kinds(rng: np.random.Generator, n: int, fraction: float) -> list[str]:
    k = int(round(n * fraction))
    kinds = [HARD_KINDS[i % len(HARD_KINDS)] for i in range(k)] + [""] * (n - k)
    return [kinds[i] for i in rng.permutation(n)]


def _eye(rng: np.random.Generator, size: tuple[int, int], glaucoma: bool, hard: str, gain, palm: bool = False):
    g = sample_geometry(rng, size[0], size[1], glaucoma)
    image, mask, vessels = render_fundus(g, rng, hard, gain, palm)
    return g, image, mask, vessels


def _gain(rng: np.random.Generator, camera: int) -> np.ndarray:
    centre = np.array([1.0, 1.0, 1.0]) if camera == 0 else np.array([0.9, 1.08, 1.15])
    return centre * rng.uniform(0.9, 1.1, 3)


def write_refuge(root: Path, cfg: SynthConfig, rng: np.random.Generator) -> None:
    """``REFUGE/`` with Training400 (2 classes), REFUGE-Validation400(-GT), Test400 + REFUGE-Test-GT, fovea xlsx
    tables under their published names, and ``hard_cases.csv`` (split, image, kind)."""
    base, hard_rows = root / "REFUGE", []
    splits = (("train", cfg.n_train, cfg.train_size, 0, cfg.hard_train),
              ("val", cfg.n_val, cfg.test_size, 1, 0.0), ("test", cfg.n_test, cfg.test_size, 1, cfg.hard_test))
    for split, n, size, camera, hard_frac in splits:
        rows, kinds = [], _hard_kinds(rng, n, hard_frac)
        for i in range(n):
            glaucoma = i % 5 == 0
            g, image, mask, _ = _eye(rng, size, glaucoma, kinds[i], _gain(rng, camera))
            if split == "train":
                cls, name = ("Glaucoma", f"g{i + 1:04d}") if glaucoma else ("Non-Glaucoma", f"n{i + 1:04d}")
                img_rel = f"Training400/{cls}/{name}.jpg"
                mask_rel = f"Annotation-Training400/Disc_Cup_Masks/{cls}/{name}.bmp"
                rows.append({"ID": i + 1, "ImgName": f"{name}.jpg", "Fovea_X": g.fovea[0], "Fovea_Y": g.fovea[1]})
            elif split == "val":
                name = f"V{i + 1:04d}"
                img_rel = f"REFUGE-Validation400/{name}.jpg"
                mask_rel = f"REFUGE-Validation400-GT/Disc_Cup_Masks/{name}.bmp"
                rows.append({"ImgName": f"{name}.jpg", "Fovea_X": g.fovea[0], "Fovea_Y": g.fovea[1]})
            else:
                name = f"T{i + 1:04d}"
                img_rel = f"Test400/{name}.jpg"
                mask_rel = f"REFUGE-Test-GT/Disc_Cup_Masks/{'G' if glaucoma else 'N'}/{name}.bmp"
                rows.append({"ImgName": f"{name}.jpg", "Label(Glaucoma=1)": int(glaucoma), "Fovea_X": g.fovea[0],
                             "Fovea_Y": g.fovea[1]})
            _save(base / img_rel, image)
            _save(base / mask_rel, mask)
            if kinds[i]:
                hard_rows.append({"split": split, "image": img_rel, "kind": kinds[i]})
        table = {"train": "Annotation-Training400/Fovea_location.xlsx",
                 "val": "REFUGE-Validation400-GT/Fovea_locations.xlsx",
                 "test": "REFUGE-Test-GT/Glaucoma_label_and_Fovea_location.xlsx"}[split]
        write_table(base / table, rows)
    write_table(base / "hard_cases.csv", hard_rows)


def write_gamma(root: Path, cfg: SynthConfig, rng: np.random.Generator) -> None:
    """``GAMMA/task3_disc_cup_segmentation/training/{fundus color images, Disc_Cup_Mask}`` and the task-2 fovea
    table ``fovea_localization_training_GT.xlsx`` (``data`` = image id, Fovea_X, Fovea_Y)."""
    base, rows = root / "GAMMA", []
    seg = base / "task3_disc_cup_segmentation" / "training"
    for i in range(cfg.n_gamma):
        g, image, mask, _ = _eye(rng, cfg.train_size if i % 2 else cfg.test_size, i % 4 == 0, "", _gain(rng, i % 2))
        _save(seg / "fundus color images" / f"{i + 1:04d}.jpg", image)
        _save(seg / "Disc_Cup_Mask" / f"{i + 1:04d}.png", mask)
        rows.append({"data": i + 1, "Fovea_X": g.fovea[0], "Fovea_Y": g.fovea[1]})
    write_table(base / "task2_fovea_localization" / "training" / "fovea_localization_training_GT.xlsx", rows)


def write_palm(root: Path, cfg: SynthConfig, rng: np.random.Generator) -> None:
    """``PALM/PALM-Training400`` (images, ``PALM-Training400-Annotation-D&F/Disc_Masks``, ``Fovea_Location.xlsx``)
    and ``PALM-Validation400`` + ``PALM-Validation-GT``; a fovea that is not visible is written as (0, 0)."""
    base = root / "PALM"
    for split, n in (("train", cfg.n_palm), ("val", max(cfg.n_palm // 2, 2))):
        rows = []
        for i in range(n):
            prefix = "HNP"[i % 3]
            name = f"{prefix}{i + 1:04d}" if split == "train" else f"V{i + 1:04d}"
            g, image, mask, _ = _eye(rng, cfg.test_size, False, "fovea_occluded" if i % 5 == 4 else "",
                                     _gain(rng, 0), palm=True)
            fx, fy = (0.0, 0.0) if i % 5 == 4 else g.fovea
            if split == "train":
                _save(base / "PALM-Training400" / "PALM-Training400" / f"{name}.jpg", image)
                _save(base / "PALM-Training400" / "PALM-Training400-Annotation-D&F" / "Disc_Masks" / f"{name}.bmp",
                      mask)
                rows.append({"ID": i + 1, "imgName": f"{name}.jpg", "Fovea_X": fx, "Fovea_Y": fy})
            else:
                _save(base / "PALM-Validation400" / f"{name}.jpg", image)
                _save(base / "PALM-Validation-GT" / "Disc_Masks" / f"{name}.bmp", mask)
                rows.append({"imgName": f"{name}.jpg", "Label": int(prefix == "P"), "Fovea_X": fx, "Fovea_Y": fy})
        table = ("PALM-Training400/Fovea_Location.xlsx" if split == "train"
                 else "PALM-Validation-GT/PM_Label_and_Fovea_Location.xlsx")
        write_table(base / table, rows)


def _fov_mask(image: np.ndarray) -> np.ndarray:
    return (image.max(axis=2) > 0).astype(np.uint8) * 255


def write_vessel_sets(root: Path, cfg: SynthConfig, rng: np.random.Generator) -> None:
    """DRIVE (``{training,test}/{images,1st_manual,mask}``: tif, gif, gif), CHASE_DB1 (``Image_NNX.jpg``,
    ``Image_NNX_1stHO.png``), HRF (``images/``, ``manual1/``, ``mask/``); vessel masks 0/255."""
    from PIL import Image

    vs = cfg.vessel_size
    half = cfg.n_drive // 2
    for j in range(cfg.n_drive):
        split, num = ("test", j + 1) if j < half else ("training", j + 1 + max(20 - half, 0) + half)
        _, image, _, vessels = _eye(rng, (vs, vs), False, "", _gain(rng, 0))
        stem = f"{num:02d}_{split}"
        d = root / "DRIVE" / split
        (d / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(d / "images" / f"{stem}.tif")
        for sub, arr, name in (("1st_manual", vessels.astype(np.uint8) * 255, f"{num:02d}_manual1.gif"),
                               ("mask", _fov_mask(image), f"{stem}_mask.gif")):
            (d / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(d / sub / name)
    for j in range(cfg.n_chase):
        stem = f"Image_{j // 2 + 1:02d}{'LR'[j % 2]}"
        _, image, _, vessels = _eye(rng, (int(vs * 1.06), vs), False, "", _gain(rng, 1))
        _save(root / "CHASE_DB1" / f"{stem}.jpg", image)
        _save(root / "CHASE_DB1" / f"{stem}_1stHO.png", vessels.astype(np.uint8) * 255)
    for j in range(cfg.n_hrf):
        stem = f"{j // 3 + 1:02d}_{('h', 'g', 'dr')[j % 3]}"
        _, image, _, vessels = _eye(rng, (int(vs * 1.5), vs), False, "", _gain(rng, 0))
        (root / "HRF" / "manual1").mkdir(parents=True, exist_ok=True)
        (root / "HRF" / "mask").mkdir(parents=True, exist_ok=True)
        _save(root / "HRF" / "images" / f"{stem}.JPG", image)
        Image.fromarray(vessels.astype(np.uint8) * 255).save(root / "HRF" / "manual1" / f"{stem}.tif")
        Image.fromarray(_fov_mask(image)).save(root / "HRF" / "mask" / f"{stem}_mask.tif")


def write_all(root: str | Path, cfg: SynthConfig) -> Path:
    """All six trees under ``root`` (each writer its own seeded stream)."""
    root = Path(root)
    seeds = np.random.SeedSequence(cfg.seed).spawn(4)
    write_refuge(root, cfg, as_rng(np.random.default_rng(seeds[0])))
    write_gamma(root, cfg, np.random.default_rng(seeds[1]))
    write_palm(root, cfg, np.random.default_rng(seeds[2]))
    write_vessel_sets(root, cfg, np.random.default_rng(seeds[3]))
    return root


def ensure_synthetic(root: str | Path, cfg: SynthConfig) -> Path:
    """The synthetic trees at ``root``, written on first use into a folder the generator owns (never elsewhere)."""
    params = {"generator": "joinedtrans.synth/1", **to_dict(cfg)}
    return ensure_dataset(root, params, lambda folder: write_all(folder, cfg), what="synthetic fundus set")


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description="Write the synthetic REFUGE/GAMMA/PALM/DRIVE/CHASE_DB1/HRF trees")
    parser.add_argument("--out", default="data/synthetic/joinedtrans")
    parser.add_argument("--print-config", action="store_true", help="print the generator settings and exit")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="SynthConfig fields, e.g. n_train=8")
    args = parser.parse_args(argv)
    import yaml

    values = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in args.overrides)}
    cfg = from_dict(SynthConfig, {**asdict(SynthConfig()), **values})
    if args.print_config:
        from common.config import print_config_and_exit

        print_config_and_exit(cfg)
    from common.rundir import resolve_path

    root = ensure_synthetic(resolve_path(args.out), cfg)
    print(f"synthetic fundus trees in {root}")
    return root


if __name__ == "__main__":
    main()
