"""torchrun with 2 gloo processes on CPU: one run folder, and the gathered test metrics equal a one-process eval."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from joinedtrans import eval as eval_entry

PROJECT_DIR = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_torchrun_two_processes(synth_root: Path, tmp_path: Path, monkeypatch) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=0",
           "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0", "train.py", "--config", "configs/ci.yaml",
           f"runs_root={tmp_path}", f"data.root={synth_root}", "data.synthetic=false", "fine.enabled=false",
           "optim.batch_size=4", "fovea.batch_size=4"]  # 2 per rank: BatchNorm needs more than one sample
    done = subprocess.run(cmd, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = list((tmp_path / "joinedtrans" / "ci").iterdir())
    assert len(runs) == 1
    gathered = pd.read_csv(runs[0] / "eval" / "summary.csv").iloc[0]
    assert len(pd.read_csv(runs[0] / "eval" / "per_case.csv")) == 4  # every test image once
    monkeypatch.chdir(PROJECT_DIR)
    single = eval_entry.main(["--checkpoint", str(runs[0] / "checkpoints" / "best.pt"), "--out",
                              str(tmp_path / "single")])
    for key in ("dice_disc", "fovea_dist_norm", "fovea_dist_norm_hard"):
        assert single[key] == pytest.approx(gathered[key], nan_ok=True)
