"""One model, one site: the batch stream, the local training step and its loop, prediction and per-image scoring.
No federation logic (federation.py) and no file layout (fl_sequential.py, train.py).

Batch stream (official ``_train``: the batches of one epoch are materialised, then consumed across rounds): epoch
``e`` of site ``k`` is a permutation of its training images with the official augmentation, both drawn from
``default_rng([seed, k, e])``; iteration ``t`` of the site reads batch ``t % n_batches`` of epoch
``t // n_batches`` (``drop_last``). The stream is therefore a function of (seed, site, t) alone.

Under torchrun (centralised rows only) every rank draws the same global batch from that stream and trains on its
contiguous slice (``rank_share``), so the images and augmentations of a step are those of the one-process run;
``evaluate`` scores each rank's strided share of the cases once and gathers the rows in case order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from common.metrics import binary_segmentation_metrics, mask_dice
from common.runtime import dist_info, gather_by_index
from fedlppa.data import Case, augment_pair, stack_batch

__all__ = ["main_logits", "num_batches", "epoch_batches", "batch_at", "poly_lr", "set_lr", "train_iterations",
           "rank_share", "distributed", "predict", "case_metric_names", "case_metrics", "evaluate", "summarise",
           "CLASS_SETS", "dice_fg"]

# evaluated structures per number of classes: binary -> fg; fundus -> cup (1) and disc (>= 1)
CLASS_SETS = {2: {"fg": [1]}, 3: {"cup": [1], "disc": [1, 2]}}


def num_batches(n_images: int, batch_size: int) -> int:
    """Batches per epoch with ``drop_last`` (at least 1: a site smaller than a batch gives one short batch)."""
    return max(1, n_images // batch_size)


def epoch_batches(cases: Sequence[Case], batch_size: int, seed: int, site: int, epoch: int, augment: bool,
                  image_fill: float, ignore: int, stream: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """All batches of one epoch: ``(images (B, C, H, W), labels (B, 2, H, W))`` (weak label, full mask or ignore)."""
    rng = np.random.default_rng([seed, site, epoch, stream])
    order = rng.permutation(len(cases))
    nb = num_batches(len(cases), batch_size)
    out = []
    for b in range(nb):
        items = []
        for i in order[b * batch_size: (b + 1) * batch_size]:
            case = cases[int(i)]
            mask = case.mask if case.mask is not None else np.full_like(case.label, ignore)
            labels = np.stack([case.label, mask])
            items.append(augment_pair(case.image, labels, rng, image_fill, ignore) if augment else
                         (case.image, labels))
        out.append(stack_batch(items))
    return out


def batch_at(cache: dict[int, list], cases: Sequence[Case], batch_size: int, seed: int, site: int, t: int,
             **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch of local iteration ``t`` (module docstring); ``cache`` keeps the current epoch's batches."""
    nb = num_batches(len(cases), batch_size)
    epoch, index = divmod(t, nb)
    if epoch not in cache:
        cache.clear()
        cache[epoch] = epoch_batches(cases, batch_size, seed, site, epoch, **kwargs)
    return cache[epoch][index]


def distributed() -> bool:
    """Whether a torchrun process group is up (the centralised rows' multi-process path)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank_share(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's contiguous slice of a global batch ``(images (B, ...), labels (B, ...))``; the batch itself in
    one process. Slices differ by at most one image (``np.array_split``); an empty slice is an error."""
    info = dist_info()
    if not distributed() or info.world_size == 1:
        return batch
    rows = np.array_split(np.arange(len(batch[0])), info.world_size)[info.rank]
    if len(rows) == 0:
        raise ValueError(f"a batch of {len(batch[0])} images cannot feed {info.world_size} ranks; raise "
                         f"optim.batch_size to at least the number of processes")
    index = torch.from_numpy(rows)
    return batch[0][index], batch[1][index]


def poly_lr(base_lr: float, iteration: int, total: int, power: float = 0.9) -> float:
    """``base (1 - it / total) ** power`` (official per-iteration poly schedule), 0 past the end."""
    return base_lr * max(0.0, 1.0 - iteration / total) ** power


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def train_iterations(model: torch.nn.Module, optimizer: torch.optim.Optimizer, start: int, count: int,
                     batch_fn: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
                     loss_fn: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, int], dict],
                     lr_fn: Callable[[int], float], before_step: Callable[[int], None] | None = None
                     ) -> list[dict[str, float]]:
    """``count`` optimisation steps at global local iterations ``start..start+count-1``.

    ``loss_fn(model, images, labels, t)`` returns ``{"loss": tensor, ...floats}``; ``before_step(t)`` may raise
    (fault injection). Returns one dict of floats per step."""
    model.train()
    logs = []
    for t in range(start, start + count):
        if before_step is not None:
            before_step(t)
        images, labels = batch_fn(t)
        set_lr(optimizer, lr_fn(t))
        out = loss_fn(model, images, labels, t)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
        logs.append({k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in out.items()})
    return logs


def main_logits(out: object) -> torch.Tensor:
    """The main decoder's logits of a model output: ``UniOutput.logits`` (FedLPPA) or the tensor itself (UNet)."""
    return out.logits if hasattr(out, "logits") else out  # UNetUniV5 returns UniOutput, UNet a tensor


