"""Readers of the official PAMSR on-disk layout (official ``src/data/burst_v3.py``) and the training patches.

Folder layout read here (``<root>`` = ``data.root``, ``<name>`` = ``data.dataset``)::

    <root>/<name>/<sample>/1_X1_X1.png     HR polar image (8-bit grey, official 1000x1000); LR is synthesised
    <root>/<name>/<sample>/2_X1_X1.png     optional further "burst" frames (unused, burst_size = 1)
    <root>/<flat_name>/*.png                val-only / prediction sets (``test_unreg_mid``, real LR ``test/``)

Official sets: ``reg_mid`` (registered + 3x3 median, the training set of the proposed model), ``mid_filter``
(median only, unregistered). Splits: ``KFold(n_splits=5, shuffle=True, random_state=55)`` over the sorted sample
folders, fold 0 held out (validation = test, as in the official code). The split is recorded (sample, fold) under
``data/splits/pamsr/`` (:func:`common.datasets.split_path`), never inside the data root.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from common.datasets import partition_by_suffix, split_path
from common.readers import ImageReadError, read_image
from common.rundir import resolve_path
from pamsr.degradation import DegradationError, displace_odd_rows, make_pair, scale_like
from pamsr.patches import crop_pair, sample_patch
from pamsr.settings import DataConfig, DisplacementConfig, PatchSelectionConfig

__all__ = ["HR_NAME", "IMAGE_SUFFIXES", "DataError", "list_samples", "list_flat", "read_polar", "kfold_split",
           "split_file", "write_split", "SPLITS", "fold_in_split", "split_samples", "clean_path", "PolarImage",
           "load_images", "check_pair",
           "TrainPatches"]

HR_NAME = "1_X1_X1.png"
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".bmp", ".jpg")


class DataError(ValueError):
    """A dataset that does not follow the expected layout; the message names the path and the fix."""


def list_samples(root: str | Path, name: str) -> list[tuple[str, Path]]:
    """``[(sample, <root>/<name>/<sample>/1_X1_X1.png), ...]`` sorted by sample name."""
    folder = Path(root) / name
    if not folder.is_dir():
        raise DataError(f"dataset folder not found: {folder}. Expected <data.root>/<data.dataset>/<sample>/{HR_NAME}"
                        f" (pass --data-root / data.dataset, or set data.synthetic=true for the synthetic set)")
    samples = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        hr = sub / HR_NAME
        if not hr.is_file():
            raise DataError(f"sample folder {sub} has no {HR_NAME}; every sample folder must hold its HR image "
                            f"under that name (remove the folder or add the file)")
        samples.append((sub.name, hr))
    if not samples:
        raise DataError(f"{folder} holds no sample folders (<sample>/{HR_NAME})")
    return samples


def list_flat(folder: str | Path) -> list[tuple[str, Path]]:
    """Flat folder of PNG images (val-only sets, real LR) -> ``[(stem, path), ...]``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    files, _ = partition_by_suffix(sorted(p for p in folder.iterdir() if p.is_file()), IMAGE_SUFFIXES,
                                   where=str(folder))
    if not files:
        raise DataError(f"{folder} holds no images (.png/.tif/.bmp/.jpg)")
    return [(p.stem, p) for p in files]


def read_polar(path: str | Path, median: bool = False) -> np.ndarray:
    """Read an 8-bit polar PAM image as ``(H, W)`` uint8 (optional 3x3 median). All-zero images are an error."""
    image = read_image(path)
    if image.ndim == 3:
        if not (np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2])):
            raise ImageReadError(f"{path} is a colour image; PAM images are single-channel grey")
        image = image[..., 0]
    if image.dtype != np.uint8:
        raise ImageReadError(f"{path} has dtype {image.dtype}; expected an 8-bit grey PNG as in the official data")
    if not image.any():
        raise ImageReadError(f"{path} is all zeros (an empty 8-bit scan); remove it or re-export the image")
    return cv2.medianBlur(image, 3) if median else image


def kfold_split(samples: Sequence[str], n_folds: int = 5, seed: int = 55) -> list[int]:
    """Fold index of every sample (sklearn ``KFold(n_folds, shuffle=True, random_state=seed)``, as official)."""
    from sklearn.model_selection import KFold

    if len(samples) < n_folds:
        raise DataError(f"{len(samples)} samples cannot be split into data.n_folds={n_folds} folds")
    folds = [0] * len(samples)
    for k, (_, test_idx) in enumerate(KFold(n_splits=n_folds, shuffle=True, random_state=seed).split(samples)):
        for i in test_idx:
            folds[i] = k
    return folds


def split_file(cfg: DataConfig, name: str) -> Path:
    """Where the split of dataset ``name`` is recorded: ``data/splits/pamsr/<root>-<hash>/<name>_folds_seed<s>.csv``."""
    return split_path("pamsr", resolve_path(cfg.root), f"{name}_folds_seed{cfg.split_seed}.csv")


def write_split(path: Path, samples: Sequence[str], folds: Sequence[int]) -> Path:
    """Record the split as ``sample, fold`` rows (rewritten on every call: it is derived, never read back)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sample", "fold"])
        writer.writerows(zip(samples, folds))
    return path


@dataclass
class PolarImage:
    """One evaluation image: ``lr`` ``(h, w)`` and padded ``hr`` ``(h*s, w*s)``, float32 in [0, 1]; ``clean``: the
    noise-free ground truth ``(h*s, w*s)`` on the HR's intensity scale (synthetic data only, else ``None``)."""

    name: str
    lr: np.ndarray
    hr: np.ndarray
    clean: np.ndarray | None = None


