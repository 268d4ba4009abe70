"""The torchrun path of train.py: two CPU processes (gloo) train FPT+ from a cache they built together, rank 0 alone
writes one run folder, and the test metrics gathered across ranks equal a single-process evaluation of the saved
checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fpt_plus import eval as fpt_eval

PROJECT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_torchrun_two_processes_train_preload_and_gather_exact_metrics(ci_root: Path, tmp_path: Path) -> None:
    runs, cache = tmp_path / "runs", tmp_path / "cache" / "fpt_plus"
    overrides = [f"data.root={ci_root / 'data'}", f"runs_root={runs}", f"data.preload_dir={cache}",
                 "runtime.threads=1", "runtime.progress=false", "optim.epochs=2"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--rdzv-backend=c10d",
           "--rdzv-endpoint=localhost:0", "train.py", "--config", "configs/ci.yaml", "model.method=fpt_plus",
           *overrides]
    proc = subprocess.run(cmd, cwd=PROJECT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]

    # one run folder, written by rank 0 only (one line per epoch, not two)
    run_dirs = [p for p in (runs / "fpt_plus" / "ci").iterdir() if p.is_dir()]
    assert len(run_dirs) == 1, run_dirs
    run_dir = run_dirs[0]
    assert len(pd.read_csv(run_dir / "metrics.csv")) == 2
    assert proc.stdout.count("epoch 1/2") == 1
    # the cache the two ranks wrote (each its share) covers every image once
    n_images = sum(1 for split in ("train", "val", "test") for _ in (ci_root / "data" / split).rglob("*.png"))
    assert len(list(cache.rglob("*.safetensors"))) == n_images

    summary = pd.read_csv(run_dir / "eval" / "summary.csv").set_index("checkpoint")
    per_case = pd.read_csv(run_dir / "eval" / "per_case.csv")
    for _, rows in per_case.groupby("checkpoint"):  # best and final: each test image once (padding removed)
        assert rows["image"].is_unique and len(rows) == 10
    single = fpt_eval.main(["--config", "configs/ci.yaml", "--checkpoint", str(run_dir / "checkpoints" / "best.pt"),
                            f"data.root={ci_root / 'data'}", f"runs_root={tmp_path / 'runs_eval'}",
                            f"data.preload_dir={cache}", "runtime.threads=1", "runtime.progress=false"])
    assert summary.loc["best", "auc"] == pytest.approx(single["auc"], abs=1e-9)
    assert summary.loc["best", "accuracy"] == pytest.approx(single["accuracy"], abs=1e-9)
