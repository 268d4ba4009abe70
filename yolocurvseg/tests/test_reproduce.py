"""reproduce.py table logic and bench.py helpers (no training)."""

import pandas as pd
import pytest
import torch

from common.config import ConfigError
from yolocurvseg.bench import bench_curves, bench_synthesis
from yolocurvseg.reproduce import pick_labelled, summarise


def test_summarise_ratios_to_full_supervision():
    rows = []
    for method, dice in (("full_supervision", 0.8), ("yolocurvseg", 0.76), ("yolocurvseg", 0.8),
                         ("pce_skeleton", 0.4), ("synthetic_only", 0.6)):
        rows.append({"method": method, "dice": dice, "cldice": dice, "hd95": 1.0, "sensitivity": 1.0,
                     "specificity": 1.0, "betti0_error": 0.0, "betti1_error": 0.0})
    table = summarise(pd.DataFrame(rows))
    assert [r["method"] for r in table] == ["yolocurvseg", "full_supervision", "pce_skeleton", "synthetic_only"]
    assert table[0]["dice_ratio"] == pytest.approx(0.975) and table[0]["runs"] == 2
    assert table[0]["dice_ratio_std"] == pytest.approx(0.025)
    assert list(table[0])[1] == "dice_ratio"  # headline column first
    assert table[1]["dice_ratio"] == pytest.approx(1.0)


def test_pick_labelled_spreads_choices():
    ids = [f"{i:02d}" for i in range(9, 21)]
    assert pick_labelled(ids, 3) == ["09", "15", "20"]
    with pytest.raises(ConfigError, match="exceeds"):
        pick_labelled(ids, 20)


def test_bench_helpers_report_throughput():
    row = bench_curves(64, 1, "dca1")
    assert row["images_per_s"] > 0 and row["mean_nodes"] > 1
    row = bench_synthesis(64, 1, 4, 1, torch.device("cpu"))
    assert row["images_per_s"] > 0


def test_reproduce_cli_checks_rows_and_parses(capsys):
    from yolocurvseg import reproduce

    with pytest.raises(SystemExit) as info:
        reproduce.main(["--only", "yolocurvseg,nnunet"])
    assert info.value.code == 2 and "nnunet" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        reproduce.main(["--only", "yolocurvseg,full_supervision", "--print-config"])
    assert info.value.code == 0


def test_plan_gives_every_row_three_runs_and_full_supervision_three_seeds():
    from yolocurvseg.reproduce import ABLATIONS, Plan, plan_jobs

    rows = ["yolocurvseg", "full_supervision", "pce_skeleton", "synthetic_only", "yolocurvseg_coarse"]
    jobs = plan_jobs(Plan(rows, ["09", "15", "20"], [0], "runs"))
    count = {r: sum(j.row == r for j in jobs) for r in rows}
    assert count == {"yolocurvseg": 3, "full_supervision": 3, "pce_skeleton": 3, "synthetic_only": 3,
                     "yolocurvseg_coarse": 0}  # the coarse row comes out of each yolocurvseg run
    assert sorted(j.seed for j in jobs if j.row == "full_supervision") == [0, 1, 2]
    assert [j.row for j in jobs[:4]] == ["yolocurvseg", "pce_skeleton", "synthetic_only", "full_supervision"]
    every = plan_jobs(Plan([*rows, "pce_skeleton_all", *ABLATIONS], ["a", "b", "c", "d", "e"], [0, 1, 2], "runs"))
    assert sum(j.row == "yolocurvseg_no_psf" for j in every) == 15
    assert all(j.extra == ("curves.psf=off",) for j in every if j.row == "yolocurvseg_no_psf")


def test_full_supervision_gets_the_pipelines_segmenter_steps():
    from common.config import apply_overrides, from_dict, to_dict
    from yolocurvseg.settings import Config
    from yolocurvseg.train import matched_steps

    cfg = from_dict(Config, apply_overrides(to_dict(Config()), ["optim.steps=300", "fine.steps=150", "fine.rounds=2"]))
    assert matched_steps(cfg) == 600
    cfg.fine.enabled = False
    assert matched_steps(cfg) == 300


def test_small_components_are_removed_inside_the_fov():
    import numpy as np

    from yolocurvseg.engine import postprocess

    mask = np.zeros((20, 20), bool)
    mask[2, 2:18] = True  # a 16-px vessel piece: kept
    mask[10:12, 10:12] = True  # a 4-px blob: removed
    mask[18, 0:3] = True  # outside the FOV: removed
    fov = np.ones((20, 20), bool)
    fov[17:] = False
    out = postprocess(mask, fov, 5)
    assert out[2, 2:18].all() and not out[10:12, 10:12].any() and not out[17:].any()
    np.testing.assert_array_equal(postprocess(mask, fov, 0), mask)


@pytest.mark.slow
def test_reproduce_runs_sub_runs_in_two_worker_processes(tmp_path):
    """``--workers 2``: the sub-runs go to two spawned processes; per_run.csv and the table hold every one of them."""
    from pathlib import Path

    from yolocurvseg import reproduce

    cfg = str(Path(__file__).resolve().parents[1] / "configs" / "ci.yaml")
    out = reproduce.main(["--config", cfg, "--only", "full_supervision", "--workers", "2", f"runs_root={tmp_path}",
                          f"data.root={tmp_path / 'data'}"])
    per_run = pd.read_csv(out / "per_run.csv")
    assert sorted(per_run.seed) == [0, 1, 2] and set(per_run.skeleton) == {"none"}
    table = pd.read_csv(out / "comparison.csv")
    assert table.loc[0, "method"] == "full_supervision" and table.loc[0, "runs"] == 3
    assert len({Path(r).parent.name for r in per_run.run}) == 3  # one sub-run folder per seed
