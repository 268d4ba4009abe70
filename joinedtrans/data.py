"""Readers of REFUGE, GAMMA and PALM in their published layouts, the loaded cases and the coarse-stage dataset.

Layouts (relative to the dataset folder; ``data.root`` is that folder, or a folder holding ``REFUGE/``, ``GAMMA/``,
``PALM/`` as the synthetic set does):

- REFUGE: ``Training400/{Glaucoma,Non-Glaucoma}/*.jpg`` + ``Annotation-Training400/Disc_Cup_Masks/<class>/*.bmp``
  + ``Annotation-Training400/Fovea_location.xlsx``; ``REFUGE-Validation400/*.jpg`` +
  ``REFUGE-Validation400-GT/{Disc_Cup_Masks/*.bmp, Fovea_locations.xlsx}``; ``Test400/*.jpg`` +
  ``REFUGE-Test-GT/{Disc_Cup_Masks/{G,N}/*.bmp, Glaucoma_label_and_Fovea_location.xlsx}``.
- GAMMA: ``task3_disc_cup_segmentation/training/{fundus color images/<id>.jpg, Disc_Cup_Mask/<id>.png}`` and
  ``task2_fovea_localization/training/fovea_localization_training_GT.xlsx`` (``data`` = id); JOINED's 5 folds
  (``Coarse/train_smp_y.py``): contiguous blocks of 20, fold 1 validates 0081-0100, fold 5 validates 0001-0020.
- PALM: ``PALM-Training400/PALM-Training400/*.jpg`` + ``PALM-Training400/PALM-Training400-Annotation-D&F/
  Disc_Masks/*.bmp`` (0 disc, 255 background) + ``PALM-Training400/Fovea_Location.xlsx`` (``data.fovea_table``
  overrides the path); ``PALM-Validation400/*.jpg`` + ``PALM-Validation-GT/{Disc_Masks, PM_Label_and_Fovea_
  Location.xlsx}``. A fovea at (0, 0) is "not visible": zero heatmap, excluded from fovea metrics and counted.

Masks are 0 (cup) / 128 (rim) / 255 (background). Coordinates: x = column, y = row, 0-based unless
``data.coords_one_based``. Every defect (image without mask and vice versa, unknown mask values, mask/image size
mismatch, fovea table without a column, a row without an image, an image without a row, a point outside the image,
an unreadable image) stops with an error naming the file and the fix.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from common.readers import read_image, read_mask
from common.rundir import resolve_path
from joinedtrans.settings import DataConfig
from joinedtrans.targets import (
    distance_map,
    heatmap,
    mask_to_channels,
    od_landmark,
    resize_area,
    resize_nearest,
)

__all__ = ["DataError", "Case", "Loaded", "dataset_dir", "read_table", "list_cases", "load_case", "load_cases",
           "gamma_fold_ids", "channel_stats", "coarse_arrays", "CoarseDataset", "FOLDER_NAMES", "image_size"]

FOLDER_NAMES = {"refuge": "REFUGE", "gamma": "GAMMA", "palm": "PALM"}
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif")


class DataError(ValueError):
    """A dataset defect; the message names the file and the fix."""


@dataclass(frozen=True)
class Case:
    """One annotated image. ``fovea`` = (x, y) in original pixels, None when not visible; ``hard`` = hard-case kind
    from ``hard_cases.csv`` (synthetic sets only) or ""."""

    case_id: str
    image: Path
    mask: Path
    fovea: tuple[float, float] | None
    dataset: str
    split: str
    hard: str = ""


@dataclass
class Loaded:
    """A case with its pixels: ``image`` (H, W, 3) uint8 RGB, ``mask`` (H, W) uint8 0/128/255 (PALM: 0/255)."""

    case: Case
    image: np.ndarray
    mask: np.ndarray

    @property
    def palm(self) -> bool:
        return self.case.dataset == "palm"


def dataset_dir(cfg: DataConfig) -> Path:
    """The dataset folder: ``<root>/<REFUGE|GAMMA|PALM>`` when it exists, else ``root`` itself."""
    root = resolve_path(cfg.root)
    sub = root / FOLDER_NAMES[cfg.dataset]
    return sub if sub.is_dir() else root


def read_table(path: Path, required: tuple[str, ...], fix: str = "") -> dict[str, list]:
    """Read an ``.xlsx`` (pandas + openpyxl) or ``.csv`` table; columns matched case-insensitively. Returns
    ``{required column: values}``."""
    import pandas as pd

    if not path.is_file():
        raise DataError(f"fovea table not found: {path}. {fix or 'Check data.root and the dataset layout.'}")
    if path.suffix.lower() in (".xlsx", ".xls"):
        try:
            import openpyxl  # noqa: F401
        except ImportError as exc:
            raise DataError(f"reading {path} needs openpyxl, which is not installed: pip install openpyxl (or "
                            f"install the repository with its `joinedtrans` extra), or save the sheet as CSV "
                            f"with the same columns and point data.fovea_table at it") from exc
        frame = pd.read_excel(path)
    else:
        frame = pd.read_csv(path)
    lower = {str(c).strip().lower(): c for c in frame.columns}
    missing = [c for c in required if c.lower() not in lower]
    if missing:
        raise DataError(f"{path} lacks column(s) {missing}; found {list(frame.columns)}. The published table has "
                        f"{list(required)}")
    return {c: frame[lower[c.lower()]].tolist() for c in required}


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}. Check data.root / data.dataset and the layout in the "
                        f"joinedtrans README")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES and not p.name.startswith("."))


def _pair(images: list[Path], mask_dirs: Path | list[Path], suffix: str) -> list[tuple[Path, Path]]:
    """Image -> mask with the same stem (in any of ``mask_dirs``); an image without a mask or a mask without an
    image is an error."""
    dirs = [mask_dirs] if isinstance(mask_dirs, Path) else list(mask_dirs)
    masks = {p.stem: p for d in dirs if d.is_dir() for p in d.glob(f"*{suffix}")}
    stems = {p.stem for p in images}
    lonely = sorted(set(masks) - stems)
    if lonely:
        raise DataError(f"mask {masks[lonely[0]]} has no image ({len(lonely)} such masks); expected "
                        f"{lonely[0]}.jpg beside the other images. Remove the mask or restore the image")
    for img in images:
        if img.stem not in masks:
            raise DataError(f"image {img} has no mask: expected {dirs[0] / (img.stem + suffix)}. Restore the "
                            f"mask or remove the image")
    return [(img, masks[img.stem]) for img in images]


def _fovea_lookup(table: Path, name_col: str, images: list[Path], cfg: DataConfig, by_id: bool = False
                  ) -> dict[str, tuple[float, float] | None]:
    cols = read_table(table, (name_col, "Fovea_X", "Fovea_Y"), fix="Set data.fovea_table to its path.")
    offset = 1.0 if cfg.coords_one_based else 0.0
    keys = [f"{int(v):04d}" if by_id else Path(str(v)).stem for v in cols[name_col]]
    points = {}
    for key, x, y in zip(keys, cols["Fovea_X"], cols["Fovea_Y"]):
        if not (isinstance(x, (int, float)) and isinstance(y, (int, float))) or math.isnan(x) or math.isnan(y):
            raise DataError(f"{table}: row {key} has a non-numeric fovea ({x!r}, {y!r})")
        points[key] = None if (x == 0 and y == 0) else (float(x) - offset, float(y) - offset)
    stems = {p.stem for p in images}
    orphan = sorted(set(points) - stems)
    if orphan:
        raise DataError(f"{table}: row {orphan[0]} names no image in {images[0].parent if images else '?'} "
                        f"({len(orphan)} such rows); fix the table or restore the image")
    for img in images:
        if img.stem not in points:
            raise DataError(f"image {img} has no row in {table}; add its Fovea_X/Fovea_Y (0, 0 = not visible)")
    return points


def _hard_kinds(folder: Path) -> dict[str, str]:
    path = folder / "hard_cases.csv"
    if not path.is_file():
        return {}
    cols = read_table(path, ("image", "kind"))
    return {str(folder / img): str(kind) for img, kind in zip(cols["image"], cols["kind"])}


def gamma_fold_ids(fold: int, n: int = 100) -> tuple[list[int], list[int]]:
    """JOINED's GAMMA folds over ids 1..n: fold k validates the block ``(5 - k) * n/5 + 1 .. (6 - k) * n/5``."""
    block = n // 5
    val = list(range((5 - fold) * block + 1, (6 - fold) * block + 1))
    return [i for i in range(1, n + 1) if i not in val], val


