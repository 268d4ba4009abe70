"""The data stages of a PAMSR run, in order: (1) the synthetic set on first use, (2) registration + median of raw
scans (paper: registration "in the preprocessing"), (3) the file check of every image a split lists, before any run
folder exists, (4) the train / held-out images and (5) the training-patch loader.

Real data (``data.synthetic=false``, ``--data-root``) is only read. The synthetic generator writes through
:func:`common.datasets.ensure_dataset` (a folder it created itself, stamped with the generator parameters).
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from torch.utils.data import DataLoader
from tqdm import tqdm

from common.datasets import ensure_dataset, verify_files
from common.rundir import resolve_path
from common.runtime import dist_info, main_process_first, make_sampler
from common.seed import loader_seed_kwargs
from pamsr.data import (
    HR_NAME,
    DataError,
    PolarImage,
    TrainPatches,
    clean_path,
    list_samples,
    load_images,
    read_polar,
    split_samples,
)
from pamsr.registration import register
from pamsr.settings import Config, RegistrationConfig

__all__ = ["RAW_DATASET", "register_folder", "synthetic_params", "ensure_synthetic", "split_paths", "prepare_data",
           "Splits", "load_splits", "make_train_loader"]

RAW_DATASET = "raw"


def register_folder(root: str | Path, src: str, dst: str, reg: RegistrationConfig, median: bool = True,
                    progress: bool = True, out_root: str | Path | None = None) -> Path:
    """Stage 2: register the odd/even rows of every ``<root>/<src>/<sample>/1_X1_X1.png``, then 3x3 median, into a
    new ``<out_root>/<dst>/<sample>/1_X1_X1.png`` plus ``registration.csv`` (sample, shift, ncc) there
    (``out_root`` defaults to ``root``). A non-empty target folder is refused: nothing is ever overwritten.
    """
    root = Path(root)
    target_dir = Path(out_root or root) / dst
    if target_dir.exists() and any(target_dir.iterdir()):
        raise DataError(f"{target_dir} exists and is not empty; registration writes only into a new folder. "
                        f"Choose another --dst or remove {target_dir} yourself")
    rows = []
    for sample, path in tqdm(list_samples(root, src), desc="register", disable=not progress, leave=False):
        image = read_polar(path)
        registered, result = register(image.astype(np.float64), reg.max_shift, reg.mode, reg.band, reg.subpixel,
                                      reg.presmooth)
        out = np.clip(np.round(registered), 0, 255).astype(np.uint8)
        if median:
            out = cv2.medianBlur(out, 3)
        target = target_dir / sample / HR_NAME
        target.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(target), out):
            raise OSError(f"could not write {target}")
        rows.append({"sample": sample, "shift": round(result.shift, 4), "ncc": round(result.score, 5)})
    with (target_dir / "registration.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["sample", "shift", "ncc"])
        writer.writeheader()
        writer.writerows(rows)
    return target_dir


def synthetic_params(cfg: Config) -> dict:
    """Everything the synthetic set's content depends on (stored in its stamp)."""
    return {"generator": "pamsr.synth", "synth": asdict(cfg.data.synth), "registration": asdict(cfg.registration)}


def ensure_synthetic(cfg: Config) -> Path:
    """Stage 1: the synthetic set at ``data.root`` (``raw/``, ``mid_filter/``, ``clean/``, ``shifts.csv`` and the
    registered ``reg/`` and ``reg_mid/`` (+ 3x3 median)), generated on first use into a folder the generator
    creates, reused when its stamp matches, refused otherwise (:func:`common.datasets.ensure_dataset`)."""
    from pamsr.synth import write_dataset

    s, progress = cfg.data.synth, cfg.runtime.progress

    def generate(folder: Path) -> None:
        write_dataset(folder, s, progress=progress)
        register_folder(folder, RAW_DATASET, "reg", cfg.registration, median=False, progress=progress)
        register_folder(folder, RAW_DATASET, "reg_mid", cfg.registration, progress=progress)

    return ensure_dataset(resolve_path(cfg.data.root), synthetic_params(cfg), generate,
                          what="synthetic rotational-scan PAM set")


def split_paths(cfg: Config) -> list[Path]:
    """Every HR file the run reads: the training folds of ``data.dataset`` and the validation and test folds of
    ``data.test_dataset`` (default ``data.dataset``), plus their clean ground truth where it exists."""
    train = split_samples(cfg.data, "train")
    held_out = split_samples(cfg.data, "val", cfg.data.test_dataset) + split_samples(cfg.data, "test",
                                                                                     cfg.data.test_dataset)
    clean = [clean_path(cfg.data, sample) for sample, _ in held_out]
    return [path for _, path in train + held_out] + [p for p in clean if p is not None]


def prepare_data(cfg: Config) -> Path:
    """Stages 1 and 3: generate the synthetic set when ``data.synthetic`` (rank 0 first under torchrun), then check
    that every listed image exists and decodes (``data.verify``) before any run folder is created."""
    with main_process_first():
        root = ensure_synthetic(cfg) if cfg.data.synthetic else resolve_path(cfg.data.root)
    for name in {cfg.data.dataset, cfg.data.test_dataset or cfg.data.dataset}:
        if not (root / name).is_dir():
            raise DataError(f"dataset folder {root / name} not found. Put the official data there (README, Data), "
                            f"pass --data-root, or set data.synthetic=true to generate the synthetic set")
    count = verify_files(split_paths(cfg), cfg.data.verify, what="PAM image")
    if dist_info().is_main and count:
        print(f"[pamsr] checked {count} images under {root} (data.verify={cfg.data.verify})")
    return root


@dataclass
class Splits:
    """Stage 4: the training images, the validation images (fold ``data.val_fold``: best epoch and early stop) and
    the test images (fold ``data.fold``); with ``data.val_fold: null`` validation = test, as in the official code."""

    train: list[PolarImage]
    val: list[PolarImage]
    test: list[PolarImage]


def load_splits(cfg: Config) -> Splits:
    held_out = cfg.data.test_dataset
    return Splits(load_images(cfg.data, "train"), load_images(cfg.data, "val", held_out),
                  load_images(cfg.data, "test", held_out))


def make_train_loader(cfg: Config, images: list[PolarImage]) -> DataLoader:
    """Stage 5: random LR/HR patches (gradient patch selection + displacement degradation), shuffled. Call
    :func:`common.seed.seed_loader_epoch` and ``loader.dataset.set_epoch`` before each epoch: the order and the
    patches of epoch ``e`` are then a function of ``(seed, e)``, which makes ``--resume`` exact."""
    dataset = TrainPatches(images, cfg.data, cfg.patch_selection, cfg.displacement, seed=cfg.seed)
    sampler = make_sampler(dataset, shuffle=True, seed=cfg.seed)
    return DataLoader(dataset, batch_size=cfg.optim.batch_size, shuffle=sampler is None, sampler=sampler,
                      num_workers=cfg.data.num_workers, drop_last=len(dataset) >= cfg.optim.batch_size,
                      **loader_seed_kwargs(cfg.seed, dist_info().rank))
