"""Datasets of the FPT+ paper in their on-disk formats, the two-branch transforms and the preload cache
(official data/builder.py, data/dataset.py, data/transforms.py, preload.py).

Formats read here:

- ``imagefolder`` (the official code's): ``<root>/{train,val,test}/<class>/<image>``; class index = alphabetical
  order of the class folder names; every split must hold the same class folders.
- ``csv``: a split file ``(image, label, split)`` with paths relative to ``<root>``; ``label`` is a class name or an
  integer index; written by ``convert.py`` from each dataset's native download layout into
  ``data/splits/fpt_plus/<root>/split.csv`` (never into the data root).

Branches (no augmentation ever reaches the LPM, so its outputs can be cached):
- LPM: resize to ``S x S`` (bilinear, antialiased) + normalise;
- side, train: horizontal flip, ColorJitter(brightness 0.2, contrast 0.2), RandomResizedCrop(s, scale 0.8-1,
  ratio 0.7-1.3) + normalise; side, eval: resize to ``s x s`` + normalise.

Preload cache: ``<preload_dir>/<relative image path>.safetensors`` with ``key_states`` and ``value_states`` of shape
``(L, H, k, d)`` plus ``meta.json`` describing the LPM, tapped layers, k, dtype and normalisation. Keys are unique
relative paths (the official code keys by file stem and silently overwrites duplicates).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from common.datasets import partition_by_suffix
from common.readers import read_image, require_columns

__all__ = ["SPLITS", "IMAGE_SUFFIXES", "Record", "DatasetError", "scan_imagefolder", "read_split_csv", "infer_classes",
           "load_records", "side_transform", "lpm_transform", "compute_mean_std", "ClassificationDataset",
           "PreloadCache", "CacheError", "load_rgb"]

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


class DatasetError(ValueError):
    """A dataset on disk that does not match its documented format; the message names the file and the fix."""


class CacheError(ValueError):
    """A preload cache that does not fit the configured model; the message says how to rebuild it."""


@dataclass(frozen=True)
class Record:
    """One image: absolute ``path``, ``key`` (unique path relative to the dataset root), ``label`` index, ``split``."""

    path: Path
    key: str
    label: int
    split: str


def _class_images(folder: Path) -> list[Path]:
    """Images under one class folder; files with other suffixes are named on stdout, never dropped silently."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    kept, _ = partition_by_suffix(files, sorted(IMAGE_SUFFIXES), where=str(folder))
    return kept


