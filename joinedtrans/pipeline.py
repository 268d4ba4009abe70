"""The stages of JOINEDTrans as numbered plain functions (abstract: "a coarse stage and a fine stage"):

0. ``prepare_data``      synthetic trees on first use, case lists, file checks, decoded images, channel statistics
1. ``train_pretrain``    encoder + one UNet++ decoder on vessel segmentation (or denoising) [ours]
2. ``train_coarse``      joint OD/OC segmentation + heatmap (+ distance) network, curriculum losses
3. ``coarse_predict``    hand-off: cleaned coarse masks at original size, decoded fovea, ROI centres
4. ``train_fine``        disc/cup U-Net on ROI crops of its own coarse model's training predictions
5. ``train_fovea``       fovea U-Net on ROI crops around the fovea [ours]
6. ``infer``             coarse -> ROI crop -> fine (disc/cup and fovea) -> pasted back at original size
7. ``score_split``       per-image metrics and their summary (coarse and final)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.checkpoint import CheckpointError, load_checkpoint
from common.datasets import verify_files
from common.rundir import RunDir, latest_run, resolve_path
from common.runtime import all_gather_arrays, dist_info, main_process_first, shard
from common.tracking import Tracker
from joinedtrans.crops import CoarsePrediction, FineCrops, FoveaCrops, fine_input, fovea_input
from joinedtrans.data import CoarseDataset, Loaded, channel_stats, list_cases, load_cases
from joinedtrans.engine import Stage, fit, predict
from joinedtrans.losses import CoarseLoss, fine_dice_loss
from joinedtrans.model import (
    CoarseNet,
    JoinedTrans,
    UNet,
    build_fine_model,
    build_fovea_model,
    build_model,
    build_pretrain_model,
)
from joinedtrans.roi import clean_mask, paste, roi_centre
from joinedtrans.scoring import case_metrics, summarise
from joinedtrans.settings import CoarseConfig, Config
from joinedtrans.synth import ensure_synthetic
from joinedtrans.targets import constrain_fovea_map, decode_marginal, resize_area, resize_bilinear, resize_nearest
from joinedtrans.vessel_data import VesselDataset, list_vessel_cases

__all__ = ["DataBundle", "prepare_data", "vessel_root", "train_pretrain", "load_encoder", "train_coarse",
           "coarse_inputs", "coarse_predict", "train_fine", "train_fovea", "Prediction", "infer", "score_split",
           "build_pipeline", "load_pipeline", "vessel_loss", "PROJECT"]

PROJECT = "joinedtrans"


@dataclass
class DataBundle:
    """Decoded splits and the per-channel statistics of the training images at coarse size."""

    train: list[Loaded]
    val: list[Loaded]
    test: list[Loaded]
    mean: list[float]
    std: list[float]


# --------------------------------------------------------------------------------------------- 0. data
def prepare_data(cfg: Config, splits: tuple[str, ...] = ("train", "val", "test")) -> DataBundle:
    """Write the synthetic set on first use (rank 0 first), list every split, check every file, decode all."""
    if cfg.data.synthetic:
        with main_process_first():
            ensure_synthetic(resolve_path(cfg.data.root), cfg.data.synth)
    cases = {s: list_cases(cfg.data, s) if s in splits else [] for s in ("train", "val", "test")}
    verify_files([p for cs in cases.values() for c in cs for p in (c.image, c.mask)], cfg.data.verify,
                 what=cfg.data.dataset)
    loaded = {s: load_cases(cs, cfg.data.mask_snap) for s, cs in cases.items()}
    size = (cfg.coarse.size, cfg.coarse.size)
    ref = loaded["train"] or loaded["test"] or loaded["val"]
    mean, std = channel_stats([resize_area(it.image, size) for it in ref])
    return DataBundle(loaded["train"], loaded["val"], loaded["test"], mean, std)


# --------------------------------------------------------------------------------------------- 1. pre-training
def vessel_root(cfg: Config) -> Path:
    """``pretrain.root``, or the synthetic data root (which holds DRIVE/CHASE_DB1/HRF) when empty."""
    return resolve_path(cfg.pretrain.root or cfg.data.root)


def vessel_loss(pos_weight: float):
    """Vessel pre-training loss: global soft Dice + BCE with vessel pixels weighted ``pos_weight`` (1 = plain BCE;
    vessels cover ~4 % of the pixels and plain BCE holds every output below 0.5, README); denoising: MSE."""

    def run(model: nn.Module, batch: dict, step: int, total: int) -> tuple[torch.Tensor, dict]:
        pred = model(batch["image"])
        target = batch["target"]
        if pred.shape[1] == 3:  # denoising
            loss = torch.mean((pred - target) ** 2)
            return loss, {"mse": float(loss.detach())}
        inter = (pred * target).sum()
        dice = 1 - 2 * inter / (pred.sum() + target.sum()).clamp_min(1e-7)
        weight = 1 + (pos_weight - 1) * target if pos_weight != 1 else None
        bce = torch.nn.functional.binary_cross_entropy(pred.clamp(1e-6, 1 - 1e-6), target, weight=weight)
        return dice + bce, {"dice_loss": float(dice.detach()), "bce": float(bce.detach())}
    return run


def _vessel_dice(model: nn.Module, dataset: VesselDataset, device: torch.device) -> dict[str, float]:
    x = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
    _, _, out = predict(model, x, device)
    pred = out[:, 0] >= 0.5
    gt = np.stack(dataset.masks).astype(bool)
    inter = (pred & gt).sum(axis=(1, 2))
    dice = 2 * inter / np.maximum(pred.sum(axis=(1, 2)) + gt.sum(axis=(1, 2)), 1)
    return {"score": float(dice.mean()), "vessel_dice": float(dice.mean())}


def train_pretrain(cfg: Config, run: RunDir, device: torch.device, tracker: Tracker, resume: dict | None = None
                   ) -> nn.Module:
    """Stage 1: pre-train the coarse encoder on whole images at ``pretrain.size`` (vessels or denoising)."""
    p = cfg.pretrain
    if cfg.data.synthetic:
        with main_process_first():
            ensure_synthetic(resolve_path(cfg.data.root), cfg.data.synth)
    train_cases, held_out = list_vessel_cases(vessel_root(cfg), p.datasets)
    verify_files([f for c in train_cases + held_out for f in (c.image, c.vessels)], cfg.data.verify, what="vessel")
    probe = VesselDataset(train_cases, p.size, [0, 0, 0], [1, 1, 1], "vessel", 0.0, cfg.seed)
    mean, std = channel_stats(probe.images)
    train_set = VesselDataset(train_cases, p.size, mean, std, p.kind, p.flip_p, cfg.seed)
    held = VesselDataset(held_out, p.size, mean, std, "vessel", 0.0, cfg.seed) if held_out else None
    model = build_pretrain_model(cfg.model, p.size, p.kind).to(device)
    validate = (lambda m: _vessel_dice(m, held, device)) if held is not None and p.kind == "vessel" else None
    optimizer = torch.optim.Adam(model.parameters(), lr=p.lr)
    stage = Stage("pretrain", model, train_set, vessel_loss(p.pos_weight), optimizer, p.batch_size, p.steps, p.epochs,
                  cfg.seed, validate=validate)
    return fit(stage, run, _config_dict(cfg), device, tracker, amp=cfg.runtime.amp, grad_clip=cfg.optim.grad_clip,
               progress=cfg.runtime.progress, resume=resume)


def _config_dict(cfg: Config) -> dict:
    from common.config import to_dict

    return to_dict(cfg)


def load_encoder(model: CoarseNet, spec: str, runs_root: str) -> str:
    """Load a pre-training checkpoint's encoder strictly into ``model.encoder`` (``latest:<experiment>`` = that
    experiment's newest ``pretrain.pt``). Returns the path used; an encoder of another shape is an error."""
    if spec.startswith("latest:"):
        found = latest_run(PROJECT, spec.split(":", 1)[1], root=runs_root, require="checkpoints/pretrain.pt")
        if found is None:
            raise CheckpointError(f"coarse.encoder_init={spec}: no run with checkpoints/pretrain.pt; run "
                                  f"pretrain.py first or give a checkpoint path")
        path = found / "checkpoints" / "pretrain.pt"
    else:
        path = resolve_path(spec)
    state = load_checkpoint(path)["model"]
    enc = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    try:
        model.encoder.load_state_dict(enc, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"coarse.encoder_init={path}: its encoder does not match model.* of this config "
                              f"(pre-train with the same model section): {str(exc)[:400]}") from exc
    return str(path)


