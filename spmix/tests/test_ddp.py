"""The torchrun path of train.py: two CPU processes (gloo) train SPMix with PaCo (two views, class-balanced second
loader, the queue filled with both ranks' keys); rank 0 alone writes one run folder, and the validation metric
gathered across ranks equals a single-process evaluation of the saved checkpoint."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

PROJECT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_torchrun_two_processes_spmix_paco(tmp_path, ci_data):
    from common.config import load_config
    from spmix.engine import evaluate
    from spmix.model import build_model
    from spmix.pipeline import eval_loader, prepare_data, subset
    from spmix.settings import CLASSES, Config

    overrides = [f"data.root={ci_data}", f"runs_root={tmp_path / 'runs'}", "method=spmix", "loss.name=paco",
                 "saliency.method=spectral_residual", f"saliency.root={tmp_path / 'sal'}"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--rdzv-backend=c10d",
           "--rdzv-endpoint=localhost:0", "train.py", "--config", "configs/ci.yaml", *overrides]
    proc = subprocess.run(cmd, cwd=PROJECT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]

    runs = [p for p in (tmp_path / "runs" / "spmix" / "ci").iterdir() if p.is_dir()]
    assert len(runs) == 1, runs  # rank 0 chose the folder, rank 1 wrote nothing of its own
    run = runs[0]
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics["epoch"].tolist() == [1, 2] and proc.stdout.count("epoch 2/2") == 1
    assert (run / "eval" / "summary.csv").is_file()

    cfg = load_config(Config, PROJECT / "configs" / "ci.yaml", overrides)
    ckpt = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    # the PaCo queue received every rank's keys: 2 ranks x batch keys per step
    steps, batch, size = ckpt["step"], cfg.optim.batch_size, cfg.loss.paco.queue
    assert (2 * batch * steps) % size != (batch * steps) % size  # the check can tell the two apart
    assert int(ckpt["extra"]["queue"]["ptr"]) == (2 * batch * steps) % size
    # rank 0 logged the metric of the predictions gathered from both ranks: recompute it in one process
    model = build_model(cfg.model, len(CLASSES), cfg.data.img_size)
    model.load_state_dict(ckpt["model"])
    frame = subset(prepare_data(cfg, with_saliency=False).frame, "val")
    single = evaluate(model, eval_loader(cfg, frame), torch.device("cpu"), cfg.groups).metrics
    assert metrics["val_balanced_accuracy"].iloc[-1] == pytest.approx(single["balanced_accuracy"], abs=1e-9)
    assert metrics["val_f1_macro"].iloc[-1] == pytest.approx(single["f1_macro"], abs=1e-9)
