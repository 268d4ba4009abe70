"""Entry points on configs/ci.yaml in a temporary folder: train, resume, evaluate, predict, reproduce."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest
import torch

from pamsr import eval as pamsr_eval
from pamsr import reproduce, train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("smoke")
    overrides = [f"runs_root={base / 'runs'}", f"data.root={base / 'data'}"]
    run = train.main(["--config", "configs/ci.yaml", *overrides])
    return base, overrides, run


def test_train_writes_run_folder(trained):
    _, _, run = trained
    for name in ("config.yaml", "env.json", "metrics.csv", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run / name).exists(), name
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["config"]["model"]["name"] == "swinir"
    with (run / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and all(np.isfinite(float(r["train/loss"])) for r in rows)


def test_resume_auto_continues_from_last(trained):
    _, overrides, run = trained
    resumed = train.main(["--config", "configs/ci.yaml", "--resume", "auto", *overrides, "optim.epochs=3"])
    assert resumed == run
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 3
    with (run / "metrics.csv").open() as handle:
        assert [int(r["step"]) for r in csv.DictReader(handle)] == [1, 2, 3]


def test_eval_and_predict(trained, tmp_path):
    base, overrides, run = trained
    summary = pamsr_eval.main(["--config", "configs/ci.yaml", "--checkpoint", str(run / "checkpoints" / "best.pt"),
                               *overrides])
    for key in ("psnr", "ssim", "psnr_cart", "ssim_cart", "psnr_displaced"):
        assert np.isfinite(summary[key])
    assert (run / "eval" / "summary.csv").is_file() and (run / "eval" / "per_case.csv").is_file()
    lr_dir = tmp_path / "lr"
    lr_dir.mkdir()
    cv2.imwrite(str(lr_dir / "scan_a.png"), np.random.default_rng(0).integers(1, 255, (40, 52), dtype=np.uint8))
    out = pamsr_eval.main(["--config", "configs/ci.yaml", "--checkpoint", "auto", "--predict", str(lr_dir),
                           "--out", str(tmp_path / "sr"), *overrides])
    sr = cv2.imread(str(out / "scan_a_x2.png"), cv2.IMREAD_GRAYSCALE)
    assert sr.shape == (80, 104)


def test_bicubic_needs_no_checkpoint_and_models_do(trained, tmp_path):
    _, overrides, _ = trained
    summary = pamsr_eval.main(["--config", "configs/ci.yaml", "--out", str(tmp_path), "model.name=bicubic", *overrides])
    assert summary["psnr"] > 20
    with pytest.raises(Exception, match="needs --checkpoint"):
        pamsr_eval.main(["--config", "configs/ci.yaml", "--out", str(tmp_path), *overrides])


@pytest.mark.slow
def test_reproduce_writes_comparison(trained):
    _, overrides, _ = trained
    out = reproduce.main(["--config", "configs/ci.yaml", *overrides, "optim.epochs=1",
                          "--only", "pamsr", "bicubic", "no_displacement"])
    with (out / "comparison.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["method"] for r in rows] == ["pamsr", "bicubic", "no_displacement"]
    assert list(rows[0])[:3] == ["method", "psnr", "ssim"]
    assert (out / "comparison.md").is_file() and (out / "figures" / "crops.png").is_file()
    assert "reg_exact_fraction=1.000" in (out / "comparison.md").read_text()
