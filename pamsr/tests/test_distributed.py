"""torchrun with 2 gloo processes on CPU: one run folder, the validation images split between the ranks (each
evaluated once), and the gathered validation PSNR equal to a one-process evaluation of the saved best model."""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest
import torch

from common.config import load_config
from pamsr.data import load_images
from pamsr.engine import evaluate
from pamsr.eval import load_model
from pamsr.settings import PROJECT_DIR, Config


@pytest.mark.slow
def test_torchrun_two_processes_shard_validation(synth_root, tmp_path):
    overrides = [f"runs_root={tmp_path}", f"data.root={synth_root}", "data.synthetic=false", "data.dataset=reg_mid",
                 "data.n_folds=3", "data.val_fold=1", "optim.epochs=1", "runtime.threads=1"]  # 2 validation images
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=0",
           "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0", "train.py", "--config", "configs/ci.yaml", *overrides]
    done = subprocess.run(cmd, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run,) = list((tmp_path / "pamsr" / "ci").iterdir())
    with (run / "metrics.csv").open() as handle:
        (row,) = list(csv.DictReader(handle))
    assert float(row["val/images"]) == 2  # each validation image once over both ranks, not once per rank
    cfg = load_config(Config, PROJECT_DIR / "configs" / "ci.yaml", overrides)
    model = load_model(cfg, run / "checkpoints" / "best.pt", torch.device("cpu"))
    images = load_images(cfg.data, "val")
    rows, _ = evaluate(model, images, cfg.data.scale, cfg.data.pad, torch.device("cpu"), tiled=cfg.eval.tiled,
                       tile=cfg.eval.tile, overlap=cfg.eval.val_tile_overlap, cartesian=False)
    assert len(images) == 2
    assert float(row["val/psnr"]) == pytest.approx(float(np.mean([r["psnr"] for r in rows])), abs=1e-6)
