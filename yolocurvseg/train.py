"""Train one YoloCurvSeg method end to end (paper abstract, README Fig. 2 of llmir/YoloCurvSeg): background -> curves
-> synthesizer -> coarse -> fine.

``python train.py [--config configs/default.yaml] [method=pce_skeleton] [--resume auto|PATH] [--init-weights PATH]``

Order of work: the config is validated when it is parsed; then the runs folder is checked for writing, the dataset is
listed and every file it lists is checked (``data.verify``), and only then is the run folder created. Every stage
writes ``checkpoints/<stage>.pt`` when it finishes; during a stage ``checkpoints/last.pt`` holds its full state
(``extra.stage``, ``extra.global_step``), so ``--resume auto`` skips finished stages and continues the current one at
its step, with the same data and the same ``metrics.csv`` rows as an uninterrupted run (rows logged after the
resumed checkpoint are dropped first). The final segmenter is ``checkpoints/best.pt`` (no validation split: the
final model is the reported one); test metrics go to ``eval/per_case.csv`` and ``eval/summary.csv``, figures to
``figures/`` and TensorBoard.

torchrun (``torchrun --nproc_per_node=N train.py ...``, gloo on CPU, nccl on GPUs): one run folder, written by rank 0
only. Rank 0 builds the synthetic pairs and trains and applies the CUT synthesizer (not data-parallel; the other ranks
wait for its images); every segmenter stage (coarse, fine rounds, the baselines) trains under DDP on shares of the
same global batches, and pseudo-labelling and evaluation are split between the ranks and gathered (``engine.py``),
so the metrics are those of one process up to float summation order.
"""

from __future__ import annotations

import contextlib
import csv
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.checkpoint import load_checkpoint, load_init_weights, save_checkpoint
from common.cli import parse_train, train_parser
from common.config import ConfigError, to_dict
from common.rundir import RunDir, check_writable, open_run
from common.runtime import (
    bf16_support,
    broadcast_object,
    cleanup_distributed,
    is_main_process,
    main_process_first,
    setup_runtime,
)
from common.tracking import Tracker, image_grid, overlay_mask, write_eval_tables
from yolocurvseg.data import MixedSampler, PairSampler
from yolocurvseg.engine import (
    SegmenterStage,
    evaluate,
    postprocess,
    predict_image,
    pseudo_label_cases,
    rank_share,
    train_segmenter,
    train_synthesizer,
    translate,
)
from yolocurvseg.model import build_model
from yolocurvseg.pipeline import Prepared, build_background, generate_pairs, pce_labels, prepare_data, synthesis_figure
from yolocurvseg.settings import Config
from yolocurvseg.synthesizer import CUTModel

__all__ = ["RunResult", "RunStages", "matched_steps", "run_training", "main"]

PROJECT = "yolocurvseg"
PROJECT_DIR = Path(__file__).resolve().parent


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, float]
    stage_summaries: dict[str, dict[str, float]] = field(default_factory=dict)
    skeleton: str = ""  # data.skeleton (file | simulate) of the run
    stage_seconds: dict[str, float] = field(default_factory=dict)  # CPU seconds (this process) per stage


def trim_metrics(csv_path: Path, last_step: int) -> None:
    """Drop the ``metrics.csv`` rows logged after global step ``last_step`` (written after the checkpoint a run is
    resumed from), so the resumed run writes them again exactly once."""
    if not csv_path.is_file():
        return
    with csv_path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns, rows = list(reader.fieldnames or []), list(reader)
    kept = [r for r in rows if int(r["step"]) <= last_step]
    if len(kept) != len(rows):
        with csv_path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(kept)


