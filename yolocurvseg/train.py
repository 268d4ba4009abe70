"""Train one YoloCurvSeg method end to end (paper Fig. 2): background -> curves -> synthesizer -> coarse -> fine.

``python train.py --config configs/default.yaml [method=pce_skeleton] [--resume auto|PATH] [--init-weights PATH]``

Every stage writes ``checkpoints/<stage>.pt`` when it finishes; during a stage ``checkpoints/last.pt`` holds its full
state (``extra.stage``), so ``--resume auto`` skips finished stages and continues the current one at its step. The
final segmenter is ``checkpoints/best.pt`` (no validation split: the final model is the reported one); test metrics
go to ``eval/per_case.csv`` and ``eval/summary.csv`` and the synthesis figure to ``figures/synthesis.png``.
"""

from __future__ import annotations

import csv
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from common.checkpoint import (
    find_resume_checkpoint,
    load_checkpoint,
    load_init_weights,
    restore_training_state,
    save_checkpoint,
)
from common.config import build_arg_parser, parse_cli, to_dict
from common.rundir import RunDir, create_run_dir, resolve_path
from common.runtime import pick_device
from common.seed import seed_everything
from common.tracking import Tracker, image_grid, overlay_mask, save_png
from yolocurvseg.data import PairSampler
from yolocurvseg.engine import evaluate_cases, poly_lambda, predict_probs, pseudo_labels, train_steps
from yolocurvseg.model import build_segmenter, masked_ce_dice_loss
from yolocurvseg.pipeline import Prepared, build_background, generate_pairs, pce_labels, prepare_data, synthesis_figure
from yolocurvseg.settings import Config, StageConfig
from yolocurvseg.synthesizer import CUTModel

__all__ = ["RunResult", "run", "main"]

PROJECT_DIR = Path(__file__).resolve().parent


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, float]
    stage_summaries: dict[str, dict[str, float]] = field(default_factory=dict)