def _refuge(folder: Path, split: str, cfg: DataConfig) -> tuple[list[tuple[Path, Path, Path, str]], list[Path]]:
    if split == "train":
        pairs = []
        for cls in ("Glaucoma", "Non-Glaucoma"):
            pairs += _pair(_images(folder / "Training400" / cls),
                           folder / "Annotation-Training400" / "Disc_Cup_Masks" / cls, ".bmp")
        table = folder / "Annotation-Training400" / "Fovea_location.xlsx"
        return [(i, m, table, "ImgName") for i, m in pairs], [i for i, _ in pairs]
    if split == "val":
        pairs = _pair(_images(folder / "REFUGE-Validation400"),
                      folder / "REFUGE-Validation400-GT" / "Disc_Cup_Masks", ".bmp")
        table = folder / "REFUGE-Validation400-GT" / "Fovea_locations.xlsx"
        return [(i, m, table, "ImgName") for i, m in pairs], [i for i, _ in pairs]
    gt = folder / "REFUGE-Test-GT" / "Disc_Cup_Masks"
    pairs = _pair(_images(folder / "Test400"), [gt / "G", gt / "N"], ".bmp")
    table = folder / "REFUGE-Test-GT" / "Glaucoma_label_and_Fovea_location.xlsx"
    return [(i, m, table, "ImgName") for i, m in pairs], [i for i, _ in pairs]