def scan_imagefolder(root: str | Path, classes: Sequence[str] | None = None) -> tuple[list[Record], list[str]]:
    """Read ``<root>/{train,val,test}/<class>/*``. Returns (records, class names in label order)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} does not exist; set data.root (or DATA=...) to the folder holding "
                           f"train/, val/ and test/")
    found: dict[str, list[str]] = {}
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir():
            raise DatasetError(f"{folder} is missing: the imagefolder format needs {root}/{{train,val,test}}/<class>/"
                               f"; use convert.py to build a split file for a native download layout")
        found[split] = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    class_names = list(classes) if classes is not None else found["train"]
    if not class_names:
        raise DatasetError(f"{root / 'train'} holds no class folders")
    for split in SPLITS:
        missing = [c for c in class_names if c not in found[split]]
        if missing:
            raise DatasetError(f"class folder(s) {missing} missing from {root / split}: every split must hold every "
                               f"class ({class_names}); add the folder (even with few images) or re-split the data")
        unknown = [c for c in found[split] if c not in class_names]
        if unknown:
            raise DatasetError(f"{root / split} holds class folder(s) {unknown} that are not in the class list "
                               f"{class_names} (data.classes); remove them or add them to data.classes")
    records = []
    for split in SPLITS:
        for label, name in enumerate(class_names):
            files = _class_images(root / split / name)
            if not files:
                raise DatasetError(f"{root / split / name} holds no images ({sorted(IMAGE_SUFFIXES)})")
            records += [Record(p, p.relative_to(root).as_posix(), label, split) for p in files]
    return records, class_names


def infer_classes(labels: Sequence[str], splits: Sequence[str], split_file: Path) -> list[str]:
    """The class list of a split CSV when ``data.classes`` is null, refusing what would silently create a class:
    integer labels must cover ``0..max`` without a gap, names and integers must not mix, and every class must occur
    in the train split (a label only val/test hold is a typo or an unknown class, not a new class)."""
    numeric = [v.lstrip("-").isdigit() for v in labels]
    fix = "set data.classes to the dataset's class list (label order) or fix the split file"
    if any(numeric) and not all(numeric):
        names = sorted({v for v, n in zip(labels, numeric) if not n})[:5]
        raise DatasetError(f"{split_file}: labels mix integers and names ({names}) while data.classes is null; {fix}")
    train = {v for v, s in zip(labels, splits) if s == "train"}
    if all(numeric):
        found = sorted({int(v) for v in labels})
        gaps = sorted(set(range(max(found) + 1)) - {int(v) for v in train})
        if found[0] < 0 or gaps:
            raise DatasetError(f"{split_file}: integer labels {found} leave class index(es) {gaps} without a train "
                               f"image while data.classes is null; {fix}")
        return [str(i) for i in range(max(found) + 1)]
    unseen = sorted(set(labels) - train)
    if unseen:
        raise DatasetError(f"{split_file}: label(s) {unseen} occur in val/test but never in train while data.classes "
                           f"is null; {fix}")
    return sorted(train)


def read_split_csv(root: str | Path, split_file: str | Path, classes: Sequence[str] | None = None
                   ) -> tuple[list[Record], list[str]]:
    """Read a split CSV ``(image, label, split)``; labels are class names (or integer indices into ``classes``);
    image paths are relative to ``root``. Without ``classes`` the list is inferred by :func:`infer_classes`, which
    refuses gaps and val/test-only labels."""
    import pandas as pd

    root, split_file = Path(root), Path(split_file)
    if not split_file.is_file():
        raise DatasetError(f"split file {split_file} not found; create it with `python convert.py <dataset> --src "
                           f"{root}` (it writes there by default) or set data.split_file")
    frame = pd.read_csv(split_file, dtype=str, keep_default_na=False)
    require_columns(frame, ["image", "label", "split"], split_file)
    bad_split = sorted(set(frame["split"]) - set(SPLITS))
    if bad_split:
        raise DatasetError(f"{split_file}: split value(s) {bad_split} are not train/val/test")
    labels = list(frame["label"])
    if classes is None:
        classes = infer_classes(labels, list(frame["split"]), split_file)
    class_names = list(classes)
    index = {name: i for i, name in enumerate(class_names)}
    records = []
    for row, (image, label, split) in enumerate(zip(frame["image"], labels, frame["split"]), start=2):
        if label in index:
            y = index[label]
        elif label.lstrip("-").isdigit() and 0 <= int(label) < len(class_names):
            y = int(label)
        else:
            raise DatasetError(f"{split_file} line {row}: label {label!r} is not in the class list {class_names} "
                               f"(data.classes); fix the label or the class list")
        records.append(Record(root / image, Path(image).as_posix(), y, split))
    for split in SPLITS:
        present = {r.label for r in records if r.split == split}
        if not present:
            raise DatasetError(f"{split_file} has no `{split}` rows")
    keys = [r.key for r in records]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})[:5]
        raise DatasetError(f"{split_file} lists image(s) more than once: {dup}")
    return records, class_names


def load_records(root: str | Path, fmt: str = "imagefolder", split_file: str | Path | None = None,
                 classes: Sequence[str] | None = None) -> tuple[list[Record], list[str]]:
    """Records of every split plus the class names, in the configured format (``split_file``: csv format only)."""
    if fmt == "imagefolder":
        return scan_imagefolder(root, classes)
    if fmt == "csv":
        if split_file is None:
            raise DatasetError("data.format=csv needs a split file (a CSV with columns image,label,split)")
        return read_split_csv(root, split_file, classes)
    raise DatasetError(f"data.format={fmt!r} is not imagefolder or csv")


def load_rgb(path: Path) -> torch.Tensor:
    """Image file -> ``(3, H, W)`` uint8 tensor (grey and RGBA converted to RGB); unreadable files raise."""
    array = read_image(path, mode="RGB")
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)


def _normalize(mean: Sequence[float], std: Sequence[float]) -> Callable[[torch.Tensor], torch.Tensor]:
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return lambda x: (x.float() / 255.0 - mean_t) / std_t


def lpm_transform(size: int, mean: Sequence[float], std: Sequence[float], flip: bool = False
                  ) -> Callable[[torch.Tensor], torch.Tensor]:
    """LPM input: uint8 ``(3, H, W)`` -> float ``(3, size, size)``; deterministic unless ``flip`` (random
    horizontal flip, used only to train the PETL baselines)."""
    from torchvision.transforms import v2

    resize = v2.Compose([v2.Resize((size, size), antialias=True), v2.RandomHorizontalFlip(0.5)]) if flip \
        else v2.Resize((size, size), antialias=True)
    norm = _normalize(mean, std)
    return lambda x: norm(resize(x))


def side_transform(size: int, mean: Sequence[float], std: Sequence[float], train: bool
                   ) -> Callable[[torch.Tensor], torch.Tensor]:
    """Side input: the weak augmentation of the official code in training, a plain resize otherwise."""
    from torchvision.transforms import v2

    if train:
        ops = v2.Compose([v2.RandomHorizontalFlip(0.5), v2.ColorJitter(brightness=0.2, contrast=0.2),
                          v2.RandomResizedCrop(size, scale=(0.8, 1.0), ratio=(0.7, 1.3), antialias=True)])
    else:
        ops = v2.Resize((size, size), antialias=True)
    norm = _normalize(mean, std)
    return lambda x: norm(ops(x))


def compute_mean_std(records: Sequence[Record], size: int, max_images: int = 0, progress: bool = False
                     ) -> tuple[list[float], list[float]]:
    """Per-channel mean/std in [0, 1] over the (first ``max_images``) training images resized to ``size``."""
    from torchvision.transforms import v2
    from tqdm import tqdm

    resize = v2.Resize((size, size), antialias=True)
    chosen = records[:max_images] if max_images else records
    total = torch.zeros(3, dtype=torch.float64)
    total_sq = torch.zeros(3, dtype=torch.float64)
    count = 0
    for rec in tqdm(chosen, desc="mean/std", leave=False, disable=not progress):
        x = resize(load_rgb(rec.path)).double() / 255.0
        total += x.sum(dim=(1, 2))
        total_sq += (x * x).sum(dim=(1, 2))
        count += x.shape[1] * x.shape[2]
    mean = total / count
    std = (total_sq / count - mean ** 2).clamp_min(1e-12).sqrt()
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


class PreloadCache:
    """Per-image safetensors files of the selected LPM keys/values, ``(L, H, k, d)`` each, plus ``meta.json``."""

    def __init__(self, folder: str | Path, meta: dict[str, Any]):
        self.folder = Path(folder)
        self.meta = meta

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.safetensors"

    def shape(self) -> tuple[int, int, int, int]:
        m = self.meta
        return (len(m["layers"]), m["num_heads"], m["num_keep"], m["head_dim"])

    def write_meta(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "meta.json").write_text(json.dumps(self.meta, indent=2, sort_keys=True))

    def check_meta(self) -> None:
        """Raise :class:`CacheError` when the folder was written for another LPM, variant or normalisation."""
        meta_path = self.folder / "meta.json"
        if not meta_path.is_file():
            raise CacheError(f"preload cache {self.folder} has no meta.json: it is incomplete or not ours; "
                             f"run `python preload.py --config ...` (or delete the folder)")
        found = json.loads(meta_path.read_text())
        diffs = {k: (found.get(k), v) for k, v in self.meta.items() if found.get(k) != v}
        if diffs:
            detail = "; ".join(f"{k}: cache {a!r} vs config {b!r}" for k, (a, b) in sorted(diffs.items()))
            raise CacheError(f"preload cache {self.folder} was written for a different setting ({detail}). The FPT "
                             f"and FPT+ caches are not interchangeable: point data.preload_dir at the right cache or "
                             f"delete this one and re-run preload.py")

    def save(self, key: str, keys: torch.Tensor, values: torch.Tensor) -> None:
        """keys, values ``(L, H, k, d)`` -> ``<folder>/<key>.safetensors`` (written atomically)."""
        import os

        from safetensors.torch import save_file

        dtype = torch.float16 if self.meta["dtype"] == "fp16" else torch.float32
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        save_file({"key_states": keys.to(dtype).contiguous(), "value_states": values.to(dtype).contiguous()},
                  str(tmp))
        os.replace(tmp, path)

    def load(self, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (keys, values) ``(L, H, k, d)`` float32; wrong shapes or missing files raise :class:`CacheError`."""
        from safetensors.torch import load_file

        path = self.path(key)
        if not path.is_file():
            raise CacheError(f"preload cache file {path} is missing; run preload.py for this dataset "
                             f"(it skips files that already exist)")
        try:
            tensors = load_file(str(path))
        except Exception as exc:
            raise CacheError(f"cannot read preload cache file {path} ({exc}); delete it and re-run preload.py") from exc
        expected = self.shape()
        for name in ("key_states", "value_states"):
            if name not in tensors:
                raise CacheError(f"{path} lacks tensor `{name}`; delete it and re-run preload.py")
            if tuple(tensors[name].shape) != expected:
                raise CacheError(f"{path}: `{name}` has shape {tuple(tensors[name].shape)}, expected {expected} "
                                 f"(layers, heads, k, head_dim) for this config; it comes from another variant or "
                                 f"resolution: delete the cache and re-run preload.py")
        return tensors["key_states"].float(), tensors["value_states"].float()


