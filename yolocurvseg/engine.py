"""Training and evaluation of the YoloCurvSeg networks: each step together with its loop (no CLI, no file layout).

- :func:`train_synthesizer`: the CUT stage (one ``CUTModel.train_step`` per iteration on random crops of the
  composites, domain A, and of the real images, domain B);
- :func:`train_segmenter`: one segmenter stage (coarse, a fine round, or a baseline): Adam + poly decay,
  CE + Dice / partial CE with the ignore label;
- :func:`translate`: composites -> synthesized images with the trained CUT generator;
- :func:`predict_image` / :func:`predict`: curve probabilities (MONAI sliding window, optional flip TTA);
  ``predict`` returns ``(indices, targets, outputs)``;
- :func:`pseudo_labels`: the fine-stage rule (OURS): ``p > fg_threshold`` -> 1, ``p < bg_threshold`` -> 0,
  otherwise ignored (2); outside the FOV -> 0;
- :func:`evaluate`: per-case metrics (``curve_metrics``) and their mean.

Under torchrun every segmenter step draws the same global batch on every rank (the generator of ``(seed, stage,
step)``) and forwards its contiguous share through the DDP-wrapped network; the logits are gathered with their graph
(``common.runtime.all_gather_with_grad``) so each rank evaluates the loss of the whole batch (CE and Dice are
batch-level statistics, not means of per-rank losses), and DDP's gradient average is then the single-process
gradient. Prediction (pseudo-labels, evaluation) runs on a strided share of the cases per rank, gathered back into
case order (:func:`sharded`). ``runtime.amp`` autocasts the segmenter's forward in training (the loss in fp32, fp16
with a gradient scaler).

Where a stage's state goes is the caller's business: the loops talk to a :class:`StageStore` (``train.py`` keeps it
in the run folder). Data order is a function of ``(seed, stage, step)`` only (a fresh ``numpy`` generator per
step), and the global step counter travels in every checkpoint, so a resumed stage continues exactly.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from scipy import ndimage
from tqdm import tqdm

from common.checkpoint import restore_training_state
from common.runtime import (
    all_gather_with_grad,
    autocast,
    backward_and_step,
    dist_info,
    gather_by_index,
    make_grad_scaler,
    wrap_ddp,
)
from yolocurvseg.curve_metrics import curve_metrics
from yolocurvseg.data import LoadedCase, MixedSampler, PairSampler, standardize
from yolocurvseg.model import IGNORE, masked_ce_dice_loss
from yolocurvseg.settings import EvalConfig, FineConfig, OptimConfig, StepRuntimeConfig, SynthesizerConfig
from yolocurvseg.synthesizer import CUTModel

__all__ = ["StageStore", "SegmenterStage", "poly_lambda", "run_steps", "train_synthesizer", "train_segmenter",
           "rank_share", "sharded", "translate", "predict_image", "predict", "postprocess", "pseudo_labels",
           "pseudo_label_cases", "evaluate"]


class StageStore(Protocol):
    """Where the stages of one run keep their state (``train.RunStages`` implements it on the run folder)."""

    global_step: int

    def finished(self, name: str) -> Mapping[str, Any] | None:
        """The final checkpoint of stage ``name`` when it already finished, else None."""

    def resumed(self, name: str) -> Mapping[str, Any] | None:
        """The checkpoint to resume stage ``name`` from (its ``last.pt``), else None."""

    def save(self, name: str, step: int, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
             scheduler: Any = None, scaler: torch.amp.GradScaler | None = None,
             extra: Mapping[str, Any] | None = None, finished: bool = False) -> None:
        """Save the state of stage ``name`` after ``step`` (``finished``: its final weights); rank 0 only."""

    def log(self, scalars: Mapping[str, float], step: int) -> None:
        """One metrics row at global ``step``."""


@dataclass(frozen=True)
class SegmenterStage:
    """One segmenter training stage: ``steps`` iterations of ``batch_size`` crops at ``lr`` with poly decay."""

    name: str
    steps: int
    lr: float
    batch_size: int
    weight_decay: float = 0.0
    poly_power: float = 0.9
    dice_weight: float = 1.0

    @classmethod
    def from_optim(cls, name: str, optim: OptimConfig, dice_weight: float, fine: FineConfig | None = None
                   ) -> SegmenterStage:
        """The first segmenter stage from ``optim``; a fine round (``fine`` given) takes its own steps and lr."""
        steps, lr = (optim.steps, optim.lr) if fine is None else (fine.steps, fine.lr)
        return cls(name, steps, lr, optim.batch_size, optim.weight_decay, optim.poly_power, dice_weight)


def poly_lambda(total: int, power: float = 0.9) -> Callable[[int], float]:
    """Poly learning-rate factor ``(1 - step / total) ** power`` for ``LambdaLR``."""
    return lambda step: max(1.0 - step / max(total, 1), 0.0) ** power


def stage_rng(seed: int, name: str, step: int) -> np.random.Generator:
    """The generator of one step of one stage: a function of ``(seed, stage, step)`` only."""
    return np.random.default_rng([seed, zlib.crc32(name.encode()) % 10007, step])


def run_steps(name: str, step_fn: Callable[[int], dict[str, float]], start: int, total: int, store: StageStore,
              runtime: StepRuntimeConfig, save: Callable[[int], None]) -> None:
    """Run ``step_fn(step)`` for ``step = start .. total - 1``; after each, advance ``store.global_step``, log the
    losses every ``runtime.log_every`` steps and ``save(step + 1)`` every ``runtime.save_every`` steps and at the
    end. A non-finite loss stops the run with the stage and step named."""
    for step in tqdm(range(start, total), desc=name, disable=not runtime.progress, leave=False):
        losses = step_fn(step)
        for key, value in losses.items():
            if not np.isfinite(value):
                raise FloatingPointError(f"{name}: non-finite {key} = {value} at step {step}; lower the learning "
                                         f"rate")
        store.global_step += 1
        if (step + 1) % runtime.log_every == 0:
            store.log({f"{name}/{k}": v for k, v in losses.items()}, store.global_step)
        if (step + 1) % runtime.save_every == 0 or step + 1 == total:
            save(step + 1)


def _resume(store: StageStore, name: str, **objects: Any) -> tuple[int, Mapping[str, Any] | None]:
    """Restore a stage's training state from the store; returns ``(start step, checkpoint)``."""
    state = store.resumed(name)
    if state is None:
        return 0, None
    restore_training_state(state, **objects)
    store.global_step = int(state["extra"].get("global_step", 0))
    return int(state["step"]), state