# --------------------------------------------------------------------------------------------- 2. coarse
def _coarse_loss(loss_fn: CoarseLoss):
    def run(model: nn.Module, batch: dict, step: int, total: int) -> tuple[torch.Tensor, dict]:
        return loss_fn(model(batch["image"]), batch, step, total)
    return run


def _param_groups(model: CoarseNet, lr: float, mult: float) -> list[dict]:
    enc = list(model.encoder.parameters())
    ids = {id(p) for p in enc}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return [{"params": enc, "lr": lr * mult}, {"params": rest, "lr": lr}]


def _init_coarse(model: CoarseNet, path: str) -> None:
    """``--init-weights``: coarse weights from a pipeline ``best.pt`` (``coarse.*`` keys) or a ``coarse.pt``."""
    state = load_checkpoint(resolve_path(path))["model"]
    if any(k.startswith("coarse.") for k in state):
        state = {k[len("coarse."):]: v for k, v in state.items() if k.startswith("coarse.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    print(f"[coarse] init weights from {path}: missing {len(missing)}, unexpected {len(unexpected)} keys")


def train_coarse(cfg: Config, data: DataBundle, run: RunDir, device: torch.device, tracker: Tracker,
                 resume: dict | None = None, init_weights: str | None = None) -> CoarseNet:
    """Stage 2: the coarse multi-task network, selected on validation by :func:`joinedtrans.scoring.summarise`
    ``score`` every ``optim.val_every`` epochs (0: at the end only)."""
    c = cfg.coarse
    model = build_model(cfg.model, c.size, heatmap=c.heatmap, distance=c.distance).to(device)
    if c.encoder_init != "none" and resume is None:
        print(f"[coarse] encoder from {load_encoder(model, c.encoder_init, cfg.runs_root)}")
    if init_weights and resume is None:
        _init_coarse(model, init_weights)
    dataset = CoarseDataset(data.train, c.size, c.sigma, data.mean, data.std)
    optimizer = torch.optim.Adam(_param_groups(model, cfg.optim.lr, c.encoder_lr_mult),
                                 weight_decay=cfg.optim.weight_decay)
    loss = _coarse_loss(CoarseLoss(c.curriculum, c.heatmap, c.distance, c.heatmap_pos_weight))

    def validate(m: nn.Module) -> dict[str, float]:
        preds = coarse_predict(m, data.val, cfg, data.mean, data.std, device)
        return summarise([case_metrics(it, p.oc, p.od, p.fovea_xy) for it, p in zip(data.val, preds)])

    stage = Stage("coarse", model, dataset, loss, optimizer, cfg.optim.batch_size, cfg.optim.steps,
                  cfg.optim.epochs, cfg.seed, validate=validate if data.val else None,
                  val_every=cfg.optim.val_every, find_unused=True)
    return fit(stage, run, _config_dict(cfg), device, tracker, amp=cfg.runtime.amp, grad_clip=cfg.optim.grad_clip,
               progress=cfg.runtime.progress, resume=resume)


# --------------------------------------------------------------------------------------------- 3. hand-off
def coarse_inputs(items: list[Loaded], size: int, mean: list[float], std: list[float]) -> torch.Tensor:
    """``(N, 3, S, S)`` normalised coarse inputs (INTER_AREA)."""
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    x = np.stack([resize_area(it.image, (size, size)) for it in items]) if items else np.zeros((0, size, size, 3))
    return (torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0 - m) / s


def _handoff(seg: np.ndarray, hmap: np.ndarray | None, image: np.ndarray, c: CoarseConfig) -> CoarsePrediction:
    height, width = image.shape[:2]
    masks = []
    for channel in (0, 1):
        small = clean_mask(seg[channel])
        masks.append(clean_mask(resize_nearest(small.astype(np.uint8), (width, height)) > 0))
    oc, od = masks[0] & masks[1], masks[1]
    fovea_map, fovea_xy, od_xy = None, None, (width / 2, height / 2)
    if hmap is not None:
        fovea_map = resize_bilinear(hmap[0], (width, height))
        fovea_xy = decode_marginal(constrain_fovea_map(fovea_map, image, od, c.fovea_fov_threshold,
                                                       c.fovea_disc_exclusion), c.decode_floor)
        od_xy = decode_marginal(resize_bilinear(hmap[1], (width, height)), c.decode_floor)
    return CoarsePrediction(oc, od, fovea_map, fovea_xy, roi_centre(oc, od, od_xy))


def coarse_predict(model: CoarseNet, items: list[Loaded], cfg: Config, mean: list[float], std: list[float],
                   device: torch.device) -> list[CoarsePrediction]:
    """Stage 3: coarse outputs of ``items`` mapped back to original size (bilinear maps, nearest masks)."""
    if not items:
        return []
    _, _, out = predict(model, coarse_inputs(items, cfg.coarse.size, mean, std), device, cfg.eval.batch_size,
                        cfg.runtime.amp)
    preds = []
    for i, item in enumerate(items):
        hmap = out["heatmap"][i] if "heatmap" in out else None
        preds.append(_handoff(out["seg"][i], hmap, item.image, cfg.coarse))
    return preds


# --------------------------------------------------------------------------------------------- 4. fine disc/cup
def _fine_loss(model: nn.Module, batch: dict, step: int, total: int) -> tuple[torch.Tensor, dict]:
    loss = fine_dice_loss(model(batch["image"]), batch["seg"])
    return loss, {"dice_loss": float(loss.detach())}


def train_fine(cfg: Config, data: DataBundle, coarse_train: list[CoarsePrediction], run: RunDir,
               device: torch.device, tracker: Tracker, resume: dict | None = None,
               coarse_val: list[CoarsePrediction] | None = None) -> UNet:
    """Stage 4: the fine disc/cup U-Net on crops of the coarse training predictions; with ``fine.val_every`` and
    the coarse predictions of the validation split, the weights of the best validation disc + cup Dice are kept,
    else the last."""
    f = cfg.fine
    model = build_fine_model(f).to(device)
    dataset = FineCrops(data.train, coarse_train, f.roi, f.ref_height, f.use_coarse, data.mean, data.std,
                        f.flip_p, cfg.seed)

    def validate(m: nn.Module) -> dict[str, float]:
        rows = [case_metrics(it, *_refine_disc(m, it, p, cfg, (data.mean, data.std), device), None)
                for it, p in zip(data.val, coarse_val)]
        return summarise(rows)

    selects = bool(f.val_every and data.val and coarse_val)
    stage = Stage("fine", model, dataset, _fine_loss, torch.optim.Adam(model.parameters(), lr=f.lr), f.batch_size,
                  f.steps, f.epochs, cfg.seed, validate=validate if selects else None, val_every=f.val_every)
    return fit(stage, run, _config_dict(cfg), device, tracker, amp=cfg.runtime.amp, grad_clip=cfg.optim.grad_clip,
               progress=cfg.runtime.progress, resume=resume)


# --------------------------------------------------------------------------------------------- 5. fovea
def _fovea_loss(model: nn.Module, batch: dict, step: int, total: int) -> tuple[torch.Tensor, dict]:
    loss = torch.mean((model(batch["image"]) - batch["heatmap"]) ** 2)
    return loss, {"mse": float(loss.detach())}


def train_fovea(cfg: Config, data: DataBundle, coarse_train: list[CoarsePrediction], run: RunDir,
                device: torch.device, tracker: Tracker, resume: dict | None = None) -> UNet:
    """Stage 5: the fovea U-Net on jittered crops around the true fovea (last weights kept)."""
    v = cfg.fovea
    model = build_fovea_model(v).to(device)
    dataset = FoveaCrops(data.train, coarse_train, v.roi, v.sigma, v.max_offset, data.mean, data.std, cfg.seed)
    if len(dataset) == 0:
        raise ValueError("fovea stage: no training image has a visible fovea and a coarse heatmap; set "
                         "fovea.enabled=false")
    stage = Stage("fovea", model, dataset, _fovea_loss, torch.optim.Adam(model.parameters(), lr=v.lr),
                  v.batch_size, v.steps, v.epochs, cfg.seed)
    return fit(stage, run, _config_dict(cfg), device, tracker, amp=cfg.runtime.amp, grad_clip=cfg.optim.grad_clip,
               progress=cfg.runtime.progress, resume=resume)


# --------------------------------------------------------------------------------------------- 6. inference
@dataclass
class Prediction:
    """Final and coarse outputs of one image at original size (binary ``oc``/``od``; fovea (x, y) or None)."""

    coarse: CoarsePrediction
    oc: np.ndarray
    od: np.ndarray
    fovea: tuple[float, float] | None
    fovea_refined: bool


def build_pipeline(cfg: Config) -> JoinedTrans:
    """An untrained pipeline of ``cfg``'s shape (to load a ``best.pt`` into)."""
    coarse = build_model(cfg.model, cfg.coarse.size, heatmap=cfg.coarse.heatmap, distance=cfg.coarse.distance)
    fine = build_fine_model(cfg.fine) if cfg.fine.enabled else None
    fovea = build_fovea_model(cfg.fovea) if cfg.fovea.enabled and cfg.coarse.heatmap else None
    return JoinedTrans(coarse, fine, fovea)


def load_pipeline(cfg: Config, checkpoint) -> tuple[JoinedTrans, list[float], list[float]]:
    """The pipeline of a ``best.pt`` (shape from the checkpoint's own config) and its input statistics."""
    from common.config import load_from_checkpoint

    ckpt = load_checkpoint(checkpoint)
    if ckpt.get("extra", {}).get("stage") != "pipeline":
        raise CheckpointError(f"{checkpoint} is a checkpoint of stage `{ckpt.get('extra', {}).get('stage')}`, "
                              f"not a trained pipeline; evaluate <run>/checkpoints/best.pt")
    pipe = build_pipeline(load_from_checkpoint(Config, checkpoint))
    pipe.load_state_dict(ckpt["model"])
    return pipe, ckpt["extra"]["mean"], ckpt["extra"]["std"]


def _refine_disc(net: UNet, item: Loaded, pred: CoarsePrediction, cfg: Config, data_stats, device
                 ) -> tuple[np.ndarray, np.ndarray]:
    f = cfg.fine
    x, box, side = fine_input(item, pred, f.roi, f.ref_height, f.use_coarse, *data_stats)
    _, _, out = predict(net, torch.from_numpy(x)[None], device)
    probs = out[0].transpose(1, 2, 0)
    if side != f.roi:
        probs = resize_bilinear(probs, (side, side))
    shape = item.mask.shape
    od = clean_mask(paste(probs[..., 1], box, shape))
    oc = clean_mask(paste(probs[..., 0], box, shape)) & od
    return oc, od


def _refine_fovea(net: UNet, item: Loaded, pred: CoarsePrediction, cfg: Config, data_stats, device
                  ) -> tuple[tuple[float, float], bool]:
    x, box = fovea_input(item, pred.fovea_map, pred.fovea_xy, cfg.fovea.roi, *data_stats)
    _, _, out = predict(net, torch.from_numpy(x)[None], device)
    hmap = out[0, 0]
    if float(hmap.max()) < cfg.fovea.min_peak:
        return pred.fovea_xy, False
    dx, dy = decode_marginal(hmap, cfg.coarse.decode_floor)
    return (box[0] + dx, box[1] + dy), True


def infer(pipe: JoinedTrans, items: list[Loaded], cfg: Config, mean: list[float], std: list[float],
          device: torch.device) -> list[Prediction]:
    """Stage 6: the full pipeline on ``items`` (coarse only where ``fine``/``fovea`` are absent)."""
    coarse = coarse_predict(pipe.coarse, items, cfg, mean, std, device)
    out = []
    for item, pred in zip(items, coarse):
        oc, od = (pred.oc, pred.od) if pipe.fine is None else _refine_disc(pipe.fine, item, pred, cfg,
                                                                           (mean, std), device)
        fovea, refined = pred.fovea_xy, False
        if pipe.fovea is not None and pred.fovea_xy is not None:
            fovea, refined = _refine_fovea(pipe.fovea, item, pred, cfg, (mean, std), device)
        out.append(Prediction(pred, oc, od, fovea, refined))
    return out


# --------------------------------------------------------------------------------------------- 7. scores
def score_split(pipe: JoinedTrans, items: list[Loaded], cfg: Config, mean: list[float], std: list[float],
                device: torch.device) -> tuple[dict[str, float], list[dict], list[Prediction]]:
    """Stage 7: ``(summary, per-case rows, this rank's predictions)``; images are sharded over torchrun ranks and
    the per-case rows gathered (sorted by image, duplicates impossible), so the summary equals a one-process run.
    Summary keys: final metrics, ``coarse_*`` the same for the coarse outputs, ``fovea_refined`` fraction."""
    info = dist_info()
    index = np.arange(len(items))
    mine = shard(list(index), info)
    preds = infer(pipe, [items[i] for i in mine], cfg, mean, std, device)
    rows = []
    for i, p in zip(mine, preds):
        item = items[i]
        final = case_metrics(item, p.oc, p.od, p.fovea)
        coarse = case_metrics(item, p.coarse.oc, p.coarse.od, p.coarse.fovea_xy)
        rows.append({"index": int(i), **final, **{f"coarse_{k}": v for k, v in coarse.items()
                                                  if k not in ("case", "hard", "fovea_visible")},
                     "fovea_refined": float(p.fovea_refined)})
    gathered = all_gather_arrays(np.array(rows, dtype=object).reshape(-1))
    rows = sorted(gathered.tolist(), key=lambda r: r["index"])
    summary = summarise(rows)
    coarse_rows = [{**r, **{k: r[f"coarse_{k}"] for k in ("dice_disc", "dice_cup", "vcdr_err", "fovea_dist_px",
                                                           "fovea_dist_norm")}} for r in rows]
    summary |= {f"coarse_{k}": v for k, v in summarise(coarse_rows).items()}
    summary["fovea_refined"] = float(np.mean([r["fovea_refined"] for r in rows])) if rows else 0.0
    return summary, rows, preds
