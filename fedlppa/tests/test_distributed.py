"""torchrun for the centralised rows: 2 gloo processes on CPU give one run folder, every test case scored once, the
gathered Dice of a one-process ``eval.py`` of the saved checkpoint, and the same parameters on both ranks; federated
methods refuse a multi-process launch; the sharded evaluation and the shared pCE equal the one-process ones."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist

from common.runtime import DistInfo
from fedlppa.engine import distributed, evaluate
from fedlppa.federation import FederationError, initial_global_state, make_site_model
from fedlppa.fl_sequential import check_world_size
from fedlppa.losses import partial_cross_entropy, shared_partial_cross_entropy
from fedlppa.pipeline import prepare_sites

PROJECT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_torchrun_two_processes_centralized(ci_data, tmp_path, monkeypatch):
    from fedlppa.eval import main as eval_main

    overrides = [f"data.root={ci_data / 'data'}", f"runs_root={tmp_path}", "federation.method=centralized_full",
                 "optim.batch_size=4", "federation.rounds=8", "federation.iters_per_round=10"]  # 2 images per rank
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=0",
           "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0", "train.py", "--config", "configs/ci.yaml", *overrides]
    done = subprocess.run(cmd, cwd=PROJECT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # check_replicas raises on any difference, so this line means: equal parameters on both ranks after every round
    assert "2 processes, the same parameters on every rank after every round" in done.stdout
    (run,) = list((tmp_path / "fedlppa" / "ci").iterdir())
    per_case = pd.read_csv(run / "eval" / "per_case.csv")
    stems = sorted(f"{site}/{p.stem}" for site, dom in zip("abc", (1, 2, 3))
                   for p in (ci_data / "data" / f"Domain{dom}" / "test").glob("*.h5"))
    assert sorted(per_case["site"] + "/" + per_case["case"]) == stems  # every test case once, none twice
    gathered = pd.read_csv(run / "eval" / "summary.csv").set_index("site")
    assert gathered.loc["mean", "dice"] > 0.3  # a trained model: the comparison below is not 0 == 0
    monkeypatch.chdir(PROJECT)
    single = eval_main(["--checkpoint", str(run / "checkpoints" / "last.pt"), "--out", str(tmp_path / "single")])
    for key in ("dice", "dice_a", "dice_b", "dice_c"):
        assert single[key] == pytest.approx(gathered.loc["mean", key], abs=1e-9), key
    one = pd.read_csv(tmp_path / "single" / "per_case.csv")
    assert list(one["case"]) == list(per_case["case"])
    np.testing.assert_allclose(one["dice_fg"], per_case["dice_fg"], atol=1e-9)


@pytest.mark.parametrize("method", ["fedlppa", "fedavg", "local"])
def test_federated_methods_refuse_torchrun(make_cfg, tmp_path, method):
    cfg = make_cfg(tmp_path, f"federation.method={method}")
    check_world_size(cfg, DistInfo(0, 0, 1))  # one process: the sequential driver
    with pytest.raises(FederationError, match=r"only the centralised rows .*without torchrun .*Flower"):
        check_world_size(cfg, DistInfo(1, 1, 2))


def test_centralized_rows_accept_torchrun_with_a_splittable_batch(make_cfg, tmp_path):
    check_world_size(make_cfg(tmp_path, "federation.method=centralized_weak", "optim.batch_size=2"),
                     DistInfo(0, 0, 2))
    with pytest.raises(FederationError, match="optim.batch_size = 2 .* over 3 processes"):
        check_world_size(make_cfg(tmp_path, "federation.method=centralized_full", "optim.batch_size=2"),
                         DistInfo(0, 0, 3))


def test_sharded_evaluation_and_shared_pce_equal_one_process(ci_data, make_cfg, tmp_path):
    """The multi-process code paths in a gloo group of one rank: the same rows, summary and loss."""
    cfg = make_cfg(ci_data, "federation.method=centralized_full")
    specs, _ = prepare_sites(cfg)
    model = make_site_model(cfg, 0, "mask")
    model.load_state_dict(initial_global_state(cfg))
    cases = specs[0].data.test
    plain_rows, plain = evaluate(model, cases, 2, surface=True)
    logits, target = torch.randn(3, 2, 8, 8), torch.randint(0, 3, (3, 8, 8))
    plain_pce = partial_cross_entropy(logits, target, 2)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert distributed()
        rows, summary = evaluate(model, cases, 2, surface=True)
        shared_pce = shared_partial_cross_entropy(logits, target, 2)
    finally:
        dist.destroy_process_group()
    assert not distributed()
    assert rows == plain_rows and summary == plain
    assert float(shared_pce) == pytest.approx(float(plain_pce), rel=1e-6)
