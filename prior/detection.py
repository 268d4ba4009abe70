"""Detection fine-tuning on a PRIOR image encoder: torchvision's RetinaNet with an FPN on the encoder's layer2-4
maps (P3-P5, plus P6/P7 from P5 as in RetinaNet), one foreground class (RSNA opacity, Object-CXR foreign object),
the whole network fine-tuned. Our reading of the LOVT / MGCA detection protocol the paper follows (the official
repository releases no fine-tuning code): mAP averaged over IoU thresholds 0.40:0.05:0.75, through torchmetrics'
``MeanAveragePrecision`` (pycocotools backend).

Anchors follow RetinaNet's rule scaled to the input: on each level a base size of 4 x its stride, three scales
2^(0, 1/3, 2/3) and aspect ratios (0.5, 1, 2). ``finetune.det_width`` is the FPN/head width and
``finetune.det_head_convs`` the number of 3x3 convolutions of each head tower (torchvision's default tower has 4).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from prior.data import load_gray
from prior.models.image_encoder import ImageEncoder

__all__ = ["MAP_IOU_THRESHOLDS", "EncoderFPN", "build_detector", "BoxDataset", "train_det", "evaluate_det"]

MAP_IOU_THRESHOLDS = [round(0.40 + 0.05 * i, 2) for i in range(8)]  # 0.40 ... 0.75


class EncoderFPN(nn.Module):
    """``(B, 1, S, S)`` -> ``OrderedDict`` of five width-``width`` maps: FPN over layer2-4, then P6, P7."""

    def __init__(self, encoder: ImageEncoder, width: int):
        super().__init__()
        self.encoder = encoder
        channels = encoder.pyramid_channels()[2:]
        self.fpn = FeaturePyramidNetwork(channels, width, extra_blocks=LastLevelP6P7(width, width))
        self.out_channels = width

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        _, _, c2, c3, c4 = self.encoder.pyramid(x)
        return self.fpn(OrderedDict([("c2", c2), ("c3", c3), ("c4", c4)]))


def _anchor_generator(backbone: EncoderFPN, image_size: int) -> AnchorGenerator:
    with torch.no_grad():
        was_training = backbone.training
        maps = backbone.eval()(torch.zeros(1, 1, image_size, image_size))
        backbone.train(was_training)
    strides = [image_size / m.shape[-1] for m in maps.values()]
    sizes = tuple(tuple(4 * s * 2 ** (k / 3) for k in range(3)) for s in strides)
    return AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))


def build_detector(encoder: ImageEncoder, image_size: int, width: int = 64, head_convs: int = 2) -> RetinaNet:
    """RetinaNet (2 classes: background, finding) on ``encoder`` for ``image_size`` square inputs that the data
    already normalised (the detector's own transform neither resizes nor re-normalises)."""
    if not 1 <= head_convs <= 4:
        raise ValueError(f"finetune.det_head_convs must lie in 1..4 (torchvision's tower has 4), got {head_convs}")
    backbone = EncoderFPN(encoder, width)
    model = RetinaNet(backbone, num_classes=2, anchor_generator=_anchor_generator(backbone, image_size),
                      min_size=image_size, max_size=image_size, image_mean=[0.0], image_std=[1.0])
    for head in (model.head.classification_head, model.head.regression_head):
        head.conv = head.conv[:head_convs]
    return model


class BoxDataset(Dataset):
    """``(image (1, S, S), {"boxes": (N, 4) in input pixels, "labels": (N,) ones}, index)``; boxes are given in
    the original image's pixels and rescaled with the image."""

    def __init__(self, paths: Sequence[Path], boxes: Sequence, image_size: int, mean: float, std: float):
        if len(paths) != len(boxes):
            raise ValueError(f"{len(paths)} images but {len(boxes)} box lists")
        self.paths, self.boxes = list(paths), list(boxes)
        self.size, self.mean, self.std = image_size, mean, std

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        import cv2

        image = load_gray(self.paths[index])
        h, w = image.shape
        image = cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        tensor = (torch.from_numpy(image.astype(np.float32) / 255.0)[None] - self.mean) / self.std
        scale = torch.tensor([self.size / w, self.size / h, self.size / w, self.size / h])
        boxes = torch.tensor(self.boxes[index], dtype=torch.float32).reshape(-1, 4) * scale
        return tensor, {"boxes": boxes, "labels": torch.ones(len(boxes), dtype=torch.int64)}, index


def _collate(items):
    images, targets, index = zip(*items)
    return list(images), list(targets), list(index)


def _loader(cfg, data_paths, data_boxes, shuffle: bool) -> DataLoader:
    ds = BoxDataset(data_paths, data_boxes, cfg.data.image_size, cfg.data.mean, cfg.data.std)
    g = torch.Generator().manual_seed(cfg.finetune.split_seed)
    return DataLoader(ds, batch_size=cfg.finetune.batch_size, shuffle=shuffle, generator=g, collate_fn=_collate,
                      num_workers=cfg.data.num_workers)


def train_det(net: RetinaNet, data, cfg, device: torch.device) -> RetinaNet:
    """Fine-tune the whole detector with RetinaNet's focal + smooth-L1 losses (AdamW, ``finetune.epochs``)."""
    loader = _loader(cfg, data.train_paths, data.train_targets, shuffle=True)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.finetune.lr, weight_decay=cfg.finetune.weight_decay)
    net.train()
    for epoch in range(cfg.finetune.epochs):
        for images, targets, _ in loader:
            losses = net([x.to(device) for x in images], [{k: v.to(device) for k, v in t.items()} for t in targets])
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"detection epoch {epoch + 1}: non-finite loss "
                                         f"{ {k: float(v) for k, v in losses.items()} }; lower finetune.lr")
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net


@torch.no_grad()
def evaluate_det(net: RetinaNet, data, cfg, device: torch.device) -> tuple[dict, list[dict]]:
    """mAP over IoU 0.40:0.05:0.75 and mAP@0.5 on the test images (with and without findings), per-image counts."""
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(box_format="xyxy", iou_thresholds=MAP_IOU_THRESHOLDS, backend="pycocotools")
    metric50 = MeanAveragePrecision(box_format="xyxy", iou_thresholds=[0.5], backend="pycocotools")
    net.eval()
    rows = []
    for images, targets, index in _loader(cfg, data.test_paths, data.test_targets, shuffle=False):
        preds = [{k: v.cpu() for k, v in p.items()} for p in net([x.to(device) for x in images])]
        metric.update(preds, targets)
        metric50.update(preds, targets)
        for p, t, i in zip(preds, targets, index):
            rows.append({"image": str(data.test_paths[i]), "n_true": len(t["boxes"]),
                         "n_pred_score_0.5": int((p["scores"] > 0.5).sum())})
    result = {"det_map": float(metric.compute()["map"]), "det_map_50": float(metric50.compute()["map"]),
              "det_cases": len(rows)}
    return result, rows