def _palm(folder: Path, split: str, cfg: DataConfig) -> tuple[list[tuple[Path, Path, Path, str]], list[Path]]:
    if split in ("train", "val"):
        base = folder / "PALM-Training400"
        pairs = _pair(_images(base / "PALM-Training400"), base / "PALM-Training400-Annotation-D&F" / "Disc_Masks",
                      ".bmp")
        table = folder / cfg.fovea_table if cfg.fovea_table else base / "Fovea_Location.xlsx"
        keep = [p for k, p in enumerate(pairs) if (k % 5 == 4) == (split == "val")]  # every 5th image validates
        return [(i, m, table, "imgName") for i, m in keep], [i for i, _ in pairs]
    pairs = _pair(_images(folder / "PALM-Validation400"), folder / "PALM-Validation-GT" / "Disc_Masks", ".bmp")
    table = folder / "PALM-Validation-GT" / "PM_Label_and_Fovea_Location.xlsx"
    return [(i, m, table, "imgName") for i, m in pairs], [i for i, _ in pairs]


def _gamma(folder: Path, split: str, cfg: DataConfig) -> tuple[list[tuple[Path, Path, Path, str]], list[Path]]:
    seg = folder / "task3_disc_cup_segmentation" / "training"
    images = _images(seg / "fundus color images")
    pairs = _pair(images, seg / "Disc_Cup_Mask", ".png")
    ids = [int(re.sub(r"\D", "", p.stem) or 0) for p, _ in pairs]
    train_ids, val_ids = gamma_fold_ids(cfg.fold, max(len(pairs), 5))
    wanted = set(train_ids if split == "train" else val_ids)
    table = folder / "task2_fovea_localization" / "training" / "fovea_localization_training_GT.xlsx"
    return [(i, m, table, "data") for (i, m), k in zip(pairs, ids) if k in wanted], images