class RunStages:
    """The stage checkpoints and metrics of one run folder (``engine.StageStore``)."""

    def __init__(self, cfg: Config, run: RunDir, resume_state: Mapping[str, Any] | None):
        self.config, self.run, self.resume_state = to_dict(cfg), run, resume_state
        self.global_step = 0
        if resume_state is not None and is_main_process():
            trim_metrics(run.metrics_csv, int(resume_state["extra"].get("global_step", 0)))
        self.tracker = Tracker(run.path)
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Add the CPU time (``time.process_time``) of the block to ``seconds[name]``."""
        start = time.process_time()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.process_time() - start

    def finished(self, name: str) -> Mapping[str, Any] | None:
        path = self.run.checkpoints / f"{name}.pt"
        return load_checkpoint(path) if path.is_file() else None

    def resumed(self, name: str) -> Mapping[str, Any] | None:
        state = self.resume_state
        return state if state is not None and state.get("extra", {}).get("stage") == name else None

    def save(self, name: str, step: int, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
             scheduler: Any = None, scaler: torch.amp.GradScaler | None = None,
             extra: Mapping[str, Any] | None = None, finished: bool = False) -> None:
        if not is_main_process():
            return
        info = {"stage": name, "global_step": self.global_step, **(extra or {})}
        if finished:
            save_checkpoint(self.run.checkpoints / f"{name}.pt", model=model, config=self.config, epoch=1, step=step,
                            extra={**info, "finished": True})
        else:
            save_checkpoint(self.run.checkpoints / "last.pt", model=model, config=self.config, epoch=0, step=step,
                            optimizer=optimizer, scheduler=scheduler, scaler=scaler, extra=info)

    def log(self, scalars: Mapping[str, float], step: int) -> None:
        self.tracker.log(scalars, step=step)

    def figure(self, name: str, image: np.ndarray) -> None:
        """``figures/<name>.png`` and the same grid in TensorBoard."""
        self.tracker.log_image(f"figures/{name}", image, self.global_step, self.run.figures / f"{name}.png")


def matched_steps(cfg: Config) -> int:
    """Segmenter steps of the ``full_supervision`` reference: as many as the pipeline's segmenter stages together
    (``optim.steps`` coarse + ``fine.rounds`` x ``fine.steps``), so the upper bound is not trained shorter."""
    return cfg.optim.steps + (cfg.fine.rounds * cfg.fine.steps if cfg.fine.enabled else 0)


def train_baseline(cfg: Config, prep: Prepared, model: torch.nn.Module, stages: RunStages, device: torch.device
                   ) -> torch.nn.Module:
    """``full_supervision`` (all training labels, :func:`matched_steps`) or ``pce_skeleton`` (fg+bg scribbles,
    partial CE, ``optim.steps``)."""
    if cfg.method == "full_supervision":
        pairs = [(c.image, c.label) for c in prep.train]
        fovs = [c.fov for c in prep.train]
        stage = SegmenterStage.from_optim("supervised", cfg.optim, cfg.coarse.dice_weight)
        stage = replace(stage, steps=matched_steps(cfg))  # the pipeline's segmenter steps, all stages together
    else:
        pairs = pce_labels(prep, cfg)
        fovs = [c.fov for c in ([prep.labelled] if cfg.pce.images == "one" else prep.train)]
        stage = SegmenterStage.from_optim("pce", cfg.optim, dice_weight=0.0)  # partial CE only
    sampler = PairSampler([p[0] for p in pairs], [p[1] for p in pairs], cfg.data.crop, fovs=fovs)
    with stages.timed(stage.name):
        return train_segmenter(model, sampler, stage, stages, cfg.runtime, device, cfg.seed)


def synthesize(cfg: Config, prep: Prepared, stages: RunStages, device: torch.device) -> PairSampler:
    """Background, curves and (for ``yolocurvseg``) the CUT synthesizer: the synthetic training pairs. Under
    torchrun rank 0 does this stage alone and sends the images (and the step counter) to the other ranks."""
    images = masks = None
    if is_main_process():
        images, masks = synthesize_pairs(cfg, prep, stages, device)
    images, masks, stages.global_step = broadcast_object((images, masks, stages.global_step))
    return PairSampler(list(images), list(masks), cfg.data.crop, fovs=prep.labelled.fov)


def synthesize_pairs(cfg: Config, prep: Prepared, stages: RunStages, device: torch.device
                     ) -> tuple[np.ndarray, np.ndarray]:
    """``(synthesized images, masks)``: naive composites, translated by CUT when ``method = yolocurvseg``."""
    with stages.timed("pairs"):
        bg = build_background(prep, cfg)
        pairs = generate_pairs(bg, prep, cfg)
    synthesized = pairs.composites
    if cfg.method == "yolocurvseg" and cfg.synthesizer.enabled:
        sc = cfg.synthesizer
        domain_a = PairSampler(list(pairs.composites), list(pairs.masks), sc.crop, gamma=0.0)
        real = [c.image for c in prep.train]
        domain_b = PairSampler(real, [np.zeros_like(r, np.uint8) for r in real], sc.crop, gamma=0.0)
        with stages.timed("cut"):
            cut = train_synthesizer(CUTModel(sc.cut).to(device), domain_a, domain_b, sc, stages, cfg.runtime,
                                    device, cfg.seed)
            synthesized = translate(cut, pairs.composites, device, cfg.runtime.progress)
    stages.figure("synthesis", synthesis_figure(prep, bg, pairs, synthesized))
    return synthesized, pairs.masks


def evaluate_stage(cfg: Config, prep: Prepared, model: torch.nn.Module, run: RunDir, device: torch.device,
                   prefix: str = "") -> dict[str, float]:
    """Test metrics of ``model`` -> ``eval/<prefix>summary.csv`` and ``eval/<prefix>per_case.csv``."""
    rows, summary = evaluate(model, prep.test, cfg.eval, device, cfg.runtime.progress)
    write_eval_tables(run.eval, summary, rows, prefix=prefix)
    return summary


def train_yolocurvseg(cfg: Config, prep: Prepared, model: torch.nn.Module, stages: RunStages, device: torch.device,
                      summaries: dict[str, dict[str, float]]) -> torch.nn.Module:
    """``yolocurvseg`` / ``synthetic_only``: synthetic pairs, coarse stage, then the fine rounds."""
    synth = synthesize(cfg, prep, stages, device)
    if cfg.coarse.enabled:
        stage = SegmenterStage.from_optim("coarse", cfg.optim, cfg.coarse.dice_weight)
        with stages.timed("coarse"):
            model = train_segmenter(model, synth, stage, stages, cfg.runtime, device, cfg.seed)
        summaries["coarse"] = evaluate_stage(cfg, prep, model, stages.run, device, prefix="coarse_")
    if cfg.method == "yolocurvseg" and cfg.fine.enabled:
        fc = cfg.fine
        for r in range(fc.rounds):
            with stages.timed("fine"):
                labels = pseudo_label_cases(model, prep.train, fc, cfg.eval.roi, device, cfg.runtime.progress)
            real = PairSampler([c.image for c in prep.train], labels, cfg.data.crop, fovs=[c.fov for c in prep.train])
            sampler = MixedSampler(real, synth, fc.real_fraction)
            stage = SegmenterStage.from_optim(f"fine{r + 1}", cfg.optim, fc.dice_weight, fine=fc)
            with stages.timed("fine"):
                model = train_segmenter(model, sampler, stage, stages, cfg.runtime, device, cfg.seed)
    return model


def prediction_grid(model: torch.nn.Module, prep: Prepared, cfg: Config, device: torch.device) -> np.ndarray:
    """Image | ground truth | prediction for the first three test images (one process: no collectives)."""
    ev = cfg.eval
    rows = []
    for c in prep.test[:3]:
        pred = postprocess(predict_image(model, c.image, ev.roi, device, fov=c.fov) > ev.threshold, c.fov,
                           ev.min_component)
        rows.append([c.image, overlay_mask(c.image, c.label), overlay_mask(c.image, pred)])
    return image_grid(rows)


def finish(cfg: Config, prep: Prepared, model: torch.nn.Module, stages: RunStages, device: torch.device
           ) -> dict[str, float]:
    """Final test evaluation, ``best.pt``, the prediction figure and the ``test/*`` metrics row."""
    summary = evaluate_stage(cfg, prep, model, stages.run, device)
    if is_main_process():
        save_checkpoint(stages.run.checkpoints / "best.pt", model=model, config=stages.config, epoch=1, step=0,
                        best_metric=summary.get("dice"),
                        extra={"stage": "final", "method": cfg.method, "global_step": stages.global_step})
        stages.figure("predictions", prediction_grid(model, prep, cfg, device))
        stages.log({f"test/{k}": v for k, v in summary.items()}, step=stages.global_step + 1)
    return summary


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast can run on ``device``, as torch reports it (:func:`common.runtime.bf16_support`:
    native units or emulated ones; an explicit ``runtime.amp=bf16`` is refused only where it cannot run)."""
    return bf16_support(device) != "none"


def check_runtime(cfg: Config, device: torch.device) -> None:
    """Refuse, before any work, a ``runtime.amp`` the device cannot run and a batch the torchrun ranks cannot share."""
    amp = cfg.runtime.amp
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError(f"runtime.amp=fp16 needs CUDA (device {device}); use runtime.amp=bf16 or off")
    if amp == "bf16" and not bf16_supported(device):
        raise ConfigError(f"runtime.amp=bf16: torch reports no bf16 support on {device} (CPU: oneDNN without bf16 "
                         f"kernels); use runtime.amp=off")
    rank_share(cfg.optim.batch_size)  # raises unless optim.batch_size is a multiple of the number of processes


def run_training(cfg: Config, resume: str | None = None, init_weights: str | None = None) -> RunResult:
    """Run ``cfg.method`` (see ``settings.METHODS``); returns the run folder and the test metrics."""
    device = setup_runtime(cfg.runtime, cfg.seed)
    check_runtime(cfg, device)
    check_writable(cfg.runs_root)
    with main_process_first():  # rank 0 generates the hidden domain (data.synthetic) before the others read it
        prep = prepare_data(cfg)  # every listed file checked before the run folder exists
    opened = open_run(PROJECT, cfg, resume=resume, device=device)
    state = load_checkpoint(opened.resume_from) if opened.resume_from is not None else None
    stages = RunStages(cfg, opened.run, state)
    if is_main_process():
        (opened.run.path / "skeleton_source.txt").write_text(f"{cfg.data.skeleton}: {prep.skeleton_source}\n")
    model = build_model(cfg.model).to(device)
    if init_weights:
        load_init_weights(model, init_weights)
    stage_summaries: dict[str, dict[str, float]] = {}
    if cfg.method in ("full_supervision", "pce_skeleton"):
        model = train_baseline(cfg, prep, model, stages, device)
    else:
        model = train_yolocurvseg(cfg, prep, model, stages, device, stage_summaries)
    summary = finish(cfg, prep, model, stages, device)
    stages.tracker.close()
    if is_main_process():
        print(f"[{PROJECT}] {cfg.method} ({cfg.experiment}): " + ", ".join(f"{k} {v:.4f}" for k, v in
                                                                          summary.items()) + f" -> {opened.run.path}")
    return RunResult(opened.run.path, summary, stage_summaries, cfg.data.skeleton, stages.seconds)


def main(argv: Sequence[str] | None = None) -> RunResult:
    parser = train_parser("Train one YoloCurvSeg method (pipeline stages with checkpoints)")
    cfg, args = parse_train(Config, argv, parser, PROJECT_DIR)
    try:
        return run_training(cfg, args.resume, args.init_weights)
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    main()