def _reuse_finished(store: StageStore, name: str, model: torch.nn.Module) -> bool:
    done = store.finished(name)
    if done is None:
        return False
    model.load_state_dict(done["model"])
    store.global_step = int(done["extra"].get("global_step", store.global_step))
    return True


def train_synthesizer(model: CUTModel, domain_a: PairSampler, domain_b: PairSampler, sc: SynthesizerConfig,
                      store: StageStore, runtime: StepRuntimeConfig, device: torch.device, seed: int) -> CUTModel:
    """Train CUT for ``sc.steps`` on ``sc.batch_size`` crops of A (composites) and B (real images), in [-1, 1]."""
    model.build_f(torch.zeros(1, 1, sc.crop, sc.crop, device=device))
    if _reuse_finished(store, "cut", model):
        return model
    opt_g, opt_d = model.optimizers()
    start, state = _resume(store, "cut", model=model, optimizer=opt_g)
    if state is not None:
        opt_d.load_state_dict(state["extra"]["optimizer_d"])

    def crops(sampler: PairSampler, rng: np.random.Generator) -> torch.Tensor:
        arr = sampler.image_crops(rng, sc.batch_size).astype(np.float32)
        return torch.from_numpy(arr)[:, None].to(device) * 2 - 1

    def step_fn(step: int) -> dict[str, float]:
        model.train()
        rng = stage_rng(seed, "cut", step)
        return model.train_step(crops(domain_a, rng), crops(domain_b, rng), opt_g, opt_d)

    def save(step: int) -> None:
        store.save("cut", step, model=model, optimizer=opt_g, extra={"optimizer_d": opt_d.state_dict()})

    run_steps("cut", step_fn, start, sc.steps, store, runtime, save)
    store.save("cut", sc.steps, model=model, finished=True)
    return model


