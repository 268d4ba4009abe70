"""Train ASLseg (or one SSL baseline, or evaluate zero-shot SAM) end to end.

``python train.py [--config configs/default.yaml] [method=ssl ssl.method=mean_teacher] [--resume auto|PATH]``

Schedule (segmenter iterations): round 0 = ``ssl.pretrain_iters + ssl.self_iters``; each of the ``loop.rounds``
rounds pseudo-labels and selects at its start, then trains ``loop.retrain_iters`` more on the expanded labelled
set. ``checkpoints/last.pt`` holds the full trainer state (student, teacher, SGD, BCP phase) every
``runtime.save_every`` iterations; ``checkpoints/round<r>.pt`` the slices selected in round r and their
pseudo-labels; batches and masks are functions of (seed, iteration), so ``--resume auto`` continues with the same
next loss. The prediction is the last segmenter (``checkpoints/best.pt``; no validation split picks another).
Writes ``eval/summary.csv``, ``eval/per_case.csv``, ``rounds.csv``, ``selection.csv`` and ``figures/``.

Multi-GPU (or several CPU processes, gloo): ``torchrun --nproc_per_node=N train.py ...``. Each rank trains on its
share of every segmenter, SAM and adapter batch (DDP; a sample's rows, augmentation and BCP rectangle are drawn
from (seed, iteration) as one process draws them, whichever rank realises it), the per-slice round work and the
test volumes are strided over the ranks and gathered, and rank 0 alone writes the run folder. Every rank prints
a checksum of its final segmenter weights (equal on all ranks).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from aslseg.engine import evaluate_test, predict_probs, train_segmenter
from aslseg.loop import RoundResult, SAMState, labelled_pool, run_round
from aslseg.pipeline import LabelledPool, Prepared, prepare_data, prepare_sam, sam_gtbox_probs
from aslseg.semisup import SSLTrainer, build_segmenter
from aslseg.settings import Config
from common.checkpoint import atomic_torch_save, load_checkpoint, load_init_weights, save_checkpoint, set_rng_state
from common.config import to_dict
from common.rundir import RunDir, open_run
from common.runtime import cleanup_distributed, dist_info, is_main_process, reduce_mean, setup_runtime
from common.tracking import Tracker, write_eval_tables

__all__ = ["RunResult", "check_world_size", "weights_checksum", "run", "main"]

PROJECT_DIR = Path(__file__).resolve().parent


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, float]
    rounds: list[dict] = field(default_factory=list)
    selection: list[dict] = field(default_factory=list)


def schedule(cfg: Config) -> tuple[int, list[int]]:
    """Round-0 length and the iteration at which each round starts."""
    base = cfg.ssl.pretrain_iters + cfg.ssl.self_iters
    rounds = cfg.loop.rounds if cfg.method == "aslseg" else 0
    return base, [base + r * cfg.loop.retrain_iters for r in range(rounds)]


class _Runner:
    """The segmenter's life across rounds, with checkpoints (see module docstring)."""

    def __init__(self, cfg: Config, prep: Prepared, run: RunDir, tracker: Tracker, device: torch.device):
        self.cfg, self.prep, self.run, self.tracker, self.device = cfg, prep, run, tracker, device
        self.trainer = self._new_trainer(cfg.ssl)
        self.it, self.offset = 0, 0
        self.results: list[RoundResult] = []
        self.round_rows: list[dict] = []
        self.sam = SAMState()

    def _new_trainer(self, ssl_cfg) -> SSLTrainer:
        base, starts = schedule(self.cfg)
        horizon = starts[-1] + self.cfg.loop.retrain_iters if starts else base
        if ssl_cfg is not self.cfg.ssl:  # a loop.reinit round: its own schedule
            horizon = ssl_cfg.pretrain_iters + ssl_cfg.self_iters
        return SSLTrainer(ssl_cfg, self.cfg.optim, self.device, build_segmenter(self.cfg.model), horizon=horizon)

    def _reinit_ssl(self):
        third = self.cfg.loop.retrain_iters // 3
        return dataclasses.replace(self.cfg.ssl, pretrain_iters=third, self_iters=self.cfg.loop.retrain_iters - third)

    def restore(self, state: dict | None, init_weights: str | None) -> None:
        if state is not None:
            self.it, self.offset = int(state["step"]), int(state["extra"].get("offset", 0))
            if self.offset:  # inside a loop.reinit round: that trainer's own schedule
                self.trainer = self._new_trainer(self._reinit_ssl())
            self.trainer.load_state_dict(state["extra"]["trainer"])
            for r in range(1, self.cfg.loop.rounds + 1):
                path = self.run.checkpoints / f"round{r}.pt"
                if path.is_file():
                    saved = torch.load(path, map_location="cpu", weights_only=True)
                    self.results.append(RoundResult(r, saved["selected"].numpy(), saved["masks"].numpy(),
                                                    dict(saved["stats"])))
                    self.round_rows = [dict(x) for x in saved["round_rows"]]
            self.round_rows = self.round_rows or [dict(x) for x in state["extra"].get("round_rows", [])]
            set_rng_state(state["rng"])
        elif self.cfg.loop.round0:
            snap = load_checkpoint(self.cfg.loop.round0)
            self.trainer.load_state_dict(snap["extra"]["trainer"])
            self.it = int(snap["step"])
        elif init_weights:
            load_init_weights(self.trainer.student, init_weights)
            self.trainer.teacher.load_state_dict(self.trainer.student.state_dict())

    def save(self, path_name: str = "last.pt") -> None:
        if not is_main_process():
            return
        save_checkpoint(self.run.checkpoints / path_name, model=self.trainer.student, config=to_dict(self.cfg),
                        epoch=len(self.results), step=self.it,
                        extra={"trainer": self.trainer.state_dict(), "offset": self.offset,
                               "round_rows": self.round_rows})

    def train_until(self, end: int, pool: LabelledPool) -> None:
        snaps = set(self.cfg.ssl.snapshot_iters)
        log_every, save_every = self.cfg.runtime.log_every, self.cfg.runtime.save_every
        trainer, offset = self.trainer, self.offset

        def on_step(it: int, losses: dict[str, float]) -> None:
            self.it = it
            if it % log_every == 0:  # every rank gets here: the losses are averaged over the ranks
                self.tracker.log({f"train/{k}": reduce_mean(v) for k, v in losses.items()}, step=it)
            if it % save_every == 0 or it == end:
                self.save()
            if it in snaps:
                self.save(f"ssl_{it}.pt")

        class _Shifted:  # the trainer counts its own iterations from its (re)initialisation
            def step(self, it, batch, rng):
                return trainer.step(it - offset, batch, rng)

        if self.it < end:
            train_segmenter(_Shifted(), pool, self.cfg, self.it, end, on_step)

    def predict_case(self, case) -> np.ndarray:
        return predict_probs(self.trainer.student, case.slices.images, self.device)

    def test_dice(self, label: str) -> None:
        _, summary = evaluate_test(self.prep.test, self.predict_case, surface=False)
        self.round_rows.append({"round": label, "iteration": self.it, "dice": summary["dice"],
                                "dice_global": summary["dice_global"]})
        self.tracker.log({"test/dice": summary["dice"]}, step=self.it)

    def do_round(self, r: int, start: int) -> None:
        if any(res.round == r for res in self.results):
            return
        self.test_dice(f"{r - 1}")
        res = run_round(r, self.trainer, self.prep, self.results, self.cfg, self.device, self.sam)
        self.results.append(res)
        if res.scores and is_main_process():  # per-slice selection scores (and the oracle's counts) for the report
            np.savez_compressed(self.run.path / f"scores_round{r}.npz", **res.scores)
        self.tracker.log({f"select/{k}": v for k, v in res.stats.items()}, step=self.it)
        if self.cfg.loop.reinit:
            self.trainer = self._new_trainer(self._reinit_ssl())
            self.offset = start
        if is_main_process():
            atomic_torch_save({"selected": torch.from_numpy(res.selected), "masks": torch.from_numpy(res.masks),
                               "stats": res.stats, "round_rows": self.round_rows},
                              self.run.checkpoints / f"round{r}.pt")
        self.save()


