"""Fine-stage inputs: ROI crops of the image and of the coarse prediction (JOINED ``Fine/dataset.py``: the first
two channels of the cropped coarse prediction, OC and OD, are concatenated to the RGB crop -> 5 channels).

Disc/cup crops are centred where the coarse stage puts the disc (the same hand-off at training and test time,
JOINED trains its fine stage on its own coarse model's crops). Fovea crops [ours] are centred on the truth plus a
uniform offset of at most ``max_offset`` x ROI during training, and on the coarse fovea at test time; the input is
RGB + the coarse fovea heatmap, the target a Gaussian of sigma = ``sigma`` x ROI.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from common.seed import epoch_seed
from joinedtrans.data import Loaded
from joinedtrans.roi import crop, crop_size, roi_box
from joinedtrans.targets import heatmap, mask_to_channels, resize_area, resize_nearest

__all__ = ["CoarsePrediction", "fine_window", "fine_input", "FineCrops", "fovea_input", "FoveaCrops"]


@dataclass
class CoarsePrediction:
    """Coarse outputs of one image at original size: cleaned ``oc``/``od`` (H, W) bool, ``fovea`` heatmap
    (H, W) float (None without a heatmap branch), decoded ``fovea_xy`` and the ROI ``centre`` (x, y)."""

    oc: np.ndarray
    od: np.ndarray
    fovea_map: np.ndarray | None
    fovea_xy: tuple[float, float] | None
    centre: tuple[float, float]


def fine_window(pred: CoarsePrediction, roi: int, ref_height: int) -> tuple[tuple[int, int], int]:
    """``(box, side)`` of the disc ROI at original resolution."""
    h, w = pred.od.shape
    side = crop_size(roi, h, ref_height)
    return roi_box(pred.centre, side, w, h), side


def _norm_rgb(image: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray:
    return ((image.astype(np.float32) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32))


def fine_input(item: Loaded, pred: CoarsePrediction, roi: int, ref_height: int, use_coarse: bool,
               mean: list[float], std: list[float]) -> tuple[np.ndarray, tuple[int, int], int]:
    """``(C, roi, roi)`` float32 input [R, G, B(, coarse OC, coarse OD)], its box and side at original size."""
    box, side = fine_window(pred, roi, ref_height)
    rgb = crop(item.image, box, side)
    chans = [_norm_rgb(rgb if side == roi else resize_area(rgb, (roi, roi)), mean, std).transpose(2, 0, 1)]
    if use_coarse:
        coarse = crop(np.stack([pred.oc, pred.od], -1).astype(np.uint8), box, side)
        coarse = coarse if side == roi else resize_nearest(coarse, (roi, roi))
        chans.append(coarse.transpose(2, 0, 1).astype(np.float32))
    x = np.concatenate(chans)
    expected = 5 if use_coarse else 3
    if x.shape[0] != expected:
        raise ValueError(f"fine input has {x.shape[0]} channels, expected {expected}")
    return x, box, side


def _flip(arrays: list[np.ndarray], rng: np.random.Generator, p: float) -> list[np.ndarray]:
    """OneOf(HorizontalFlip, VerticalFlip) with probability ``p`` (JOINED ``Fine/augmentation.py``)."""
    if rng.random() >= p:
        return arrays
    axis = -1 if rng.random() < 0.5 else -2
    return [np.ascontiguousarray(np.flip(a, axis)) for a in arrays]


class FineCrops(Dataset):
    """Training crops: ``{"image": (C, R, R), "seg": (3, R, R) [OC, OD, BG], "index"}`` with seeded flips."""

    def __init__(self, items: list[Loaded], preds: list[CoarsePrediction], roi: int, ref_height: int,
                 use_coarse: bool, mean: list[float], std: list[float], flip_p: float, seed: int):
        self.inputs, self.targets = [], []
        for item, pred in zip(items, preds):
            x, box, side = fine_input(item, pred, roi, ref_height, use_coarse, mean, std)
            seg = crop(mask_to_channels(item.mask, item.palm).transpose(1, 2, 0), box, side)
            seg = seg if side == roi else resize_nearest(seg, (roi, roi))
            self.inputs.append(x)
            self.targets.append(seg.transpose(2, 0, 1).astype(np.float32))
        self.flip_p, self.seed, self.epoch = flip_p, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng(epoch_seed(self.seed, self.epoch, index))
        x, y = _flip([self.inputs[index], self.targets[index]], rng, self.flip_p)
        return {"image": torch.from_numpy(x), "seg": torch.from_numpy(y), "index": torch.tensor(index)}


def fovea_input(item: Loaded, fovea_map: np.ndarray, centre: tuple[float, float], roi: int, mean: list[float],
                std: list[float]) -> tuple[np.ndarray, tuple[int, int]]:
    """``(4, roi, roi)`` [R, G, B, coarse fovea heatmap] around ``centre`` and the window's top-left."""
    h, w = item.mask.shape
    box = roi_box(centre, roi, w, h)
    rgb = _norm_rgb(crop(item.image, box, roi), mean, std).transpose(2, 0, 1)
    return np.concatenate([rgb, crop(fovea_map, box, roi)[None]]).astype(np.float32), box


class FoveaCrops(Dataset):
    """Training crops around the true fovea (uniform offset up to ``max_offset`` x roi, redrawn each epoch):
    ``{"image": (4, R, R), "heatmap": (1, R, R), "index"}``. Images whose fovea is not visible are left out."""

    def __init__(self, items: list[Loaded], preds: list[CoarsePrediction], roi: int, sigma: float,
                 max_offset: float, mean: list[float], std: list[float], seed: int):
        keep = [(it, p) for it, p in zip(items, preds) if it.case.fovea is not None and p.fovea_map is not None]
        self.items, self.preds = [k[0] for k in keep], [k[1] for k in keep]
        self.roi, self.sigma, self.max_offset = roi, sigma, max_offset
        self.mean, self.std, self.seed, self.epoch = mean, std, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item, pred = self.items[index], self.preds[index]
        rng = np.random.default_rng(epoch_seed(self.seed, self.epoch, index))
        fx, fy = item.case.fovea
        off = rng.uniform(-self.max_offset, self.max_offset, 2) * self.roi
        x, box = fovea_input(item, pred.fovea_map, (fx + off[0], fy + off[1]), self.roi, self.mean, self.std)
        target = heatmap((self.roi, self.roi), (fx - box[0], fy - box[1]), self.sigma * self.roi)
        return {"image": torch.from_numpy(x), "heatmap": torch.from_numpy(target[None]), "index": torch.tensor(index)}
