"""The repository's shared behaviour in octa_iqa: real data untouched, bad input before any work, exact resume,
refused keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from common.datasets import DatasetFolderError, DataVerificationError
from octa_iqa.settings import SynthConfig
from octa_iqa.synth import generate_dataset


def test_generator_refuses_a_folder_holding_foreign_files(tmp_path):
    real = tmp_path / "sOCTA"
    (real / "train" / "2").mkdir(parents=True)
    own = real / "train" / "2" / "real_scan.png"
    own.write_bytes(b"a real scan")
    with pytest.raises(DatasetFolderError, match="not created by this generator"):
        generate_dataset(real, SynthConfig(size=32, train_counts=[1, 1, 1], test_counts=[1, 1, 1]))
    assert own.read_bytes() == b"a real scan" and sorted(p.name for p in real.rglob("*")) == ["2", "real_scan.png",
                                                                                               "train"]


def test_data_root_means_real_data(tmp_path, capsys):
    from octa_iqa.train import main

    with pytest.raises(SystemExit):
        main(["--config", "configs/ci.yaml", "--data-root", str(tmp_path), "--print-config"])
    out = capsys.readouterr().out
    assert "synthetic: false" in out and str(tmp_path) in out


@pytest.mark.parametrize("folder", ["test/1", "train/0"])
def test_truncated_image_stops_before_any_run_folder(tmp_path, make_config, folder):
    """A truncated image in the test split, or among the non-outstanding training images (never used for training),
    stops the run up front: nothing is trained and no run folder exists."""
    from octa_iqa.train import run_training

    cfg = make_config(tmp_path, "model.pretrained=none")
    generate_dataset(cfg.data.root, cfg.data.synth)
    victim = sorted((Path(cfg.data.root) / folder).glob("*.png"))[0]
    victim.write_bytes(victim.read_bytes()[:40])
    with pytest.raises(DataVerificationError, match=victim.name):
        run_training(cfg)
    assert not (tmp_path / "runs" / "octa_iqa").exists()


def test_eval_reads_only_the_evaluated_splits(trained, tmp_path):
    """Evaluation checks the splits it evaluates, not the training split (here absent)."""
    import shutil

    from octa_iqa.eval import main as eval_main

    cfg, run = trained
    shutil.copytree(Path(cfg.data.root) / "test", tmp_path / "only_test" / "test")
    summary = eval_main(["--checkpoint", str(run / "checkpoints" / "best.pt"), "--out", str(tmp_path / "ev"),
                         f"data.root={tmp_path / 'only_test'}", "data.synthetic=false"])
    assert summary.loc[0, "n"] == 24


def test_resumed_run_writes_the_uninterrupted_rows(trained, tmp_path, make_config):
    """Stopped after epoch 2 and resumed: epoch 3's row equals the uninterrupted 3-epoch run's (shared fixture)."""
    from octa_iqa.train import run_training

    cfg, straight = trained
    short = make_config(tmp_path, "model.pretrained=none", "optim.epochs=2", f"data.root={cfg.data.root}")
    run = run_training(short)
    resumed = run_training(make_config(tmp_path, "model.pretrained=none", "optim.epochs=3",
                                       f"data.root={cfg.data.root}"), resume="auto")
    assert resumed == run
    got = pd.read_csv(run / "metrics.csv").set_index("step")
    want = pd.read_csv(straight / "metrics.csv").set_index("step")
    pd.testing.assert_series_equal(got.loc[3], want.loc[3], check_exact=True)


@pytest.mark.parametrize(("override", "message"), [("optim.epochs=-1", "optim.epochs must be >= 0"),
                                                   ("runtime.amp=bf16", "no mixed-precision path"),
                                                   ("runtime.compile=true", "does not compile")])
def test_values_it_cannot_honour_are_refused_before_work(override, message, capsys):
    from octa_iqa.train import main

    with pytest.raises(SystemExit):
        main(["--config", "configs/ci.yaml", override])
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_two_processes_one_run_folder_same_scores(trained, tmp_path, make_config):
    """2 gloo processes: the frozen features are extracted in shares and gathered, the adaptors train under DDP on
    shares of the same global batches; one run folder, and the loss rows and held-out scores of one process (up to
    float summation order, which Adam and the bank refresh amplify a little). Both runs use one intra-op thread:
    with torch's default thread count in the one-process run, Adam's first, sign-like steps turn the different
    summation order of near-zero gradient entries into first-epoch metrics up to 1 % apart."""
    import os
    import subprocess
    import sys

    import torch

    from common.checkpoint import load_checkpoint
    from octa_iqa.train import run_training

    data_root = trained[0].data.root
    overrides = ["model.pretrained=none", "optim.epochs=1", "runtime.progress=false", "runtime.threads=1",
                 f"data.root={data_root}"]
    straight = run_training(make_config(tmp_path / "one", *overrides))
    runs = tmp_path / "two" / "runs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=0",
           "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0", str(Path(__file__).parents[1] / "train.py"),
           "--config", "configs/ci.yaml", f"runs_root={runs}", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=Path(__file__).parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    folders = list((runs / "octa_iqa" / "ci").iterdir())
    assert len(folders) == 1, folders
    rows = pd.read_csv(folders[0] / "metrics.csv").set_index("step")
    ref = pd.read_csv(straight / "metrics.csv").set_index("step")
    np.testing.assert_allclose(rows.loc[1], ref.loc[1], rtol=1e-4)  # the same gradients
    got = load_checkpoint(folders[0] / "checkpoints" / "best.pt")["extra"]
    want = load_checkpoint(straight / "checkpoints" / "best.pt")["extra"]
    for key in ("holdout_patch_term", "holdout_image_term"):
        torch.testing.assert_close(got[key], want[key], rtol=1e-2, atol=0)
    torch.testing.assert_close(got["holdout_scores"], want["holdout_scores"], rtol=0, atol=0.1)
