import csv

import numpy as np
import pytest

from common.report import update_readme_results
from common.tracking import (
    Tracker,
    image_grid,
    overlay_mask,
    plot_confusion_matrix,
    plot_curves,
    write_comparison,
)


def test_tracker_writes_csv_rows_and_tensorboard(tmp_path):
    with Tracker(tmp_path) as tr:
        tr.log({"train/loss": 1.0}, step=0)
        tr.log({"train/loss": 0.5, "val/auc": 0.7}, step=1)
        tr.log({"train/loss": 0.25, "val/auc": 0.8}, step=2)
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [r["step"] for r in rows] == ["0", "1", "2"]
    assert rows[0]["val/auc"] == "" and float(rows[2]["val/auc"]) == 0.8
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    # a resumed run appends to the same file
    with Tracker(tmp_path, tensorboard=False) as tr:
        tr.log({"train/loss": 0.1, "val/auc": 0.9}, step=3)
    assert len(list(csv.DictReader((tmp_path / "metrics.csv").open()))) == 4
    fig = plot_curves(tmp_path / "metrics.csv", ["train/loss", "val/auc"], tmp_path / "figures" / "curves.png")
    assert fig.stat().st_size > 1000
    with pytest.raises(KeyError, match="val/dice"):
        plot_curves(tmp_path / "metrics.csv", ["val/dice"], tmp_path / "x.png")


def test_tracker_is_silent_when_disabled(tmp_path):
    Tracker(tmp_path, enabled=False).log({"a": 1.0}, 0)
    assert not (tmp_path / "metrics.csv").exists()


def test_overlay_and_grid():
    img = np.zeros((4, 5), np.float32)
    mask = np.zeros((4, 5), np.int64)
    mask[1, 1] = 1
    over = overlay_mask(img, mask, alpha=1.0)
    assert over.shape == (4, 5, 3) and over.dtype == np.uint8
    assert over[1, 1].tolist() == [255, 0, 0] and over[0, 0].tolist() == [0, 0, 0]
    grid = image_grid([[img, over], [over, img]], pad=1)
    assert grid.shape == (2 * 5 + 1, 2 * 6 + 1, 3)


def test_confusion_matrix_figure(tmp_path):
    out = plot_confusion_matrix(np.array([[3, 1], [0, 4]]), ["a", "b"], tmp_path / "cm.png")
    assert out.is_file() and out.stat().st_size > 1000


def test_comparison_and_readme_report(tmp_path):
    run = tmp_path / "runs" / "fpt_plus" / "reproduce" / "20260101-000000"
    write_comparison([{"method": "fpt_plus", "auc": 0.9123, "auc_std": 0.01}, {"method": "side_only", "auc": 0.8}],
                     run, "FPT+ on synthetic data")
    assert (run / "comparison.md").read_text().count("|") > 10
    readme = tmp_path / "README.md"
    readme.write_text("| project | paper | ours |\n|---|---|---|\n| [fpt_plus](fpt_plus/) | 0.95 | — |\n"
                      "| [spmix](spmix/) | ? | — |\n")
    updated = update_readme_results(readme, tmp_path / "runs", ["fpt_plus", "spmix"])
    assert set(updated) == {"fpt_plus"}
    text = readme.read_text()
    assert "auc 0.912 ± 0.010 (`runs/fpt_plus/reproduce/20260101-000000`)" in text
    assert "| [spmix](spmix/) | ? | — |" in text
