"""Entry points on configs/ci.yaml in a temporary folder: train, exact resume, evaluate, predict, reproduce, and
bad input (a truncated test image, a foreign folder as synthetic root, bad values) found before any work."""

from __future__ import annotations

import csv
import shutil

import cv2
import numpy as np
import pytest
import torch

from common.config import load_config
from common.datasets import DatasetFolderError, DataVerificationError
from pamsr import eval as pamsr_eval
from pamsr import reproduce, train
from pamsr.data import split_samples
from pamsr.pipeline import ensure_synthetic
from pamsr.settings import PROJECT_DIR, Config


def metrics_rows(run) -> list[dict]:
    with (run / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


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
    rows = metrics_rows(run)
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    steps = [float(r["train/step"]) for r in rows]
    assert steps[1] == 2 * steps[0] and steps[2] == 3 * steps[0]  # the optimiser-step counter continues


def test_resume_after_epoch_1_equals_uninterrupted_epoch_2(trained, tmp_path):
    """Killed after epoch 1 (a run with optim.epochs=1) and resumed: the epoch-2 row equals the uninterrupted run's,
    data order and patches included."""
    base, overrides, uninterrupted = trained
    reference = metrics_rows(uninterrupted)[1]
    split = [f"runs_root={tmp_path / 'runs'}", f"data.root={base / 'data'}"]
    first = train.main(["--config", "configs/ci.yaml", *split, "optim.epochs=1"])
    resumed = train.main(["--config", "configs/ci.yaml", "--resume", "auto", *split, "optim.epochs=2"])
    assert resumed == first
    rows = metrics_rows(resumed)
    assert len(rows) == 2 and rows[1] == reference


def test_truncated_test_image_fails_before_any_run_folder(trained, tmp_path):
    base, _, _ = trained
    shutil.copytree(base / "data", tmp_path / "data")  # the stamped synthetic set, reused as it is
    overrides = [f"runs_root={tmp_path / 'runs'}", f"data.root={tmp_path / 'data'}"]
    cfg = load_config(Config, PROJECT_DIR / "configs" / "ci.yaml", overrides)
    (_, victim), *_ = split_samples(cfg.data, "test")
    victim.write_bytes(victim.read_bytes()[:200])
    with pytest.raises(DataVerificationError, match=victim.parent.name):
        train.main(["--config", "configs/ci.yaml", *overrides])
    assert not (tmp_path / "runs").exists()


def test_synthetic_generator_refuses_a_foreign_folder_and_other_parameters(trained, tmp_path):
    foreign = tmp_path / "my_scans"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("real data")
    cfg = load_config(Config, PROJECT_DIR / "configs" / "ci.yaml", [f"data.root={foreign}"])
    with pytest.raises(DatasetFolderError, match="not empty"):
        ensure_synthetic(cfg)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"] and (foreign / "notes.txt").read_text() == "real data"
    assert not (tmp_path / "my_scans.partial").exists()
    base, _, _ = trained
    other = load_config(Config, PROJECT_DIR / "configs" / "ci.yaml", [f"data.root={base / 'data'}",
                                                                       "data.synth.seed=9"])
    with pytest.raises(DatasetFolderError, match="other parameters"):
        ensure_synthetic(other)


def test_bad_values_stop_before_any_work(tmp_path, capsys):
    for bad, key in (("optim.epochs=-1", "optim.epochs"), ("optim.lr=0", "optim.lr"), ("displacement.p=2", "p"),
                     ("eval.tile_overlap=32", "eval.tile_overlap"), ("data.verify=some", "data.verify")):
        with pytest.raises(SystemExit) as info:
            train.main(["--config", "configs/ci.yaml", f"runs_root={tmp_path / 'runs'}",
                        f"data.root={tmp_path / 'data'}", bad])
        assert info.value.code == 2 and key in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


def test_eval_and_predict(trained, tmp_path):
    base, overrides, run = trained
    summary = pamsr_eval.main(["--config", "configs/ci.yaml", "--checkpoint", str(run / "checkpoints" / "best.pt"),
                               *overrides])
    for key in ("psnr", "ssim", "psnr_cart", "ssim_cart", "psnr_displaced", "psnr_clean", "ssim_clean",
                "psnr_clean_displaced"):
        assert np.isfinite(summary[key]), key
    assert (run / "eval" / "summary.csv").is_file() and (run / "eval" / "per_case.csv").is_file()
    assert (run / "figures" / "eval_crops.png").is_file()
    lr_dir = tmp_path / "lr"
    lr_dir.mkdir()
    cv2.imwrite(str(lr_dir / "scan_a.png"), np.random.default_rng(0).integers(1, 255, (40, 52), dtype=np.uint8))
    out = pamsr_eval.main(["--config", "configs/ci.yaml", "--checkpoint", "auto", "--predict", str(lr_dir),
                           "--out", str(tmp_path / "sr"), *overrides])
    sr = cv2.imread(str(out / "scan_a_x2.png"), cv2.IMREAD_GRAYSCALE)
    assert sr.shape == (80, 104)
    (lr_dir / "scan_b.png").write_bytes((lr_dir / "scan_a.png").read_bytes()[:60])  # truncated
    with pytest.raises(DataVerificationError, match="scan_b.png"):
        pamsr_eval.main(["--config", "configs/ci.yaml", "--predict", str(lr_dir), "--out", str(tmp_path / "sr2"),
                         *overrides])
    assert not (tmp_path / "sr2").exists()


def test_overlap_sweep_matches_the_plain_evaluation(trained, tmp_path):
    """``eval.py --overlaps``: one row per overlap; the row of the config's own overlap equals a plain evaluation."""
    import pandas as pd

    _, overrides, run = trained
    ckpt = str(run / "checkpoints" / "best.pt")
    plain = pamsr_eval.main(["--config", "configs/ci.yaml", "--checkpoint", ckpt, "--out", str(tmp_path / "plain"),
                             *overrides])  # ci.yaml: tiled, tile 32, overlap 8
    table = pamsr_eval.main(["--config", "configs/ci.yaml", "--checkpoint", ckpt, "--overlaps", "whole,0,8",
                             "--out", str(tmp_path / "sweep"), *overrides])
    rows = pd.read_csv(table, dtype={"overlap": str})
    assert list(rows["overlap"]) == ["whole", "0", "8"]
    assert rows.loc[2, "psnr"] == pytest.approx(plain["psnr"], abs=1e-9)
    assert rows.loc[0, "psnr"] != rows.loc[1, "psnr"]  # tile borders change the output: the sweep is not vacuous
    with pytest.raises(SystemExit):
        pamsr_eval.main(["--config", "configs/ci.yaml", "--checkpoint", ckpt, "--overlaps", "32", *overrides])


def test_mode_sweep_compares_inference_modes_on_the_same_weights(trained, tmp_path):
    """``eval.py --modes``: the first mode is the reference (differences 0); the fused attention path gives the same
    PSNR as the materialised one (same maths); bf16, where the CPU has it, stays close; a bad mode is refused."""
    import pandas as pd

    from pamsr.inference import bf16_native

    _, overrides, run = trained
    ckpt = str(run / "checkpoints" / "best.pt")
    table = pamsr_eval.main(["--config", "configs/ci.yaml", "--checkpoint", ckpt, "--modes",
                             "fp32:materialised:off,fp32:fused:off,bf16:fused:off", "--out", str(tmp_path), *overrides])
    rows = pd.read_csv(table).set_index("mode")
    assert rows.loc["fp32:materialised:off", "psnr_vs_first"] == 0
    assert rows.loc["fp32:materialised:off", "max_abs_diff_vs_first"] == 0
    assert abs(rows.loc["fp32:fused:off", "psnr_vs_first"]) < 1e-3
    assert rows.loc["fp32:fused:off", "max_abs_diff_vs_first"] < 1e-4  # another kernel, same maths
    if bf16_native(torch.device("cpu")):
        assert abs(rows.loc["bf16:fused:off", "psnr_vs_first"]) < 0.5
    else:
        assert rows.loc["bf16:fused:off", "status"].startswith("unsupported")
    with pytest.raises(SystemExit):
        pamsr_eval.main(["--config", "configs/ci.yaml", "--checkpoint", ckpt, "--modes", "fp16:fused:off",
                         *overrides])


def test_bicubic_needs_no_checkpoint_and_models_do(trained, tmp_path, capsys):
    base, overrides, _ = trained
    summary = pamsr_eval.main(["--config", "configs/ci.yaml", "--out", str(tmp_path), "model.name=bicubic", *overrides])
    assert summary["psnr"] > 20 and (tmp_path / "summary.csv").is_file()
    with pytest.raises(SystemExit) as info:
        pamsr_eval.main(["--config", "configs/ci.yaml", "--out", str(tmp_path), f"runs_root={tmp_path / 'none'}",
                         f"data.root={base / 'data'}"])
    assert info.value.code == 2 and "needs --checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_reproduce_writes_comparison(trained):
    _, overrides, _ = trained
    out = reproduce.main(["--config", "configs/ci.yaml", *overrides, "optim.epochs=1", "--seeds", "1,2",
                          "--jobs", "1", "--only", "pamsr,bicubic,no_displacement"])
    with (out / "comparison.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert out.parent.name == "reproduce" and (out / "config.yaml").is_file() and (out / "env.json").is_file()
    for row in ("pamsr", "bicubic", "no_displacement"):  # one run per row and seed, next to (not inside) reproduce/
        for seed in (1, 2):
            (sub,) = list((out.parent.parent / f"reproduce-{row}-s{seed}").iterdir())
            assert (sub / "eval" / "summary.csv").is_file()
    assert [r["method"] for r in rows] == ["pamsr", "bicubic", "no_displacement"]
    assert list(rows[0])[:5] == ["method", "psnr", "psnr_std", "psnr_clean", "psnr_clean_std"]
    assert all(r["seeds"] == "2" for r in rows) and float(rows[0]["psnr_std"]) > 0  # two seeds, two trajectories
    with (out / "per_seed.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 6
    with (out / "claims.csv").open() as handle:  # only the claims whose rows ran
        assert [r["claim"].split()[0] for r in csv.DictReader(handle)] == ["pamsr", "no_displacement"]
    assert (out / "comparison.md").is_file() and (out / "figures" / "crops.png").is_file()
    assert "reg_exact_fraction=1.000" in (out / "comparison.md").read_text()


@pytest.mark.slow
def test_reproduce_all_evaluates_ema_and_self_ensemble_of_the_pamsr_run(trained, tmp_path):
    base, _, _ = trained
    out = reproduce.main(["--config", "configs/ci.yaml", f"runs_root={tmp_path / 'runs'}", f"data.root={base / 'data'}",
                          "optim.epochs=1", "--all", "--only", "pamsr,bicubic", "--seeds", "1", "--folds", "1",
                          "--jobs", "1"])
    with (out / "comparison.csv").open() as handle:
        rows = {r["method"]: r for r in csv.DictReader(handle)}
    assert list(rows) == ["pamsr", "pamsr_ema", "pamsr_self_ensemble", "bicubic"]
    assert (out / "figures" / "crops.png").is_file()  # drawn from the test images of fold 1, not the config's fold 0
    assert rows["pamsr_ema"]["psnr"] != rows["pamsr"]["psnr"] != rows["pamsr_self_ensemble"]["psnr"]
    (run,) = list((tmp_path / "runs" / "pamsr" / "reproduce-pamsr-f1-s1").iterdir())
    ckpt = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert set(ckpt["extra"]["ema"]) == set(ckpt["model"])  # the EMA weights are saved with the model


def test_reproduce_all_runs_every_fold_validating_on_the_next_one():
    _, _, tasks, _ = reproduce.parse(["--config", "configs/ci.yaml", "--all", "--only", "pamsr,bicubic",
                                         "--seeds", "1,2", "data.val_fold=1"])
    plan = [(m, s, c.data.fold, c.data.val_fold, c.experiment) for m, s, c in tasks]
    assert len(plan) == 5 * 2 * 2 and {f for _, _, f, _, _ in plan} == {0, 1, 2, 3, 4}
    assert plan[0] == ("pamsr", 1, 0, 1, "reproduce-pamsr-f0-s1")
    assert ("bicubic", 2, 4, 0, "reproduce-bicubic-f4-s2") in plan  # the last fold validates on fold 0
    _, _, official, _ = reproduce.parse(["--config", "configs/ci.yaml", "--folds", "3", "--only", "pamsr",
                                         "data.val_fold=null"])
    assert [(c.data.fold, c.data.val_fold) for _, _, c in official] == [(3, None)] * 3  # val = test, as official
    _, _, default, _ = reproduce.parse(["--config", "configs/ci.yaml", "--only", "pamsr", "--seeds", "1"])
    assert [c.experiment for _, _, c in default] == ["reproduce-pamsr-s1"]  # no --folds: the config's own split


def test_reproduce_rejects_a_fold_outside_the_split(capsys):
    with pytest.raises(SystemExit):
        reproduce.parse(["--config", "configs/ci.yaml", "--folds", "5", "--only", "pamsr"])
    assert "fold 5 is outside 0..4" in capsys.readouterr().err


def test_aggregate_counts_folds_and_seeds():
    runs = [{"method": "pamsr", "seed": s, "fold": f, "psnr": 20.0 + f, "params": 1, "minutes": 1.0}
            for f in (0, 1) for s in (1, 2, 3)]
    (row,) = reproduce.aggregate(runs)
    assert (row["seeds"], row["folds"], row["psnr"], row["psnr_std"]) == (3, 2, 20.5, 0.5)