class ClassificationDataset(Dataset):
    """Items ``{"index", "label", "side"?, "lpm"?, "keys"?, "values"?, "features"?}`` for the requested inputs.

    ``side``: ``(3, s, s)``; ``lpm``: ``(3, S, S)``; ``keys``/``values``: ``(L, H, k, d)`` from ``cache``;
    ``features``: ``(D,)`` rows of a precomputed tensor (linear probing).
    """

    def __init__(self, records: Sequence[Record], inputs: Sequence[str], *, side_tf: Callable | None = None,
                 lpm_tf: Callable | None = None, cache: PreloadCache | None = None,
                 features: torch.Tensor | None = None, cache_images: bool = False):
        self.records = list(records)
        self.cache_images = cache_images
        self._images: dict[int, torch.Tensor] = {}
        self.inputs = tuple(inputs)
        self.side_tf, self.lpm_tf, self.cache, self.features = side_tf, lpm_tf, cache, features
        needs = {"side": side_tf, "lpm": lpm_tf, "keys": cache, "features": features}
        for name in self.inputs:
            if name in needs and needs[name] is None:
                raise ValueError(f"input `{name}` requested without its transform/cache/features")

    def __len__(self) -> int:
        return len(self.records)

    def _image(self, i: int) -> torch.Tensor:
        """Decoded uint8 image; kept in memory after the first read when ``cache_images`` (per worker)."""
        if not self.cache_images:
            return load_rgb(self.records[i].path)
        if i not in self._images:
            self._images[i] = load_rgb(self.records[i].path)
        return self._images[i]

    def __getitem__(self, i: int) -> dict[str, Any]:
        rec = self.records[i]
        item: dict[str, Any] = {"index": i, "label": rec.label}
        image = self._image(i) if {"side", "lpm"} & set(self.inputs) else None
        if "side" in self.inputs:
            item["side"] = self.side_tf(image)
        if "lpm" in self.inputs:
            item["lpm"] = self.lpm_tf(image)
        if "keys" in self.inputs:
            item["keys"], item["values"] = self.cache.load(rec.key)
        if "features" in self.inputs:
            item["features"] = self.features[i]
        return item

