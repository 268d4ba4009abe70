"""Smoke and resume: train.py on configs/ci.yaml, --resume auto continues, a run aborted in round k and resumed
equals an uninterrupted one, the continue/abort failure policies, a checkpoint of another site count."""

from __future__ import annotations

import pandas as pd
import pytest

from fedlppa.federation import FederationError
from fedlppa.fl_sequential import load_server_state
from fedlppa.train import main


def _args(ci_data, *extra):
    return ["--config", "configs/ci.yaml", f"data.root={ci_data / 'data'}", f"runs_root={ci_data / 'runs'}",
            *extra]


def test_smoke_then_resume_auto_continues(ci_data):
    first = main(_args(ci_data, "experiment=smoke", "federation.rounds=2"))
    run = first.run_dir
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "eval" / "per_case.csv").is_file()
    assert (run / "figures" / "per_site_dice.png").is_file() and (run / "figures" / "prompt_similarity.png").is_file()
    summary = pd.read_csv(run / "eval" / "summary.csv")
    assert list(summary["site"]) == ["mean", "a", "b", "c"]
    second = main(_args(ci_data, "experiment=smoke", "federation.rounds=3", "--resume", "auto"))
    assert second.run_dir == run and second.state.round == 3
    assert list(pd.read_csv(run / "metrics.csv")["step"]) == [1, 2, 3]


def test_aborted_round_resumed_equals_uninterrupted(ci_data):
    whole = main(_args(ci_data, "experiment=whole", "federation.method=fedlppa"))
    with pytest.raises(FederationError, match=r"site 1 failed in round 3 .*--resume auto"):
        main(_args(ci_data, "experiment=cut", "federation.on_failure=abort", "federation.inject_failure.site=1",
                   "federation.inject_failure.round=3", "federation.inject_failure.after_iters=1"))
    resumed = main(_args(ci_data, "experiment=cut", "--resume", "auto"))
    a = pd.read_csv(whole.run_dir / "metrics.csv")
    b = pd.read_csv(resumed.run_dir / "metrics.csv")
    pd.testing.assert_frame_equal(a, b)
    assert resumed.summary == whole.summary
    assert pd.read_csv(whole.run_dir / "eval" / "per_case.csv").equals(
        pd.read_csv(resumed.run_dir / "eval" / "per_case.csv"))


def test_continue_leaves_failed_site_out_and_checkpoint_site_count(ci_data, make_cfg):
    out = main(_args(ci_data, "experiment=cont", "federation.method=fedavg", "federation.inject_failure.site=2",
                     "federation.inject_failure.round=2"))
    rows = pd.read_csv(out.run_dir / "metrics.csv")
    assert list(rows["failed_c"]) == [0.0, 1.0, 0.0] and list(rows["n_failed"]) == [0.0, 1.0, 0.0]
    assert out.state.clients[2].iter_global == 4 and out.state.clients[0].iter_global == 6
    with pytest.raises(FederationError, match="min_sites"):
        main(_args(ci_data, "experiment=few", "federation.method=fedavg", "federation.min_sites=3",
                   "federation.inject_failure.site=0", "federation.inject_failure.round=1"))
    other = make_cfg(ci_data, "data.domains=[1,2]", "data.sup_types=[scribble,keypoint]",
                     "data.synth.train_counts=[4,3]")
    with pytest.raises(FederationError, match="holds 3 sites, this config trains 2"):
        load_server_state(out.run_dir / "checkpoints" / "last.pt", other, 2)


def test_eval_rebuilds_the_scored_models_and_predicts(ci_data, tmp_path):
    from fedlppa.eval import main as eval_main

    run = main(_args(ci_data, "experiment=evalme", "federation.rounds=1"))
    last = run.run_dir / "checkpoints" / "last.pt"
    summary = eval_main(["--checkpoint", str(last), "--out", str(tmp_path / "ev")])
    assert summary == run.summary
    assert (tmp_path / "ev" / "per_case.csv").is_file()
    n = eval_main(["--checkpoint", str(last), "--predict", str(ci_data / "data" / "Domain2" / "test"),
                   "--out", str(tmp_path / "pred"), "eval.site=b"])
    assert n == 2 and len(list((tmp_path / "pred").glob("*.png"))) == 2


def test_truncated_test_file_fails_before_any_run_folder(ci_data, tmp_path):
    import shutil

    from common.datasets import DataVerificationError

    root = tmp_path / "data"
    shutil.copytree(ci_data / "data", root)
    victim = next((root / "Domain3" / "test").glob("*.h5"))
    victim.write_bytes(victim.read_bytes()[:100])
    with pytest.raises(DataVerificationError, match=victim.name):
        main(["--config", "configs/ci.yaml", f"data.root={root}", f"runs_root={tmp_path / 'runs'}"])
    assert not (tmp_path / "runs").exists()


def test_bn_diagnostic_running_statistics_equal_the_scored_dice(ci_data):
    from fedlppa.bn_diagnostic import bn_gap, personalisation_report

    result = main(_args(ci_data, "experiment=bn_diag", "federation.method=fedavg", "federation.rounds=2"))
    gap = bn_gap(result.run_dir / "checkpoints" / "last.pt")
    assert list(gap) == ["a", "b", "c"]
    for site, (running, batch) in gap.items():
        assert running == pytest.approx(result.per_site[site]["dice"], abs=1e-6), site
        assert 0.0 <= batch <= 1.0
    report = personalisation_report(result.run_dir / "checkpoints" / "last.pt")
    for site, row in report.items():
        assert row["scored"] == pytest.approx(result.per_site[site]["dice"], abs=1e-6), site
        assert row["shared_decoders"] == row["scored"]  # FedAvg: the personalised model is theta_G
        assert 0.0 <= row["own_stats"] <= 1.0 and "w_mean" not in row
