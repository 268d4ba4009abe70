"""Readers for the datasets of UNO-QA and the torch dataset that feeds the networks.

sOCTA-3x3-10k (COIPS / OCTA-25K-IQA-SEG), as published::

    <root>/
      train/0/<image>.png   ungradable
      train/1/<image>.png   gradable
      train/2/<image>.png   outstanding
      test/{0,1,2}/<image>.png
      <external split>/{0,1,2}/<image>.png   optional extra evaluation splits (``data.extra_splits``)

The label is the folder name; there is no CSV. Alternatives: a manifest CSV (``path,label,split``; ``path`` relative
to the CSV's folder; label 0/1/2 or ungradable/gradable/outstanding) and DRAC 2022 task 2 (CSV ``image name``,
``image quality level`` with 0 = poor, 1 = good, 2 = excellent; no public test labels, so a seeded split file
``drac_split_seed<seed>.csv`` is written on first use under ``data/splits/octa_iqa/``, never inside the data root).

Images are read as grey, resized and centre-cropped to ``image_size`` and replicated to 3 channels:
tensors are ``(3, S, S)`` float32.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from common.datasets import partition_by_suffix, split_path
from common.readers import read_image, require_columns
from common.rundir import resolve_path
from octa_iqa.settings import CLASS_NAMES, DataConfig

__all__ = ["DataError", "Record", "IMAGE_SUFFIXES", "scan_socta", "read_manifest", "read_drac", "load_records",
           "class_counts", "format_counts", "split_outstanding", "load_image", "QualityDataset",
           "list_unlabeled", "input_stats"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
LABELS = (0, 1, 2)
_LABEL_NAMES = {name: i for i, name in enumerate(CLASS_NAMES)} | {"poor": 0, "good": 1, "excellent": 2}


class DataError(ValueError):
    """A dataset that does not have the expected layout; the message names the file/folder and the fix."""


@dataclass(frozen=True)
class Record:
    path: Path
    label: int  # 0 ungradable, 1 gradable, 2 outstanding; -1 unlabeled
    split: str

    @property
    def name(self) -> str:
        return self.path.name


def _parse_label(value: object, source: str) -> int:
    text = str(value).strip().lower()
    if text in _LABEL_NAMES:
        return _LABEL_NAMES[text]
    try:
        number = float(text)
    except ValueError:
        number = float("nan")
    if number in LABELS:
        return int(number)
    raise DataError(f"{source}: unknown label {value!r}; expected 0/1/2 (ungradable/gradable/outstanding)")


def scan_socta(root: str | Path, split: str) -> list[Record]:
    """Walk ``<root>/<split>/{0,1,2}/*``; every label folder must exist (it may be empty)."""
    base = Path(root) / split
    if not base.is_dir():
        raise DataError(f"split folder not found: {base}. Expected the sOCTA layout <root>/{split}/{{0,1,2}}/*.png; "
                        f"check data.root (or set data.format=manifest)")
    unknown = sorted(p.name for p in base.iterdir() if p.is_dir() and p.name not in {"0", "1", "2"})
    if unknown:
        raise DataError(f"{base} holds folder(s) {unknown} that are not labels; only 0 (ungradable), 1 (gradable) "
                        f"and 2 (outstanding) are allowed")
    records = []
    for label in LABELS:
        folder = base / str(label)
        if not folder.is_dir():
            raise DataError(f"label folder missing: {folder} ({CLASS_NAMES[label]}). Every split needs 0/, 1/ and 2/; "
                            f"create it empty if that class has no images")
        files, _ = partition_by_suffix(sorted(p for p in folder.iterdir() if p.is_file()), IMAGE_SUFFIXES,
                                       where=str(folder))
        records += [Record(p, label, split) for p in files]
    if not records:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {base}/{{0,1,2}}")
    return records


def read_manifest(path: str | Path, split: str) -> list[Record]:
    """Rows of a manifest CSV (columns ``path,label,split``) whose split is ``split``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest not found: {path} (data.manifest)")
    frame = pd.read_csv(path, dtype=str)
    require_columns(frame, ["path", "label", "split"], path)
    rows = frame[frame["split"].str.strip() == split]
    if rows.empty:
        present = sorted(frame["split"].unique())
        raise DataError(f"{path} has no rows with split == {split!r}; splits present: {present}")
    records = []
    for i, row in rows.iterrows():
        label = _parse_label(row["label"], f"{path} row {i + 2}")
        image = Path(row["path"]) if Path(row["path"]).is_absolute() else path.parent / row["path"]
        if not image.is_file():
            raise DataError(f"{path} row {i + 2}: image not found: {image}")
        records.append(Record(image, label, split))
    return records


def read_drac(root: str | Path, csv_rel: str, images_rel: str, split: str, test_fraction: float, seed: int,
              split_file: str | Path | None = None) -> list[Record]:
    """DRAC 2022 task 2 training set with a seeded stratified train/test split (``common.datasets.split_path``)."""
    root = Path(root)
    csv_path = root / csv_rel
    if not csv_path.is_file():
        raise DataError(f"DRAC label CSV not found: {csv_path} (data.drac_csv, relative to data.root)")
    frame = pd.read_csv(csv_path)
    require_columns(frame, ["image name", "image quality level"], csv_path)
    split_file = split_path("octa_iqa", root, f"drac_split_seed{seed}.csv", split_file)
    if not split_file.is_file():
        split_file.parent.mkdir(parents=True, exist_ok=True)
        from sklearn.model_selection import train_test_split

        train_names, test_names = train_test_split(list(frame["image name"]), test_size=test_fraction,
                                                   random_state=seed, stratify=frame["image quality level"])
        pd.DataFrame({"image name": train_names + test_names,
                      "split": ["train"] * len(train_names) + ["test"] * len(test_names)}).to_csv(split_file,
                                                                                                 index=False)
    splits = pd.read_csv(split_file).set_index("image name")["split"]
    records = []
    for i, row in frame.iterrows():
        name = row["image name"]
        if splits.get(name) != split:
            continue
        image = root / images_rel / name
        if not image.is_file():
            raise DataError(f"{csv_path} row {i + 2}: image not found: {image} (data.drac_images)")
        records.append(Record(image, _parse_label(row["image quality level"], f"{csv_path} row {i + 2}"), split))
    if not records:
        raise DataError(f"{split_file} assigns no image of {csv_path} to split {split!r}")
    return records


def load_records(cfg: DataConfig, split: str, verbose: bool = True) -> list[Record]:
    """Records of ``split`` in the configured format; logs the class-count table (never hard-coded)."""
    root = resolve_path(cfg.root)
    if cfg.format == "socta":
        records = scan_socta(root, split)
    elif cfg.format == "manifest":
        records = read_manifest(resolve_path(cfg.manifest), split)
    else:
        records = read_drac(root, cfg.drac_csv, cfg.drac_images, split, cfg.drac_test_fraction, cfg.split_seed,
                            cfg.split_file)
    if verbose:
        print(f"[data] {root} split={split}: {format_counts(records)}", flush=True)
    return records


def class_counts(records: Sequence[Record]) -> dict[str, int]:
    counts = Counter(r.label for r in records)
    return {CLASS_NAMES[label]: counts.get(label, 0) for label in LABELS}


def format_counts(records: Sequence[Record]) -> str:
    return ", ".join(f"{k}={v}" for k, v in class_counts(records).items()) + f" (total {len(records)})"


def split_outstanding(records: Sequence[Record], holdout_fraction: float, seed: int
                      ) -> tuple[list[Record], list[Record]]:
    """Outstanding (label 2) records only, split into (fit, held-out) by a seeded permutation."""
    normal = [r for r in records if r.label == 2]
    if len(normal) < 4:
        raise DataError(f"only {len(normal)} outstanding (label 2) training images; UNO-QA trains on outstanding "
                        f"images only and needs at least 4")
    order = np.random.default_rng(seed).permutation(len(normal))
    n_hold = max(2, int(round(holdout_fraction * len(normal))))
    hold = sorted(order[:n_hold])
    fit = sorted(order[n_hold:])
    return [normal[i] for i in fit], [normal[i] for i in hold]


def load_image(path: str | Path, size: int, resize: int | None = None) -> np.ndarray:
    """Grey image -> ``(size, size)`` float32 in [0, 1]: resize the short side to ``resize`` (default ``size``),
    then centre-crop ``size``."""
    img = read_image(path, mode="L").astype(np.float32) / 255.0
    target = resize or size
    h, w = img.shape
    scale = target / min(h, w)
    if (h, w) != (round(h * scale), round(w * scale)):
        img = cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA
                         if scale < 1 else cv2.INTER_LINEAR)
    h, w = img.shape
    top, left = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(img[top : top + size, left : left + size])


def input_stats(pretrained: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """ImageNet mean/std for ImageNet weights (``hub`` or a file); identity ([0, 1] input) otherwise."""
    if pretrained in ("none", "selfsup"):
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    return (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class QualityDataset(Dataset):
    """``{"image": (3, S, S) float32, "label": int, "index": int}``; mild augmentation only (flip, +-5 deg,
    brightness/contrast +-0.05; never blur, lines or intensity drops, which define the anomalies)."""

    def __init__(self, records: Sequence[Record], cfg: DataConfig, pretrained: str = "none", augment: bool = False,
                 seed: int = 0):
        self.records = list(records)
        self.cfg = cfg
        mean, std = input_stats(pretrained)
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)
        self.transform = None
        if augment:
            import albumentations as A

            self.transform = A.Compose([
                A.HorizontalFlip(p=0.5),
                A.Rotate(limit=5, border_mode=cv2.BORDER_REFLECT_101, p=0.5),
                A.RandomBrightnessContrast(brightness_limit=0.05, contrast_limit=0.05, p=0.5),
            ], seed=seed)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        rec = self.records[index]
        img = load_image(rec.path, self.cfg.image_size, self.cfg.resize)
        if self.transform is not None:
            img = np.clip(self.transform(image=img)["image"], 0, 1)
        x = torch.from_numpy(np.ascontiguousarray(img)).unsqueeze(0).expand(3, -1, -1)
        return {"image": (x - self.mean) / self.std, "label": rec.label, "index": index}


def list_unlabeled(folder: str | Path) -> list[Record]:
    """Every image under ``folder`` (recursively) for prediction; label -1."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"prediction folder not found: {folder}")
    files, _ = partition_by_suffix(sorted(p for p in folder.rglob("*") if p.is_file()), IMAGE_SUFFIXES,
                                   where=str(folder))
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    return [Record(p, -1, "predict") for p in files]