def rank_share(batch_size: int) -> slice:
    """This rank's contiguous rows of a global batch of ``batch_size`` (all rows when not distributed)."""
    info = dist_info()
    if batch_size % info.world_size:
        raise ValueError(f"batch size {batch_size} is not divisible by the {info.world_size} torchrun processes; "
                         f"choose optim.batch_size as a multiple of --nproc_per_node")
    per_rank = batch_size // info.world_size
    return slice(info.rank * per_rank, (info.rank + 1) * per_rank)


def train_segmenter(model: torch.nn.Module, sampler: PairSampler | MixedSampler, stage: SegmenterStage,
                    store: StageStore, runtime: StepRuntimeConfig, device: torch.device, seed: int) -> torch.nn.Module:
    """Train ``model`` for ``stage.steps`` on ``sampler.batch`` (standardized crops, labels with ignore = 2); under
    torchrun each rank forwards its share of the global batch and the loss is that of the whole batch (module
    docstring). Returns the unwrapped model."""
    if _reuse_finished(store, stage.name, model):
        return model
    rows = rank_share(stage.batch_size)
    net = wrap_ddp(model, device)
    opt = torch.optim.Adam(model.parameters(), lr=stage.lr, weight_decay=stage.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, poly_lambda(stage.steps, stage.poly_power))
    scaler = make_grad_scaler(device, runtime.amp)
    start, _ = _resume(store, stage.name, model=model, optimizer=opt, scheduler=sched, scaler=scaler)

    def step_fn(step: int) -> dict[str, float]:
        net.train()
        x, y = sampler.batch(stage_rng(seed, stage.name, step), stage.batch_size)  # the global batch
        with autocast(device, runtime.amp):
            logits = net(x[rows].to(device))
        logits = all_gather_with_grad(logits.float())
        loss = masked_ce_dice_loss(logits, y.to(device), stage.dice_weight)
        backward_and_step(loss, opt, scaler)
        sched.step()
        return {"loss": float(loss.detach())}

    def save(step: int) -> None:
        store.save(stage.name, step, model=model, optimizer=opt, scheduler=sched, scaler=scaler)

    run_steps(stage.name, step_fn, start, stage.steps, store, runtime, save)
    store.save(stage.name, stage.steps, model=model, finished=True)
    return model


def sharded(n: int, compute: Callable[[int], Any]) -> list[Any]:
    """``[compute(i) for i in range(n)]`` with the indices split between the torchrun ranks (strided) and the
    results gathered back in index order on every rank (each index computed once)."""
    info = dist_info()
    mine = list(range(info.rank, n, info.world_size))
    results = [compute(i) for i in mine]
    if not info.distributed:
        return results
    boxed = np.empty(len(results), dtype=object)
    for k, item in enumerate(results):
        boxed[k] = item
    _, gathered = gather_by_index(np.asarray(mine, np.int64), boxed)
    if len(gathered) != n:
        raise RuntimeError(f"sharded: gathered {len(gathered)} of {n} results")
    return list(gathered)


@torch.no_grad()
def translate(model: CUTModel, images: np.ndarray, device: torch.device, progress: bool = False) -> np.ndarray:
    """Synthesized images ``(N, H, W)`` float32 in [0, 1] from composites ``(N, H, W)`` in [0, 1]."""
    model.eval()
    out = []
    for img in tqdm(images, desc="translate", disable=not progress, leave=False):
        x = torch.from_numpy(img.astype(np.float32))[None, None].to(device) * 2 - 1
        out.append(((model.translate(x)[0, 0].cpu().numpy() + 1) / 2).clip(0, 1))
    return np.stack(out).astype(np.float32)


@torch.no_grad()
def predict_image(model: torch.nn.Module, image: np.ndarray, roi: int, device: torch.device, tta: bool = False,
                  fov: np.ndarray | None = None) -> np.ndarray:
    """Curve probability ``(H, W)`` float32 of a grey image ``(H, W)`` in [0, 1], standardized with its statistics
    inside ``fov`` (the whole image when None), as every training crop is (``data.standardize``)."""
    model.eval()
    x = torch.from_numpy(standardize(image, fov))[None, None].to(device)
    flips: Sequence[tuple[int, ...]] = [(), (-1,), (-2,)] if tta else [()]
    acc = torch.zeros(x.shape[-2:], device=device)
    for dims in flips:
        xi = x.flip(dims) if dims else x
        logits = sliding_window_inference(xi, (roi, roi), sw_batch_size=4, predictor=model, overlap=0.25,
                                          mode="gaussian", padding_mode="reflect")
        p = logits.softmax(dim=1)[0, 1]
        acc += p.flip([d + 2 if d < 0 else d for d in dims]) if dims else p
    return (acc / len(flips)).cpu().numpy().astype(np.float32)


