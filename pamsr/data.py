"""Datasets in the official PAMSR on-disk layout (spec section 3) and the training/evaluation pipelines.

Folder layout read here (``<root>`` = ``data.root``, ``<name>`` = ``data.dataset``)::

    <root>/<name>/<sample>/1_X1_X1.png     HR polar image (8-bit grey, official 1000x1000); LR is synthesised
    <root>/<name>/<sample>/2_X1_X1.png     optional further "burst" frames (unused, burst_size = 1)
    <root>/<flat_name>/*.png                val-only / prediction sets (``test_unreg_mid``, real LR ``test/``)

Official sets: ``reg_mid`` (registered + 3x3 median, the training set of the proposed model), ``mid_filter``
(median only, unregistered). Splits: ``KFold(n_splits=5, shuffle=True, random_state=55)`` over the sorted sample
folders, fold 0 held out (validation = test, as in the official code); the split is written to
``<root>/<name>/folds_seed<seed>.csv``.
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

from common.readers import ImageReadError, read_image
from common.rundir import resolve_path
from pamsr.degradation import DegradationError, displace_odd_rows, make_pair
from pamsr.patches import crop_pair, sample_patch
from pamsr.settings import Config, DataConfig

__all__ = ["HR_NAME", "DataError", "list_samples", "list_flat", "read_polar", "kfold_split", "write_split",
           "PolarImage", "load_images", "check_pair", "TrainPatches", "register_folder", "prepare_data"]

HR_NAME = "1_X1_X1.png"


class DataError(ValueError):
    """A dataset that does not follow the expected layout; the message names the path and the fix."""


def list_samples(root: str | Path, name: str) -> list[tuple[str, Path]]:
    """``[(sample, <root>/<name>/<sample>/1_X1_X1.png), ...]`` sorted by sample name."""
    folder = Path(root) / name
    if not folder.is_dir():
        raise DataError(f"dataset folder not found: {folder}. Expected <data.root>/<data.dataset>/<sample>/{HR_NAME}"
                        f" (set data.root / data.dataset, or run synth.py + preprocess.py to create it)")
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
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".tif", ".tiff", ".bmp", ".jpg"))
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


def write_split(folder: Path, samples: Sequence[str], folds: Sequence[int], seed: int) -> Path | None:
    """Write ``folds_seed<seed>.csv`` (sample, fold) next to the data; read-only data roots are left alone."""
    path = folder / f"folds_seed{seed}.csv"
    try:
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["sample", "fold"])
            writer.writerows(zip(samples, folds))
    except OSError:
        return None
    return path


@dataclass
class PolarImage:
    """One evaluation image: ``lr`` ``(h, w)`` and padded ``hr`` ``(h*s, w*s)``, float32 in [0, 1]."""

    name: str
    lr: np.ndarray
    hr: np.ndarray


def load_images(cfg: DataConfig, split: str, dataset: str | None = None) -> list[PolarImage]:
    """LR/HR pairs of ``split`` (``train`` = folds != data.fold, ``test`` = fold data.fold, ``all``)."""
    root = resolve_path(cfg.root)
    name = dataset or cfg.dataset
    samples = list_samples(root, name)
    folds = kfold_split([s for s, _ in samples], cfg.n_folds, cfg.split_seed)
    write_split(root / name, [s for s, _ in samples], folds, cfg.split_seed)
    keep = {"train": lambda f: f != cfg.fold, "test": lambda f: f == cfg.fold, "all": lambda f: True}
    if split not in keep:
        raise ValueError(f"split must be train, test or all, got {split!r}")
    out = []
    for (sample, path), fold in zip(samples, folds):
        if keep[split](fold):
            lr, hr = make_pair(read_polar(path, cfg.median), cfg.scale, cfg.pad, cfg.normalise, name=str(path))
            out.append(PolarImage(sample, lr, hr))
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
    """Random LR/HR training patches: ``(1, p, p)`` LR and ``(1, s p, s p)`` HR tensors (plus the crop corner).

    ``epoch_size`` items per epoch (official: max(1000 // n_train, 1) repeats of the training set). Item ``i`` of
    epoch ``e`` uses ``numpy.random.default_rng([seed, e, i])``: reproducible and independent of worker layout.
    """

    def __init__(self, images: Sequence[PolarImage], cfg: DataConfig, seed: int = 0):
        if not images:
            raise DataError("no training images (check data.dataset and the fold split)")
        self.images, self.cfg, self.seed, self.epoch = list(images), cfg, seed, 0
        self.length = len(self.images) * max(cfg.epoch_size // len(self.images), 1)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        item = self.images[index % len(self.images)]
        cfg = self.cfg
        lr = item.lr
        y, x = sample_patch(lr, cfg.patch_size, rng, cfg.patch_select, cfg.grad_score)
        if cfg.displacement_aug:
            d = cfg.displacement
            lr, _ = displace_odd_rows(lr, rng, d.p, d.max_shift, d.banded, d.band)
        lr_patch, hr_patch = crop_pair(lr, item.hr, y, x, cfg.patch_size, cfg.scale)
        return {"lr": torch.from_numpy(np.ascontiguousarray(lr_patch))[None],
                "hr": torch.from_numpy(np.ascontiguousarray(hr_patch))[None],
                "corner": torch.tensor([cfg.scale * y, cfg.scale * x])}


def register_folder(root: str | Path, src: str, dst: str, max_shift: int = 8, mode: str = "global",
                    band: int = 64, subpixel: bool = False, presmooth: float = 1.0, median: bool = True) -> Path:
    """Preprocessing of real data: register odd/even rows of every ``<root>/<src>/<sample>/1_X1_X1.png``, then 3x3
    median, writing ``<root>/<dst>/<sample>/1_X1_X1.png`` and ``<root>/<dst>/registration.csv``."""
    from pamsr.registration import register

    root = Path(root)
    rows = []
    for sample, path in list_samples(root, src):
        image = read_polar(path)
        registered, result = register(image.astype(np.float64), max_shift, mode, band, subpixel, presmooth)
        out = np.clip(np.round(registered), 0, 255).astype(np.uint8)
        if median:
            out = cv2.medianBlur(out, 3)
        target = root / dst / sample / HR_NAME
        target.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(target), out):
            raise OSError(f"could not write {target}")
        rows.append({"sample": sample, "shift": round(result.shift, 4), "ncc": round(result.score, 5)})
    with (root / dst / "registration.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["sample", "shift", "ncc"])
        writer.writeheader()
        writer.writerows(rows)
    return root / dst


def prepare_data(cfg: Config) -> Path:
    """Make sure ``data.root/data.dataset`` exists. With ``data.synthetic`` a missing set is generated on first
    use: ``synth.py`` writes ``raw/``, ``mid_filter/``, ``clean/``; registration + median of ``raw/`` gives
    ``reg_mid/``. Real data must already be in place."""
    from common.runtime import main_process_first

    root = resolve_path(cfg.data.root)
    needed = [cfg.data.dataset, cfg.data.test_dataset or cfg.data.dataset]
    with main_process_first():
        if cfg.data.synthetic and not all((root / n).is_dir() for n in needed):
            from pamsr.synth import write_dataset

            s = cfg.data.synth
            if not (root / cfg.data.raw_dataset).is_dir():
                write_dataset(root, s.n_samples, s.size, s.max_shift, s.subpixel, s.noise, s.speckle_looks, s.seed)
            if not (root / "reg_mid").is_dir():
                r = cfg.data.registration
                register_folder(root, cfg.data.raw_dataset, "reg_mid", r.max_shift, r.mode, r.band, r.subpixel,
                                r.presmooth)
    for n in needed:
        if not (root / n).is_dir():
            raise DataError(f"dataset folder {root / n} not found. Put the official data there (see README, Data) or "
                            f"set data.synthetic=true to generate the synthetic set")
    return root