class _Stages:
    """Checkpointed stages of one run (see module docstring)."""

    def __init__(self, cfg: Config, run: RunDir, tracker: Tracker, resume: dict | None, device: torch.device):
        self.cfg, self.run, self.tracker, self.resume, self.device = cfg, run, tracker, resume, device
        self.global_step = 0

    def _done(self, name: str) -> Path | None:
        path = self.run.checkpoints / f"{name}.pt"
        return path if path.is_file() else None

    def _resume_for(self, name: str) -> dict | None:
        if self.resume is not None and self.resume.get("extra", {}).get("stage") == name:
            return self.resume
        return None

    def segment(self, name: str, model: torch.nn.Module, batch_fn: Callable[[np.random.Generator], tuple],
                sc: StageConfig, dice_weight: float | None = None) -> torch.nn.Module:
        """Train ``model`` for ``sc.steps`` on batches from ``batch_fn(rng)`` (images, labels with ignore = 2)."""
        done = self._done(name)
        if done is not None:
            model.load_state_dict(load_checkpoint(done)["model"])
            return model
        opt = torch.optim.Adam(model.parameters(), lr=sc.lr, weight_decay=sc.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, poly_lambda(sc.steps))
        start = 0
        state = self._resume_for(name)
        if state is not None:
            start, _, _ = restore_training_state(state, model=model, optimizer=opt, scheduler=sched)
            start = int(state["step"])
        dw = sc.dice_weight if dice_weight is None else dice_weight
        cfg = self.cfg

        def step_fn(step: int) -> dict[str, float]:
            model.train()
            x, y = batch_fn(np.random.default_rng([cfg.seed, zlib.crc32(name.encode()) % 10007, step]))
            loss = masked_ce_dice_loss(model(x.to(self.device)), y.to(self.device), dw)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            return {"loss": float(loss.detach())}

        def on_step(step: int, losses: dict[str, float]) -> None:
            self._log(name, step, losses)
            if step % cfg.runtime.save_every == 0 or step == sc.steps:
                save_checkpoint(self.run.checkpoints / "last.pt", model=model, config=to_dict(cfg), epoch=0,
                                step=step, optimizer=opt, scheduler=sched, extra={"stage": name})

        train_steps(step_fn, start, sc.steps, on_step, desc=name, progress=cfg.runtime.progress)
        save_checkpoint(self.run.checkpoints / f"{name}.pt", model=model, config=to_dict(cfg), epoch=1,
                        step=sc.steps, extra={"stage": name, "finished": True})
        return model

    def cut(self, domain_a: np.ndarray, domain_b: list[np.ndarray]) -> CUTModel:
        """Train the CUT synthesizer on composites ``(N, H, W)`` (A) vs real images (B), both in [0, 1]."""
        cfg = self.cfg
        sc = cfg.synthesizer
        model = CUTModel(sc.cut).to(self.device)
        sample = torch.zeros(1, 1, sc.crop, sc.crop, device=self.device)
        model.build_f(sample)
        done = self._done("cut")
        if done is not None:
            model.load_state_dict(load_checkpoint(done)["model"])
            return model
        opt_g, opt_d = model.optimizers()
        start = 0
        state = self._resume_for("cut")
        if state is not None:
            restore_training_state(state, model=model, optimizer=opt_g)
            opt_d.load_state_dict(state["extra"]["optimizer_d"])
            start = int(state["step"])
        a_sampler = PairSampler(list(domain_a), [np.zeros_like(a, np.uint8) for a in domain_a], sc.crop, gamma=0.0)
        b_sampler = PairSampler(domain_b, [np.zeros_like(b, np.uint8) for b in domain_b], sc.crop, gamma=0.0)

        def crops(sampler: PairSampler, rng: np.random.Generator) -> torch.Tensor:
            idx = rng.integers(0, len(sampler), size=sc.batch_size)
            arr = np.stack([sampler._crop(sampler.images[i], sampler.labels[i], rng)[0] for i in idx])
            return torch.from_numpy(arr.astype(np.float32))[:, None].to(self.device) * 2 - 1

        def step_fn(step: int) -> dict[str, float]:
            model.train()
            rng = np.random.default_rng([cfg.seed, 4242, step])
            return model.train_step(crops(a_sampler, rng), crops(b_sampler, rng), opt_g, opt_d)

        def on_step(step: int, losses: dict[str, float]) -> None:
            self._log("cut", step, losses)
            if step % cfg.runtime.save_every == 0 or step == sc.steps:
                save_checkpoint(self.run.checkpoints / "last.pt", model=model, config=to_dict(cfg), epoch=0,
                                step=step, optimizer=opt_g,
                                extra={"stage": "cut", "optimizer_d": opt_d.state_dict()})

        train_steps(step_fn, start, sc.steps, on_step, desc="cut", progress=cfg.runtime.progress)
        save_checkpoint(self.run.checkpoints / "cut.pt", model=model, config=to_dict(cfg), epoch=1, step=sc.steps,
                        extra={"stage": "cut", "finished": True})
        return model

    def _log(self, stage: str, step: int, losses: dict[str, float]) -> None:
        self.global_step += 1
        if step % self.cfg.runtime.log_every == 0:
            self.tracker.log({f"{stage}/{k}": v for k, v in losses.items()}, step=self.global_step)


def _sampler_batch(sampler: PairSampler, size: int) -> Callable[[np.random.Generator], tuple]:
    return lambda rng: sampler.batch(rng, size)


def _mixed_batch(real: PairSampler, synth: PairSampler, size: int, real_fraction: float
                 ) -> Callable[[np.random.Generator], tuple]:
    n_real = int(round(size * real_fraction))

    def batch(rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [s.batch(rng, n) for s, n in ((real, n_real), (synth, size - n_real)) if n > 0]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    return batch


@torch.no_grad()
def _translate(model: CUTModel, images: np.ndarray, device: torch.device) -> np.ndarray:
    model.eval()
    out = []
    for img in images:
        x = torch.from_numpy(img.astype(np.float32))[None, None].to(device) * 2 - 1
        out.append(((model.translate(x)[0, 0].cpu().numpy() + 1) / 2).clip(0, 1))
    return np.stack(out).astype(np.float32)


def _write_eval(run: RunDir, rows: list[dict], summary: dict[str, float], prefix: str = "") -> None:
    for name, data in ((f"{prefix}per_case.csv", rows), (f"{prefix}summary.csv", [summary])):
        with (run.eval / name).open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(data[0]))
            writer.writeheader()
            writer.writerows(data)


def _prediction_figure(model: torch.nn.Module, prep: Prepared, cfg: Config, device: torch.device, path: Path) -> None:
    rows = []
    for case in prep.test[:3]:
        prob = predict_probs(model, case.image, cfg.eval.roi, device)
        rows.append([case.image, overlay_mask(case.image, case.label), overlay_mask(case.image, prob > 0.5)])
    save_png(image_grid(rows), path)