def list_cases(cfg: DataConfig, split: str) -> list[Case]:
    """The cases of ``split`` (train / val / test) of ``cfg.dataset``, with fovea points and hard-case kinds.

    GAMMA has labels for its training set only: val and test are the fold's validation block."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    folder = dataset_dir(cfg)
    reader = {"refuge": _refuge, "gamma": _gamma, "palm": _palm}[cfg.dataset]
    rows, scope = reader(folder, split, cfg)
    if not rows:
        raise DataError(f"no {split} images of {cfg.dataset} under {folder}")
    if cfg.fovea_table and cfg.dataset != "palm":
        rows = [(i, m, folder / cfg.fovea_table, col) for i, m, _, col in rows]
    hard = _hard_kinds(folder)
    cases = []
    for table in sorted({r[2] for r in rows}):
        group = [r for r in rows if r[2] == table]
        lookup = _fovea_lookup(table, group[0][3], scope, cfg, by_id=cfg.dataset == "gamma")
        cases += [Case(img.stem, img, mask, lookup[img.stem], cfg.dataset, split, hard.get(str(img), ""))
                  for img, mask, _, _ in group]
    return sorted(cases, key=lambda c: str(c.image))


def _check_mask(mask: np.ndarray, path: Path, palm: bool, snap: bool) -> np.ndarray:
    allowed = np.array([0, 255] if palm else [0, 128, 255])
    bad = np.setdiff1d(np.unique(mask), allowed)
    if bad.size == 0:
        return mask
    if not snap:
        raise DataError(f"mask {path} holds value(s) {bad[:8].tolist()} outside {allowed.tolist()} (0 cup, 128 "
                        f"rim, 255 background); re-export it losslessly, or set data.mask_snap=true to snap each "
                        f"pixel to the nearest allowed value")
    nearest = np.abs(mask[..., None].astype(np.int16) - allowed[None, None]).argmin(-1)
    return allowed[nearest].astype(np.uint8)


def load_case(case: Case, snap: bool = False) -> Loaded:
    """Decode image and mask fully, check mask values, sizes and the fovea position."""
    image = read_image(case.image, mode="RGB")
    mask = _check_mask(read_mask(case.mask), case.mask, case.dataset == "palm", snap)
    if mask.shape != image.shape[:2]:
        raise DataError(f"mask {case.mask} is {mask.shape[1]}x{mask.shape[0]} but image {case.image} is "
                        f"{image.shape[1]}x{image.shape[0]} (W x H); masks must match their image")
    if case.fovea is not None:
        x, y = case.fovea
        if not (0 <= x < image.shape[1] and 0 <= y < image.shape[0]):
            raise DataError(f"fovea ({x:.1f}, {y:.1f}) of {case.image} lies outside the {image.shape[1]}x"
                            f"{image.shape[0]} image; check the table (x = column, y = row; "
                            f"data.coords_one_based)")
    return Loaded(case, image, mask)


def load_cases(cases: list[Case], snap: bool = False) -> list[Loaded]:
    return [load_case(c, snap) for c in cases]


def image_size(loaded: Loaded) -> tuple[int, int]:
    """``(W, H)`` of the original image."""
    return loaded.image.shape[1], loaded.image.shape[0]


def channel_stats(images: list[np.ndarray]) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] units over all pixels of ``images`` (H, W, 3 uint8)."""
    pix = np.concatenate([im.reshape(-1, 3).astype(np.float64) / 255.0 for im in images])
    return pix.mean(0).tolist(), np.maximum(pix.std(0), 1e-6).tolist()


def coarse_arrays(item: Loaded, size: int, sigma: float) -> dict[str, np.ndarray]:
    """Coarse-stage arrays at ``size`` px: ``image`` (S, S, 3) uint8 (INTER_AREA), ``seg`` (3, S, S), ``heatmap``
    (2, S, S) [fovea, OD], ``distance`` (1, S, S) -- targets built at original size, resized nearest."""
    h, w = item.mask.shape
    od = od_landmark(item.mask)
    seg = mask_to_channels(item.mask, palm=item.palm)
    hmaps = np.stack([heatmap((h, w), item.case.fovea, sigma * h), heatmap((h, w), od, sigma * h)], -1)
    dist = distance_map((h, w), [item.case.fovea, od])
    s = (size, size)
    return {"image": resize_area(item.image, s),
            "seg": resize_nearest(np.ascontiguousarray(seg.transpose(1, 2, 0)), s).transpose(2, 0, 1),
            "heatmap": resize_nearest(hmaps, s).transpose(2, 0, 1),
            "distance": resize_nearest(dist, s)[None]}


class CoarseDataset(Dataset):
    """Pre-computed coarse samples: ``{"image": (3, S, S) normalised, "seg", "heatmap", "distance", "index"}``."""

    def __init__(self, items: list[Loaded], size: int, sigma: float, mean: list[float], std: list[float]):
        self.arrays = [coarse_arrays(it, size, sigma) for it in items]
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.arrays)

    def normalise(self, image: np.ndarray) -> torch.Tensor:
        return (torch.from_numpy(image).permute(2, 0, 1).float() / 255.0 - self.mean) / self.std

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        a = self.arrays[index]
        return {"image": self.normalise(a["image"]), "seg": torch.from_numpy(a["seg"].astype(np.float32)),
                "heatmap": torch.from_numpy(a["heatmap"]), "distance": torch.from_numpy(a["distance"]),
                "index": torch.tensor(index)}