def _finish(runner: _Runner, cfg: Config) -> RunResult:
    run = runner.run
    rows, summary = evaluate_test(runner.prep.test, runner.predict_case, surface=cfg.eval.surface)
    summary["n_iterations"] = runner.it
    if cfg.method == "aslseg":
        runner.test_dice(str(len(runner.results)))
        sel = [r.stats for r in runner.results]
        summary["n_selected"] = float(sum(s["n_selected"] for s in sel))
        true = [s["selected_true_dice"] for s in sel if np.isfinite(s.get("selected_true_dice", np.nan))]
        summary["selected_true_dice"] = float(np.mean(true)) if true else float("nan")
    write_eval_tables(run.eval, summary, rows)
    selection = [{"round": r.round, **r.stats} for r in runner.results]
    info = dist_info()
    if info.is_main:
        _write_csv(run.path / "rounds.csv", runner.round_rows)
        _write_csv(run.path / "selection.csv", selection)
        save_checkpoint(run.checkpoints / "best.pt", model=runner.trainer.student, config=to_dict(cfg), epoch=1,
                        step=runner.it, best_metric=summary["dice"], extra={"method": cfg.method})
    runner.tracker.log({f"test/{k}": v for k, v in summary.items() if isinstance(v, float)}, step=runner.it + 1)
    runner.tracker.close()
    if info.distributed:  # the same on every rank (DDP); SAM's too when a round fine-tuned it
        sam = runner.sam.model
        print(f"[aslseg] rank {info.rank}/{info.world_size} weights sha1 "
              f"{weights_checksum(runner.trainer.student.state_dict())}"
              + (f" sam sha1 {weights_checksum(sam.state_dict())}" if sam is not None else ""), flush=True)
    if info.is_main:
        print(f"[aslseg] {cfg.method}/{cfg.ssl.method} ({cfg.experiment}): dice {summary['dice']:.4f} "
              f"hd95 {summary['hd95_mm']:.2f} mm -> {run.path}")
    return RunResult(run.path, summary, runner.round_rows, selection)