@torch.no_grad()
def predict(model: torch.nn.Module, cases: Sequence[Case], device: torch.device | str = "cpu", batch_size: int = 8
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(indices (N,), targets (N, H, W), predictions (N, H, W))``: argmax of the main decoder, eval mode."""
    model.eval()
    preds = []
    for start in range(0, len(cases), batch_size):
        chunk = cases[start: start + batch_size]
        x = torch.from_numpy(np.stack([c.image for c in chunk])).to(device)
        preds.append(main_logits(model(x)).argmax(1).cpu().numpy().astype(np.uint8))
    targets = np.stack([c.label for c in cases])
    return np.arange(len(cases)), targets, np.concatenate(preds)


def _centre_disc(shape: tuple[int, int]) -> np.ndarray:
    rr, cc = np.ogrid[: shape[0], : shape[1]]
    return (rr - shape[0] // 2) ** 2 + (cc - shape[1] // 2) ** 2 <= 1


def case_metrics(pred: np.ndarray, gt: np.ndarray, num_classes: int, rule: str = "common", surface: bool = True
                 ) -> dict[str, float]:
    """Dice and HD95 (pixels) per structure of one image, under the empty-prediction ``rule``:

    ``common``: the repository policy (``common.metrics``); ``official_test``: an empty structure prediction is
    replaced by a radius-1 disc at the image centre first; ``official_val``: scored like ``common`` but flagged
    ``skip_<name> = 1`` when the prediction is empty, so :func:`summarise` leaves it out of the mean."""
    out: dict[str, float] = {}
    for name, labels in CLASS_SETS[num_classes].items():
        p, g = np.isin(pred, labels), np.isin(gt, labels)
        empty = not p.any()
        if rule == "official_test" and empty:
            p = _centre_disc(p.shape)
        res = binary_segmentation_metrics(p, g, surface=surface)
        out[f"dice_{name}"] = res["dice"]
        if surface:
            out[f"hd95_px_{name}"] = res["hd95"]
        out[f"skip_{name}"] = float(rule == "official_val" and empty)
    return out


def case_metric_names(num_classes: int, surface: bool = True) -> list[str]:
    """The keys of a :func:`case_metrics` row, in its order."""
    names = []
    for name in CLASS_SETS[num_classes]:
        names += [f"dice_{name}", *([f"hd95_px_{name}"] if surface else []), f"skip_{name}"]
    return names


def summarise(rows: Sequence[dict[str, float]], num_classes: int) -> dict[str, float]:
    """Mean of per-image metrics (official_val skips flagged rows); ``dice``/``hd95_px`` average the structures."""
    summary: dict[str, float] = {}
    names = list(CLASS_SETS[num_classes])
    for name in names:
        kept = [r for r in rows if not r.get(f"skip_{name}", 0.0)]
        for metric in ("dice", "hd95_px"):
            key = f"{metric}_{name}"
            if rows and key in rows[0]:
                summary[key] = float(np.mean([r[key] for r in kept])) if kept else float("nan")
    summary["dice"] = float(np.mean([summary[f"dice_{n}"] for n in names]))
    if f"hd95_px_{names[0]}" in summary:
        summary["hd95_px"] = float(np.mean([summary[f"hd95_px_{n}"] for n in names]))
    summary["n_images"] = float(len(rows))
    return summary


def evaluate(model: torch.nn.Module, cases: Sequence[Case], num_classes: int, rule: str = "common",
             surface: bool = True, device: torch.device | str = "cpu", keep: list | None = None
             ) -> tuple[list[dict], dict[str, float]]:
    """Per-image rows (``case`` = stem) and their summary on ``cases`` (labels = full masks); the predictions
    ``(N, H, W)`` are appended to ``keep`` when given. Under torchrun each rank scores its share (module
    docstring) and every rank returns all rows."""
    if distributed():
        return _evaluate_shared(model, cases, num_classes, rule, surface, device, keep)
    _, targets, preds = predict(model, cases, device)
    if keep is not None:
        keep.append(preds)
    rows = [{"case": c.stem, **case_metrics(p, t, num_classes, rule, surface)}
            for c, p, t in zip(cases, preds, targets)]
    return rows, summarise(rows, num_classes)


def _evaluate_shared(model: torch.nn.Module, cases: Sequence[Case], num_classes: int, rule: str, surface: bool,
                     device: torch.device | str, keep: list | None) -> tuple[list[dict], dict[str, float]]:
    """:func:`evaluate` over ranks: rank r predicts and scores cases r, r + W, ...; the per-case metric rows (and
    predictions) are gathered by case index, so each case is scored exactly once."""
    info = dist_info()
    share = np.arange(len(cases))[info.rank:: info.world_size]
    names = case_metric_names(num_classes, surface)
    values = np.zeros((0, len(names)), np.float64)
    preds = np.zeros((0, *cases[0].image.shape[1:]), np.uint8)
    if len(share):
        _, targets, preds = predict(model, [cases[int(i)] for i in share], device)
        values = np.array([[case_metrics(p, t, num_classes, rule, surface)[k] for k in names]
                           for p, t in zip(preds, targets)], np.float64)
    index, values, preds = gather_by_index(share, values, preds)
    if keep is not None:
        keep.append(preds)
    rows = [{"case": cases[int(i)].stem, **{k: float(v) for k, v in zip(names, row)}}
            for i, row in zip(index, values)]
    return rows, summarise(rows, num_classes)


def dice_fg(pred: torch.Tensor, mask: torch.Tensor, ignore: int) -> float:
    """Foreground Dice of a pseudo label against the full mask over the pixels where the mask is known."""
    known = mask != ignore
    if not bool(known.any()):
        return float("nan")
    return mask_dice(((pred > 0) & known).cpu().numpy(), ((mask > 0) & known).cpu().numpy(), empty=1.0)
