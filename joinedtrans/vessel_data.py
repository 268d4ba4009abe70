"""Readers of the vessel-segmentation sets used to pre-train the encoder, in their published layouts:

- DRIVE: ``{training,test}/images/NN_<split>.tif``, ``1st_manual/NN_manual1.gif``, ``mask/NN_<split>_mask.gif``;
- CHASE_DB1: ``Image_NNX.jpg`` with ``Image_NNX_1stHO.png`` (first observer);
- HRF: ``images/<name>.JPG|jpg``, ``manual1/<name>.tif``, ``mask/<name>_mask.tif``.

Vessel masks must be binary {0, 255} (GIF palette indices {0, 1} are accepted as the same). DRIVE ``test`` is held
out to score the pre-training (vessel Dice); everything else trains.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from common.readers import read_image, read_mask
from common.seed import epoch_seed
from joinedtrans.data import DataError
from joinedtrans.targets import resize_area, resize_nearest

__all__ = ["VesselCase", "list_vessel_cases", "load_vessel", "VesselDataset"]


@dataclass(frozen=True)
class VesselCase:
    image: Path
    vessels: Path
    dataset: str
    split: str


def _need(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataError(f"{what} not found: {path}. Check pretrain.root and the dataset layout")
    return path


def _drive(root: Path, split: str) -> list[VesselCase]:
    folder = root / "DRIVE" / split
    if not (folder / "images").is_dir():
        raise DataError(f"DRIVE folder not found: {folder / 'images'}")
    out = []
    for img in sorted((folder / "images").glob("*.tif")):
        num = img.stem.split("_")[0]
        out.append(VesselCase(img, _need(folder / "1st_manual" / f"{num}_manual1.gif", f"vessel mask of {img}"),
                              "drive", split))
    return out


def _chase(root: Path) -> list[VesselCase]:
    folder = root / "CHASE_DB1"
    images = sorted(p for p in folder.glob("Image_*.jpg"))
    if not images:
        raise DataError(f"no CHASE_DB1 images (Image_NNX.jpg) under {folder}")
    return [VesselCase(p, _need(folder / f"{p.stem}_1stHO.png", f"vessel mask of {p}"), "chase_db1", "train")
            for p in images]


def _hrf(root: Path) -> list[VesselCase]:
    folder = root / "HRF"
    images = sorted(p for p in (folder / "images").glob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    if not images:
        raise DataError(f"no HRF images under {folder / 'images'}")
    return [VesselCase(p, _need(folder / "manual1" / f"{p.stem}.tif", f"vessel mask of {p}"), "hrf", "train")
            for p in images]


def list_vessel_cases(root: Path, datasets: tuple[str, ...]) -> tuple[list[VesselCase], list[VesselCase]]:
    """(training cases, held-out DRIVE test cases) of the named sets under ``root``."""
    unknown = set(datasets) - {"drive", "chase_db1", "hrf"}
    if unknown:
        raise DataError(f"pretrain.datasets: unknown {sorted(unknown)}; choose from drive, chase_db1, hrf")
    train: list[VesselCase] = []
    held_out: list[VesselCase] = []
    if "drive" in datasets:
        train += _drive(root, "training")
        held_out = _drive(root, "test")
    if "chase_db1" in datasets:
        train += _chase(root)
    if "hrf" in datasets:
        train += _hrf(root)
    return train, held_out


def load_vessel(case: VesselCase) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 image and boolean vessel mask; a mask that is not {0, 255} (or {0, 1}) is an error."""
    image = read_image(case.image, mode="RGB")
    mask = read_mask(case.vessels)
    values = set(np.unique(mask).tolist())
    if not (values <= {0, 255} or values <= {0, 1}):
        raise DataError(f"vessel mask {case.vessels} holds values {sorted(values)[:8]}; expected binary 0/255. "
                        f"Re-export it as a binary mask")
    if mask.shape != image.shape[:2]:
        raise DataError(f"vessel mask {case.vessels} is {mask.shape[::-1]} but image {case.image} is "
                        f"{image.shape[1::-1]} (W, H)")
    return image, mask > 0


class VesselDataset(Dataset):
    """Whole images at ``size`` px: ``{"image": (3, S, S) normalised, "target": (1, S, S), "index"}``.

    ``kind: vessel`` -> target = vessel mask (nearest); ``denoise`` -> input = image + seeded Gaussian noise,
    target = the clean normalised image (3 channels). Seeded horizontal flips with probability ``flip_p``."""

    def __init__(self, cases: list[VesselCase], size: int, mean: list[float], std: list[float], kind: str,
                 flip_p: float, seed: int):
        self.images, self.masks = [], []
        for case in cases:
            image, mask = load_vessel(case)
            self.images.append(resize_area(image, (size, size)))
            self.masks.append(resize_nearest(mask.astype(np.uint8), (size, size)))
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self.kind, self.flip_p, self.seed, self.epoch = kind, flip_p, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng(epoch_seed(self.seed, self.epoch, index))
        x = ((self.images[index].astype(np.float32) / 255.0 - self.mean) / self.std).transpose(2, 0, 1)
        y = self.masks[index][None].astype(np.float32)
        if self.kind == "denoise":
            y = x.copy()
            x = x + rng.normal(0, 0.5, x.shape).astype(np.float32)
        if rng.random() < self.flip_p:
            x, y = np.ascontiguousarray(x[..., ::-1]), np.ascontiguousarray(y[..., ::-1])
        return {"image": torch.from_numpy(np.ascontiguousarray(x)), "target": torch.from_numpy(y),
                "index": torch.tensor(index)}