def weights_checksum(state: dict) -> str:
    """SHA-1 of a state dict's tensors (names and bytes, in name order): equal iff the weights are bitwise equal."""
    import hashlib

    digest = hashlib.sha1()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _write_csv(path: Path, rows: list[dict]) -> None:
    import pandas as pd

    pd.DataFrame(rows).to_csv(path, index=False)


def _zero_shot(cfg: Config, prep: Prepared, run: RunDir, tracker: Tracker, device: torch.device) -> RunResult:
    """SAM of ``sam.checkpoint`` without target tuning, one ground-truth box per tumour component."""
    sam = prepare_sam(cfg, device)
    rows, summary = evaluate_test(prep.test, lambda c: sam_gtbox_probs(sam, c.slices, cfg), surface=cfg.eval.surface)
    summary["n_iterations"] = 0
    write_eval_tables(run.eval, summary, rows)
    tracker.close()
    if is_main_process():
        print(f"[aslseg] sam_zero_shot_gtbox: dice {summary['dice']:.4f} -> {run.path}")
    return RunResult(run.path, summary)


def check_world_size(cfg: Config, world_size: int) -> None:
    """Every batch must split into equal per-rank shares (the segmenter's BCP halves, SAM's and the adapter's
    batches); raises before any work, naming the key."""
    o, parts = cfg.optim, {}
    if cfg.method != "sam_zero_shot_gtbox":
        parts["optim.labelled_bs"] = (o.labelled_bs, 2 * world_size)
        parts["optim.batch_size - optim.labelled_bs"] = (o.batch_size - o.labelled_bs, 2 * world_size)
    sam_used = cfg.method == "sam_zero_shot_gtbox" or (cfg.method == "aslseg" and cfg.loop.refiner != "teacher")
    if cfg.method == "aslseg" and cfg.loop.refiner != "teacher":
        parts["sam.batch_size"] = (cfg.sam.batch_size, world_size)
        if cfg.loop.refiner == "sam" and cfg.adapter.enabled:
            parts["adapter.batch_size"] = (cfg.adapter.batch_size, world_size)
    if sam_used and cfg.sam.arch == "tiny" and cfg.sam.checkpoint == "pretrained":
        parts["sam_pretrain.batch_size"] = (cfg.sam_pretrain.batch_size, world_size)
    for key, (value, multiple) in parts.items():
        if value % multiple:
            raise ValueError(f"{key} = {value} must be a multiple of {multiple} under torchrun with {world_size} "
                             f"ranks (each rank trains on an equal share of every batch)")


def run(cfg: Config, resume: str | None = None, init_weights: str | None = None) -> RunResult:
    """Run ``cfg.method`` (see ``settings``): data checked first, then the run folder, then the stages."""
    check_world_size(cfg, dist_info().world_size)
    device = setup_runtime(cfg.runtime, cfg.seed)
    prep = prepare_data(cfg)
    opened = open_run("aslseg", cfg, resume=resume, device=device)
    tracker = Tracker(opened.run.path)
    if cfg.method == "sam_zero_shot_gtbox":
        result = _zero_shot(cfg, prep, opened.run, tracker, device)
        cleanup_distributed()
        return result
    runner = _Runner(cfg, prep, opened.run, tracker, device)
    runner.restore(load_checkpoint(opened.resume_from) if opened.resume_from else None, init_weights)
    base, starts = schedule(cfg)
    runner.train_until(base, labelled_pool(prep, []))
    for r, start in enumerate(starts, start=1):
        runner.do_round(r, start)
        runner.train_until(start + cfg.loop.retrain_iters, labelled_pool(prep, runner.results))
    result = _finish(runner, cfg)
    cleanup_distributed()
    return result


def main(argv: Sequence[str] | None = None) -> RunResult:
    from common.cli import parse_train, train_parser

    parser = train_parser("Train ASLseg or one of its SSL baselines")
    cfg, args = parse_train(Config, argv, parser, PROJECT_DIR)
    return run(cfg, args.resume, args.init_weights)


if __name__ == "__main__":
    main()