SPLITS = ("train", "val", "test", "all")


def fold_in_split(fold: int, split: str, cfg: DataConfig) -> bool:
    """``test`` = fold ``data.fold``; ``val`` = fold ``data.val_fold`` (``null``: the test fold, as official);
    ``train`` = every other fold; ``all`` = every fold."""
    val = cfg.fold if cfg.val_fold is None else cfg.val_fold
    return {"train": fold not in (cfg.fold, val), "val": fold == val, "test": fold == cfg.fold, "all": True}[split]


def split_samples(cfg: DataConfig, split: str, dataset: str | None = None) -> list[tuple[str, Path]]:
    """``[(sample, hr_path), ...]`` of ``split`` (:func:`fold_in_split`) of ``dataset`` (default ``data.dataset``);
    records the split (:func:`split_file`)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    name = dataset or cfg.dataset
    samples = list_samples(resolve_path(cfg.root), name)
    folds = kfold_split([s for s, _ in samples], cfg.n_folds, cfg.split_seed)
    write_split(split_file(cfg, name), [s for s, _ in samples], folds)
    return [item for item, fold in zip(samples, folds) if fold_in_split(fold, split, cfg)]


def clean_path(cfg: DataConfig, sample: str) -> Path | None:
    """``<root>/<data.clean_dataset>/<sample>/1_X1_X1.png`` when ``data.clean_dataset`` is set and the file exists
    (the synthetic set's noise-free ground truth; real data has none)."""
    if not cfg.clean_dataset:
        return None
    path = resolve_path(cfg.root) / cfg.clean_dataset / sample / HR_NAME
    return path if path.is_file() else None


def load_images(cfg: DataConfig, split: str, dataset: str | None = None) -> list[PolarImage]:
    """LR/HR pairs of ``split`` (see :func:`split_samples`), each ``lr (h, w)`` and padded ``hr (h*s, w*s)``, plus
    the clean ground truth where :func:`clean_path` finds one (put on the HR's intensity scale)."""
    out = []
    for sample, path in split_samples(cfg, split, dataset):
        raw = read_polar(path, cfg.median)
        lr, hr = make_pair(raw, cfg.scale, cfg.pad, cfg.normalise, name=str(path))
        check_pair(lr, hr, cfg.scale, str(path))
        clean = None
        if (found := clean_path(cfg, sample)) is not None:
            clean = scale_like(read_polar(found), raw, cfg.pad, name=str(found))
            check_pair(lr, clean, cfg.scale, f"{found} (clean target of {path})")
        out.append(PolarImage(sample, lr, hr, clean))
    return out


def check_pair(lr: np.ndarray, hr: np.ndarray, scale: int, name: str = "pair") -> None:
    """An LR/HR pair must satisfy ``hr.shape == scale * lr.shape``."""
    if lr.ndim != 2 or hr.ndim != 2:
        raise DegradationError(f"{name}: LR {lr.shape} and HR {hr.shape} must both be single-channel (H, W)")
    if hr.shape != (lr.shape[0] * scale, lr.shape[1] * scale):
        raise DegradationError(f"{name}: LR {lr.shape[0]}x{lr.shape[1]} and HR {hr.shape[0]}x{hr.shape[1]} do not "
                               f"match at scale {scale} (HR must be {lr.shape[0] * scale}x{lr.shape[1] * scale}); "
                               f"check data.scale and that the files belong together")


class TrainPatches(Dataset):
    """Random LR/HR training patches: ``(1, p, p)`` LR and ``(1, s p, s p)`` HR tensors (plus the HR crop corner).

    ``epoch_size`` items per epoch (official: max(1000 // n_train, 1) repeats of the training set). Item ``i`` of
    epoch ``e`` uses ``numpy.random.default_rng([seed, e, i])`` for the patch position and the displacement
    degradation: a function of (seed, epoch, index) only, independent of worker layout and of a resume.
    """

    def __init__(self, images: Sequence[PolarImage], cfg: DataConfig, selection: PatchSelectionConfig,
                 displacement: DisplacementConfig, seed: int = 0):
        if not images:
            raise DataError("no training images (check data.dataset and the fold split)")
        self.images, self.cfg, self.seed, self.epoch = list(images), cfg, seed, 0
        self.selection, self.displacement = selection, displacement
        self.length = len(self.images) * max(cfg.epoch_size // len(self.images), 1)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        item = self.images[index % len(self.images)]
        cfg, lr = self.cfg, item.lr
        y, x = sample_patch(lr, cfg.patch_size, rng, self.selection.mode, self.selection.score)
        if self.displacement.enabled:
            d = self.displacement
            lr, _ = displace_odd_rows(lr, rng, d.p, d.max_shift, d.banded, d.band)
        lr_patch, hr_patch = crop_pair(lr, item.hr, y, x, cfg.patch_size, cfg.scale)
        check_pair(lr_patch, hr_patch, cfg.scale, f"{item.name} patch at LR ({y}, {x})")
        return {"lr": torch.from_numpy(np.ascontiguousarray(lr_patch))[None],
                "hr": torch.from_numpy(np.ascontiguousarray(hr_patch))[None],
                "corner": torch.tensor([cfg.scale * y, cfg.scale * x])}