def run(cfg: Config, resume: str | None = None, init_weights: str | None = None) -> RunResult:
    """Run ``cfg.method`` (see ``settings.METHODS``); returns the run folder and the test metrics."""
    seed_everything(cfg.seed, deterministic=cfg.runtime.deterministic)
    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)
    device = pick_device(cfg.runtime.device)
    experiment_dir = resolve_path(cfg.runs_root) / "yolocurvseg" / cfg.experiment
    ckpt_path = find_resume_checkpoint(resume, experiment_dir)
    state = load_checkpoint(ckpt_path) if ckpt_path is not None else None
    run_dir = create_run_dir("yolocurvseg", cfg.experiment, cfg, root=cfg.runs_root, device=device,
                             existing=ckpt_path.parent.parent if ckpt_path is not None else None)
    tracker = Tracker(run_dir.path)
    stages = _Stages(cfg, run_dir, tracker, state, device)
    prep = prepare_data(cfg)
    model = build_segmenter(cfg.model).to(device)
    if init_weights:
        load_init_weights(model, init_weights)
    stage_summaries: dict[str, dict[str, float]] = {}
    roi = cfg.eval.roi

    if cfg.method == "full_supervision":
        sampler = PairSampler([c.image for c in prep.train], [c.label for c in prep.train], cfg.supervised.crop)
        model = stages.segment("supervised", model, _sampler_batch(sampler, cfg.supervised.batch_size),
                               cfg.supervised)
    elif cfg.method == "pce_skeleton":
        pairs = pce_labels(prep, cfg)
        sampler = PairSampler([p[0] for p in pairs], [p[1] for p in pairs], cfg.supervised.crop)
        model = stages.segment("pce", model, _sampler_batch(sampler, cfg.supervised.batch_size), cfg.supervised,
                               dice_weight=0.0)
    else:
        bg = build_background(prep, cfg)
        composites, masks, curves, backgrounds = generate_pairs(bg, prep, cfg)
        synthesized = composites
        if cfg.method == "yolocurvseg" and cfg.synthesizer.enabled:
            real = [c.image for c in prep.train]
            cut = stages.cut(composites, real)
            synthesized = _translate(cut, composites, device)
        save_png(synthesis_figure(prep, bg, backgrounds, curves, synthesized, masks), run_dir.figures / "synthesis.png")
        synth_sampler = PairSampler(list(synthesized), list(masks), cfg.coarse.crop)
        if cfg.coarse.enabled:
            model = stages.segment("coarse", model, _sampler_batch(synth_sampler, cfg.coarse.batch_size), cfg.coarse)
            rows, summary = evaluate_cases(model, prep.test, roi, device, cfg.eval.threshold, cfg.eval.tta,
                                           cfg.eval.surface)
            stage_summaries["coarse"] = summary
            _write_eval(run_dir, rows, summary, prefix="coarse_")
        if cfg.method == "yolocurvseg" and cfg.fine.enabled:
            fc = cfg.fine
            for r in range(fc.rounds):
                labels = [pseudo_labels(predict_probs(model, c.image, roi, device, fc.tta), c.fov, fc.fg_threshold,
                                        fc.bg_threshold) for c in prep.train]
                real_sampler = PairSampler([c.image for c in prep.train], labels, fc.crop)
                synth_fine = PairSampler(list(synthesized), list(masks), fc.crop)
                model = stages.segment(f"fine{r + 1}", model,
                                       _mixed_batch(real_sampler, synth_fine, fc.batch_size, fc.real_fraction), fc)
    rows, summary = evaluate_cases(model, prep.test, roi, device, cfg.eval.threshold, cfg.eval.tta, cfg.eval.surface)
    _write_eval(run_dir, rows, summary)
    save_checkpoint(run_dir.checkpoints / "best.pt", model=model, config=to_dict(cfg), epoch=1, step=0,
                    best_metric=summary.get("dice"), extra={"stage": "final", "method": cfg.method})
    _prediction_figure(model, prep, cfg, device, run_dir.figures / "predictions.png")
    tracker.log({f"test/{k}": v for k, v in summary.items()}, step=stages.global_step + 1)
    tracker.close()
    print(f"[yolocurvseg] {cfg.method} ({cfg.experiment}): " + ", ".join(f"{k} {v:.4f}" for k, v in summary.items())
          + f" -> {run_dir.path}")
    return RunResult(run_dir.path, summary, stage_summaries)


def main(argv: Sequence[str] | None = None) -> RunResult:
    parser = build_arg_parser("Train one YoloCurvSeg method (pipeline stages with checkpoints)")
    cfg, args = parse_cli(Config, argv, parser, search_dirs=[PROJECT_DIR])
    return run(cfg, args.resume, args.init_weights)


if __name__ == "__main__":
    main()
