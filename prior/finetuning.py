"""Downstream protocols on a PRIOR image encoder (our reading of the LOVT / MGCA protocol the paper follows; the
official repository releases no fine-tuning code): linear probing on cached GAP(layer4) features, segmentation
with a U-Net decoder (encoder fine-tuned, Dice on lesion images via ``common.metrics``) and detection with
torchvision's RetinaNet + FPN (mAP via torchmetrics' ``MeanAveragePrecision``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, roc_auc_score
from torch import nn
from torch.utils.data import DataLoader

from common.datasets import split_path
from common.metrics import binary_segmentation_metrics
from prior.data import (
    CHEXPERT_LABELS,
    FIVE_CLASSES,
    ImageDataset,
    load_gray,
    read_chexpert,
    read_covidx,
    read_object_cxr,
    read_rsna,
    read_siim,
    rle_decode,
)
from prior.downstream import gap_features
from prior.models.image_encoder import ImageEncoder
from prior.pipeline import data_folder, nested_fractions
from prior.settings import Config

__all__ = ["TaskData", "task_data", "train_probe", "SegNet", "train_seg", "evaluate_seg", "box_mask"]


@dataclass
class TaskData:
    """Paths and targets of train/test; ``kind``: multilabel | binary | multiclass | mask | boxes."""

    train_paths: list[Path]
    train_targets: list
    test_paths: list[Path]
    test_targets: list
    kind: str
    sizes: list[tuple[int, int]] | None = None


def _split(paths: list, targets: list, root: Path, seed: int, name: str) -> tuple[list, list, list, list]:
    """Seeded 80/20 train/test split of a dataset without an official test split, kept as a CSV under
    ``data/splits/prior/`` (reused when present)."""
    path = split_path("prior", root, f"{name}_split_seed{seed}.csv")
    if path.is_file():
        frame = pd.read_csv(path)
        test_names = set(frame.loc[frame["split"] == "test", "image"])
    else:
        order = np.random.default_rng(seed).permutation(len(paths))
        test_names = {str(paths[i]) for i in order[: max(1, len(paths) // 5)]}
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"image": [str(p) for p in paths],
                      "split": ["test" if str(p) in test_names else "train" for p in paths]}).to_csv(path, index=False)
    tr = [i for i, p in enumerate(paths) if str(p) not in test_names]
    te = [i for i, p in enumerate(paths) if str(p) in test_names]
    return [paths[i] for i in tr], [targets[i] for i in tr], [paths[i] for i in te], [targets[i] for i in te]


def box_mask(boxes, shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    for x0, y0, x1, y1 in boxes:
        mask[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))] = 1
    return mask


def task_data(cfg: Config) -> TaskData:
    """The train/test lists of ``finetune.task`` on ``finetune.dataset`` (train cut to ``finetune.fraction``)."""
    ft = cfg.finetune
    root = data_folder(cfg, ft.dataset)
    if ft.dataset == "chexpert":
        cols = [CHEXPERT_LABELS.index(c) for c in FIVE_CLASSES]
        trp, trl, _ = read_chexpert(root, "train", ft.uncertainty)
        tep, tel, _ = read_chexpert(root, "valid", ft.uncertainty)
        out = TaskData(trp, list(trl[:, cols]), tep, list(tel[:, cols]), "multilabel")
    elif ft.dataset == "covidx":
        trp, trl = read_covidx(root, "train")
        tep, tel = read_covidx(root, "test")
        out = TaskData(trp, list(trl), tep, list(tel), "multiclass")
    elif ft.dataset == "object_cxr":
        tr, te = read_object_cxr(root, "train"), read_object_cxr(root, "dev")
        out = TaskData([p for p, _ in tr], [b for _, b in tr], [p for p, _ in te], [b for _, b in te], "boxes")
    else:
        out = _dicom_task(cfg, root)
    keep = nested_fractions(len(out.train_paths), [ft.fraction], ft.split_seed)[ft.fraction]
    out.train_paths = [out.train_paths[i] for i in keep]
    out.train_targets = [out.train_targets[i] for i in keep]
    return out


def _dicom_task(cfg: Config, root: Path) -> TaskData:
    ft = cfg.finetune
    if ft.dataset == "rsna":
        table = read_rsna(root)
        paths = [root / "stage_2_train_images" / f"{pid}.dcm" for pid in table]
        targets = list(table.values())
    else:
        table = read_siim(root)
        paths = [dcm for dcm, _ in table.values()]
        targets = list(rles for _, rles in table.values())
    trp, trt, tep, tet = _split(paths, targets, root, ft.split_seed, ft.dataset)
    if ft.task == "probe":
        return TaskData(trp, [float(_positive(t)) for t in trt], tep, [float(_positive(t)) for t in tet], "binary")
    if ft.task == "det":
        return TaskData(trp, trt, tep, tet, "boxes")
    return TaskData(trp, [_mask(p, t) for p, t in zip(trp, trt)], tep, [_mask(p, t) for p, t in zip(tep, tet)],
                    "mask")


def _positive(target) -> bool:
    if isinstance(target, list) and target and isinstance(target[0], str):
        return any(r.strip() not in ("-1", "") for r in target)
    return bool(target)


def _mask(path: Path, target) -> np.ndarray:
    shape = load_gray(path).shape
    if target and isinstance(target[0], str):
        mask = np.zeros(shape, np.uint8)
        for rle in target:
            mask |= rle_decode(rle, shape, str(path)).astype(np.uint8)
        return mask
    return box_mask(target, shape)


# --------------------------------------------------------------------------------------------- probe
def train_probe(encoder: ImageEncoder, data: TaskData, cfg: Config, device: torch.device) -> dict[str, float]:
    """Linear layer on cached GAP(layer4) features (full-batch AdamW); AUC (macro over labels) or accuracy."""
    ft = cfg.finetune
    mk = lambda p, t: DataLoader(ImageDataset(p, t, cfg.data.image_size, cfg.data.mean, cfg.data.std),  # noqa: E731
                                 batch_size=64, shuffle=False, num_workers=cfg.data.num_workers)
    xtr, ytr = gap_features(encoder, mk(data.train_paths, data.train_targets), device)
    xte, yte = gap_features(encoder, mk(data.test_paths, data.test_targets), device)
    mean, std = xtr.mean(0), xtr.std(0) + 1e-6
    xtr_t, xte_t = torch.tensor((xtr - mean) / std), torch.tensor((xte - mean) / std)
    n_out = {"multilabel": ytr.shape[-1] if ytr.ndim > 1 else 1, "binary": 1, "multiclass": 3}[data.kind]
    head = nn.Linear(xtr.shape[1], n_out)
    opt = torch.optim.AdamW(head.parameters(), lr=ft.lr, weight_decay=ft.weight_decay)
    ytr_t = torch.tensor(ytr)
    for _ in range(ft.epochs):
        logits = head(xtr_t)
        if data.kind == "multiclass":
            loss = F.cross_entropy(logits, ytr_t.long())
        else:
            loss = F.binary_cross_entropy_with_logits(logits, ytr_t.float().reshape(logits.shape))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        scores = head(xte_t).numpy()
    if data.kind == "multiclass":
        return {"accuracy": float(accuracy_score(yte, scores.argmax(1)))}
    yte = yte.reshape(scores.shape)
    aucs = [roc_auc_score(yte[:, k], scores[:, k]) for k in range(scores.shape[1]) if len(np.unique(yte[:, k])) == 2]
    return {"auc": float(np.mean(aucs)) if aucs else float("nan")}


# --------------------------------------------------------------------------------------------- segmentation
class SegNet(nn.Module):
    """The PRIOR image encoder with a U-Net decoder (smp-style: upsample, concatenate the skip, two
    Conv3x3-BN-ReLU per stage; decoder channels halve from 128). ``(B, 1, S, S)`` -> logits ``(B, 1, S, S)``."""

    def __init__(self, encoder: ImageEncoder, decoder_channels: tuple[int, ...] = (128, 64, 32, 16)):
        super().__init__()
        self.encoder = encoder
        skips = encoder.pyramid_channels()  # stem, c1, c2, c3, c4
        ins = [skips[4] + skips[2], decoder_channels[0] + skips[1], decoder_channels[1] + skips[0],
               decoder_channels[2]]
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True),
                          nn.Conv2d(o, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))
            for i, o in zip(ins, decoder_channels))
        self.head = nn.Conv2d(decoder_channels[-1], 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stem, c1, c2, _, c4 = self.encoder.pyramid(x)
        z = c4
        for block, skip in zip(self.blocks, (c2, c1, stem, None)):
            size = skip.shape[-2:] if skip is not None else x.shape[-2:]
            z = F.interpolate(z, size=size, mode="nearest")
            z = block(torch.cat([z, skip], 1) if skip is not None else z)
        return self.head(z)


def _mask_loader(cfg: Config, paths, masks, shuffle: bool) -> DataLoader:
    size = cfg.data.image_size
    resized = [torch.from_numpy(cv2_resize(m, size))[None].float() for m in masks]
    ds = ImageDataset(paths, resized, size, cfg.data.mean, cfg.data.std)
    g = torch.Generator().manual_seed(cfg.finetune.split_seed)
    return DataLoader(ds, batch_size=cfg.finetune.batch_size, shuffle=shuffle, generator=g,
                      num_workers=cfg.data.num_workers)


def cv2_resize(mask: np.ndarray, size: int) -> np.ndarray:
    import cv2

    return cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)


def train_seg(net: SegNet, data: TaskData, cfg: Config, device: torch.device) -> SegNet:
    """Fine-tune encoder + decoder with BCE + soft Dice (AdamW, ``finetune.epochs``)."""
    loader = _mask_loader(cfg, data.train_paths, data.train_targets, shuffle=True)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.finetune.lr, weight_decay=cfg.finetune.weight_decay)
    net.train()
    for _ in range(cfg.finetune.epochs):
        for images, masks, _ in loader:
            logits = net(images.to(device))
            masks = masks.to(device)
            prob = torch.sigmoid(logits)
            dice = 1 - (2 * (prob * masks).sum() + 1) / (prob.sum() + masks.sum() + 1)
            loss = F.binary_cross_entropy_with_logits(logits, masks) + dice
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net


@torch.no_grad()
def evaluate_seg(net: SegNet, data: TaskData, cfg: Config, device: torch.device) -> tuple[dict, list[dict]]:
    """Dice on the test images holding a lesion (``common.metrics`` policy), at the network resolution."""
    net.eval()
    loader = _mask_loader(cfg, data.test_paths, data.test_targets, shuffle=False)
    rows = []
    for images, masks, index in loader:
        pred = (torch.sigmoid(net(images.to(device))) > 0.5).cpu().numpy()
        for p, m, i in zip(pred, masks.numpy(), index.tolist()):
            if m.any():
                rows.append({"image": str(data.test_paths[i]),
                             **binary_segmentation_metrics(p[0], m[0] > 0, surface=False)})
    dice = float(np.mean([r["dice"] for r in rows])) if rows else float("nan")
    return {"seg_dice": dice, "seg_cases": len(rows)}, rows