def predict(model: torch.nn.Module, cases: Sequence[LoadedCase], roi: int, device: torch.device, tta: bool = False,
            progress: bool = False) -> tuple[list[str], list[np.ndarray | None], list[np.ndarray]]:
    """``(indices, targets, outputs)``: case ids, their labels (None when unlabelled) and curve probabilities (under
    torchrun each rank predicts its share of ``cases``; every rank gets all outputs)."""
    bar = tqdm(total=len(cases), desc="predict", disable=not (progress and dist_info().is_main), leave=False)

    def one(i: int) -> np.ndarray:
        bar.update()
        return predict_image(model, cases[i].image, roi, device, tta, cases[i].fov)

    outputs = sharded(len(cases), one)
    bar.close()
    return [c.case_id for c in cases], [c.label for c in cases], outputs


def postprocess(mask: np.ndarray, fov: np.ndarray | None, min_component: int) -> np.ndarray:
    """bool ``(H, W)``: ``mask`` inside ``fov`` without its 8-connected components of fewer than ``min_component``
    pixels (``0``: unchanged)."""
    m = np.asarray(mask, bool) & (np.ones_like(mask, bool) if fov is None else np.asarray(fov, bool))
    if min_component <= 0 or not m.any():
        return m if min_component > 0 else np.asarray(mask, bool)
    labels, n = ndimage.label(m, np.ones((3, 3), bool))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= min_component
    keep[0] = False
    return keep[labels]


def pseudo_labels(prob: np.ndarray, fov: np.ndarray, fg_threshold: float, bg_threshold: float) -> np.ndarray:
    """uint8 ``(H, W)``: 1 where ``prob > fg_threshold``, 0 where ``prob < bg_threshold`` or outside the FOV,
    ``IGNORE`` (2) elsewhere."""
    out = np.full(prob.shape, IGNORE, np.uint8)
    out[prob > fg_threshold] = 1
    out[prob < bg_threshold] = 0
    out[~np.asarray(fov, bool)] = 0
    return out


def pseudo_label_cases(model: torch.nn.Module, cases: Sequence[LoadedCase], fc: FineConfig, roi: int,
                       device: torch.device, progress: bool = False) -> list[np.ndarray]:
    """The fine-stage labels of every (unlabelled) training image, predicted by ``model`` (flip TTA if ``fc.tta``)."""
    _, _, probs = predict(model, cases, roi, device, fc.tta, progress)
    return [pseudo_labels(p, c.fov, fc.fg_threshold, fc.bg_threshold) for p, c in zip(probs, cases, strict=True)]


def evaluate(model: torch.nn.Module, cases: Sequence[LoadedCase], ev: EvalConfig, device: torch.device,
             progress: bool = False) -> tuple[list[dict[str, float | str]], dict[str, float]]:
    """Per-case metric rows (with ``case_id``) and their mean over cases, inside each case's FOV."""
    missing = [c.case_id for c in cases if c.label is None]
    if missing:
        raise ValueError(f"cases {missing} have no label; evaluation needs the test labels")
    bar = tqdm(total=len(cases), desc="evaluate", disable=not (progress and dist_info().is_main), leave=False)

    def one(i: int) -> dict[str, float | str]:  # prediction and metrics of one case (this rank's share)
        case = cases[i]
        raw = predict_image(model, case.image, ev.roi, device, ev.tta, case.fov) > ev.threshold
        row = {"case_id": case.case_id, **curve_metrics(postprocess(raw, case.fov, ev.min_component), case.label > 0,
                                                        case.fov, ev.surface)}
        if ev.min_component:
            row["betti0_error_raw"] = curve_metrics(raw, case.label > 0, case.fov, surface=False)["betti0_error"]
        bar.update()
        return row

    rows = sharded(len(cases), one)
    bar.close()
    keys = [k for k in rows[0] if k != "case_id"] if rows else []
    summary = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    return rows, summary
