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
