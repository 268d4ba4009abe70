"""reproduce.py: the rows and columns of the comparison, the ImageNet-weights row from a weight file given by path,
and the image check before any run folder."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from octa_iqa.reproduce import METRIC_COLUMNS, ROWS, aggregate_seeds


def test_rows_of_the_comparison():
    assert ROWS == ("uno_qa", "uno_qa_two_threshold", "padim", "patchcore", "kmeans_raw_transductive", "supervised",
                    "handcrafted_logreg")


def test_aggregate_seeds_mean_std_and_seed_count():
    rows = [{"method": "a", **dict.fromkeys(METRIC_COLUMNS, v), "minutes": 1.0} for v in (0.5, 0.7)]
    rows.append({"method": "b", **dict.fromkeys(METRIC_COLUMNS, 0.4), "minutes": 2.0})
    table = {r["method"]: r for r in aggregate_seeds(rows)}
    assert table["a"]["balanced_accuracy"] == pytest.approx(0.6) and table["a"]["seeds"] == 2
    assert table["a"]["balanced_accuracy_std"] == pytest.approx(0.1414213, abs=1e-6)  # sample std (ddof 1)
    assert table["b"]["seeds"] == 1 and table["b"]["qwk_std"] == 0.0


def test_imagenet_row_from_a_weight_file_and_two_seeds(tmp_path):
    """``--pretrained FILE`` (here a random-init resnet10t saved as a weight file) adds ``uno_qa_pretrained``: its
    run loads the file (SHA-256 in the checkpoint, ImageNet input statistics in its config); every row carries
    ``<metric>_std`` and ``seeds`` (the supervised row runs on both seeds)."""
    import timm
    import torch

    from common.checkpoint import load_checkpoint
    from octa_iqa.reproduce import main

    weights = tmp_path / "resnet10t_imagenet.pth"
    torch.save(timm.create_model("resnet10t", pretrained=False).state_dict(), weights)
    out = main(["--config", "configs/ci.yaml", "--pretrained", str(weights), "--seeds", "2",
                "--only", "uno_qa,uno_qa_pretrained,supervised,handcrafted_logreg",
                f"runs_root={tmp_path / 'runs'}", f"data.root={tmp_path / 'data'}", "runtime.progress=false"])
    table = pd.read_csv(out / "comparison.csv").set_index("method")
    assert list(table.index) == ["uno_qa", "supervised", "handcrafted_logreg", "uno_qa_pretrained"]
    assert (table["seeds"] == 2).all()
    assert {f"{k}_std" for k in METRIC_COLUMNS} <= set(table.columns)
    runs = sorted((tmp_path / "runs" / "octa_iqa" / "reproduce-uno_qa_pretrained-s1").glob("*/checkpoints/best.pt"))
    ckpt = load_checkpoint(runs[-1])
    assert ckpt["config"]["model"]["pretrained"] == str(weights)
    assert ckpt["extra"]["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    source = timm.create_model("resnet10t", pretrained=False)
    source.load_state_dict(torch.load(weights))
    torch.testing.assert_close(ckpt["model"]["backbone.conv1.0.weight"], source.state_dict()["conv1.0.weight"])


def test_unreadable_image_stops_reproduce_before_any_run_folder(tmp_path, make_config):
    """A truncated test image: reproduce.py stops in its up-front check; nothing is trained, no run folder."""
    from common.datasets import DataVerificationError
    from octa_iqa.reproduce import main
    from octa_iqa.synth import generate_dataset

    cfg = make_config(tmp_path)
    generate_dataset(cfg.data.root, cfg.data.synth)
    victim = sorted((Path(cfg.data.root) / "test" / "0").glob("*.png"))[-1]
    victim.write_bytes(victim.read_bytes()[: len(victim.read_bytes()) // 2])
    with pytest.raises(DataVerificationError, match=victim.name):
        main(["--config", "configs/ci.yaml", f"runs_root={tmp_path / 'runs'}", f"data.root={cfg.data.root}"])
    assert not (tmp_path / "runs").exists()
