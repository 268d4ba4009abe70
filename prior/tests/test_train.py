"""train.py on configs/ci.yaml through all three stages; an interruption in stage 2 resumed with --resume auto
ends with weights equal to the uninterrupted run; stage checkpoints and per-stage schedules."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

import prior.train as train_module
from common.checkpoint import load_checkpoint
from prior.engine import make_scheduler, stage_of_epoch, warmup_cosine
from prior.settings import StageConfig

STAGES = "optim.stages=[{epochs: 1, lr: 1.0e-3, lr_start: 1.0e-5, warmup_epochs: 0.5}, " \
         "{epochs: 2, lr: 1.0e-3, lr_start: 1.0e-5, warmup_epochs: 0.5}, " \
         "{epochs: 1, lr: 5.0e-4, lr_start: 1.0e-6, warmup_epochs: 0.5}]"


def _args(tmp: Path, experiment: str) -> list[str]:
    return ["--config", "configs/ci.yaml", f"runs_root={tmp / 'runs'}", f"data.root={tmp / 'synthetic'}",
            f"experiment={experiment}", "data.synth.n_studies=24", "data.image_size=32", "runtime.threads=1",
            STAGES]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("prior_train")
    return tmp, train_module.main(_args(tmp, "full"))


def test_smoke_all_stages_and_evaluation(uninterrupted):
    _, run = uninterrupted
    for name in ("last.pt", "stage2_start.pt", "stage3_start.pt"):
        assert (run / "checkpoints" / name).is_file()
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics["train/stage"].tolist() == [1, 2, 2, 3]
    assert {"stage3/spg", "stage3/gpa", "stage3/image_rec", "stage2/proto"} <= set(metrics.columns)
    summary = pd.read_csv(run / "eval" / "summary.csv").iloc[0]
    assert 0.0 <= summary["zeroshot_accuracy"] <= 1.0 and "retrieval_p_at_1" in summary
    assert len(pd.read_csv(run / "eval" / "per_case.csv")) == 20
    assert load_checkpoint(run / "checkpoints" / "stage3_start.pt")["epoch"] == 3
    assert 0.0 <= summary["report_rec_f1"] <= 1.0
    for name in ("loss_curve", "attention_overlays", "prototype_usage", "reconstructions"):
        assert (run / "figures" / f"{name}.png").stat().st_size > 0, name


def test_resume_in_stage2_equals_uninterrupted(uninterrupted, monkeypatch):
    tmp, full_run = uninterrupted
    original = train_module.train_one_epoch
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # killed before the second epoch of stage 2
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_one_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_module.main([*_args(tmp, "resume"), "--no-eval"])
    monkeypatch.setattr(train_module, "train_one_epoch", original)
    run = train_module.main([*_args(tmp, "resume"), "--no-eval", "--resume", "auto"])
    a = load_checkpoint(full_run / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    full, resumed = pd.read_csv(full_run / "metrics.csv"), pd.read_csv(run / "metrics.csv")
    pd.testing.assert_frame_equal(full.drop(columns=[c for c in full if "time" in c]),
                                  resumed.drop(columns=[c for c in resumed if "time" in c]))


def test_stage_schedule_values():
    stages = [StageConfig(20, 1e-5, 1e-7, 1), StageConfig(30, 1e-5, 1e-7, 1), StageConfig(100, 5e-6, 1e-8, 5)]
    assert stage_of_epoch(stages, 0) == (1, 0) and stage_of_epoch(stages, 20) == (2, 0)
    assert stage_of_epoch(stages, 50) == (3, 0) and stage_of_epoch(stages, 149) == (3, 99)
    iters = 10
    for stage in stages:
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = make_scheduler(opt, stage, iters)
        assert opt.param_groups[0]["lr"] == pytest.approx(stage.lr_start)
        assert opt.state == {}  # a new optimizer per stage: empty state
        lrs = []
        for _ in range(stage.epochs * iters):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        warm = int(stage.warmup_epochs * iters)
        assert lrs[warm] == pytest.approx(stage.lr) and max(lrs) == pytest.approx(stage.lr)
        assert lrs[-1] < 0.01 * stage.lr
    assert warmup_cosine(100, 100, 10, 1.0, 0.0) == pytest.approx(0.0)
