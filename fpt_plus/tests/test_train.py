"""Smoke and behaviour tests: train.py on configs/ci.yaml, --resume auto (exactly), eval/predict, config errors,
bad input found before any work, reproduce, and FPT+ beating the side-network-only baseline on the synthetic
fine-grained task."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from fpt_plus import eval as fpt_eval
from fpt_plus import reproduce, train


def _args(root: Path, *extra: str) -> list[str]:
    return ["--config", "configs/ci.yaml", f"data.root={root / 'data'}", f"runs_root={root / 'runs'}",
            "runtime.threads=1", "runtime.progress=false", *extra]


def test_train_resume_eval_predict(ci_root: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    cache = f"data.preload_dir={tmp_path / 'cache'}"
    result = train.main(_args(ci_root, f"runs_root={runs}", cache))
    run_dir = Path(result["run_dir"])
    for name in ("config.yaml", "env.json", "metrics.csv", "checkpoints/last.pt", "checkpoints/best.pt",
                 "eval/summary.csv", "eval/per_case.csv", "figures/roc_best.png", "figures/training_curves.png",
                 "figures/test_inputs_by_prediction.png"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tb").glob("events.*")), "TensorBoard events (scalars and the prediction grid)"
    assert result["learnable"] > 0 and 0 <= result["test_best"]["auc"] <= 1
    assert len(pd.read_csv(run_dir / "metrics.csv")) == 2
    summary = pd.read_csv(run_dir / "eval" / "summary.csv")
    assert set(summary["checkpoint"]) == {"best", "final"} and set(summary["split"]) == {"test"}

    resumed = train.main(_args(ci_root, f"runs_root={runs}", cache, "optim.epochs=3", "--resume", "auto"))
    assert Path(resumed["run_dir"]) == run_dir
    assert pd.read_csv(run_dir / "metrics.csv")["step"].tolist() == [1, 2, 3]

    # eval.py rebuilds the model from the checkpoint's own config and writes tables + figures
    (run_dir / "eval" / "summary.csv").unlink()
    scores = fpt_eval.main(["--checkpoint", "auto", "--config", "configs/ci.yaml", f"runs_root={runs}",
                            f"data.root={ci_root / 'data'}", "runtime.progress=false"])
    assert 0 <= scores["auc"] <= 1
    table = pd.read_csv(run_dir / "eval" / "summary.csv")
    assert table.loc[0, "checkpoint"] == "best" and table.loc[0, "auc"] == pytest.approx(scores["auc"])
    assert (run_dir / "eval" / "per_case.csv").is_file() and (run_dir / "figures" / "confusion_best.png").is_file()
    ckpt = run_dir / "checkpoints" / "last.pt"
    out = fpt_eval.main(["--checkpoint", str(ckpt), "--split", "val", "--out", str(tmp_path / "ev")])
    assert set(pd.read_csv(tmp_path / "ev" / "summary.csv")["split"]) == {"val"} and 0 <= out["auc"] <= 1
    preds = pd.read_csv(fpt_eval.main(["--checkpoint", str(ckpt), "--predict",
                                       str(ci_root / "data" / "test" / "1_mild"), "--out", str(tmp_path / "p")]))
    assert len(preds) == 2 and {"image", "pred", "pred_class", "prob_0_none"} <= set(preds.columns)


def test_resume_after_a_kill_is_exact(ci_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run killed after epoch 2 and resumed writes the same epoch-3 row as an uninterrupted 3-epoch run
    (data order, augmentation, dropout, schedule and step counter included)."""
    common = [f"data.preload_dir={tmp_path / 'cache'}", "optim.epochs=3", "optim.eval_every=1"]
    whole = train.main(_args(ci_root, f"runs_root={tmp_path / 'a'}", *common))
    real_run_epoch = train.run_epoch

    def killed_at_epoch_3(cfg, model, loaders, state, epoch, *args):
        if epoch == 2:
            raise KeyboardInterrupt("killed after epoch 2")
        return real_run_epoch(cfg, model, loaders, state, epoch, *args)

    monkeypatch.setattr(train, "run_epoch", killed_at_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train.main(_args(ci_root, f"runs_root={tmp_path / 'b'}", *common))
    monkeypatch.setattr(train, "run_epoch", real_run_epoch)
    resumed = train.main(_args(ci_root, f"runs_root={tmp_path / 'b'}", *common, "--resume", "auto"))
    rows_whole = pd.read_csv(Path(whole["run_dir"]) / "metrics.csv")
    rows_resumed = pd.read_csv(Path(resumed["run_dir"]) / "metrics.csv")
    assert len(rows_resumed) == 3
    pd.testing.assert_frame_equal(rows_whole, rows_resumed, check_exact=True)
    assert rows_whole.loc[2, "train/iterations"] == 3 * 2  # 20 images, batch 8, drop_last: 2 steps per epoch


def test_config_errors_are_clear_cli_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        train.main(["--config", "configs/ci.yaml", "optim.lrr=1e-3"])
    err = capsys.readouterr().err
    assert "unknown config key `optim.lrr`; did you mean `optim.lr`?" in err
    with pytest.raises(SystemExit):
        train.main(["--config", "configs/ci.yaml", "model.fpt_plus.layers=[3, 9]"])
    assert "model.fpt_plus.layers" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        train.main(["--config", "configs/ci.yaml", "optim.epochs=-1"])
    assert info.value.code == 2 and "optim.epochs=-1 must be >= 1" in capsys.readouterr().err


def test_data_root_means_real_data(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        train.main(["--data-root", str(tmp_path), "--print-config"])
    assert info.value.code == 0
    printed = capsys.readouterr().out
    assert f"root: {tmp_path}" in printed and "synthetic: false" in printed


def test_truncated_test_image_fails_before_any_run_folder(ci_root: Path, tmp_path: Path) -> None:
    """side_only reads images (no preload): a corrupt test image used to surface only after all training."""
    from common.datasets import DataVerificationError

    shutil.copytree(ci_root / "data", tmp_path / "data")
    bad = sorted((tmp_path / "data" / "test").rglob("*.png"))[-1]
    bad.write_bytes(bad.read_bytes()[:300])
    with pytest.raises(DataVerificationError, match=bad.name):
        train.main(_args(tmp_path, "model.method=side_only"))
    assert not list((tmp_path / "runs").rglob("*.pt")) and not (tmp_path / "runs" / "fpt_plus").exists()


def test_unwritable_runs_root_fails_before_the_data_work(tmp_path: Path) -> None:
    from common.rundir import RunFolderError

    (tmp_path / "a_file").write_text("")
    with pytest.raises(RunFolderError, match="runs_root"):
        train.main(["--config", "configs/ci.yaml", f"data.root={tmp_path / 'data'}",
                    f"runs_root={tmp_path / 'a_file' / 'runs'}"])
    assert not (tmp_path / "data").exists()  # nothing was generated


def test_reproduce_writes_comparison(ci_root: Path, tmp_path: Path) -> None:
    out = reproduce.main(["--config", "configs/ci.yaml", "--only", "fpt_plus,side_only,full_finetune",
                          "optim.lpm_epochs=1", "--seeds", "1", "--out", str(tmp_path / "runs"),
                          "runtime.progress=false",
                          f"data.root={ci_root / 'data'}", f"data.preload_dir={tmp_path / 'cache'}", "optim.epochs=1"])
    assert out.parent == tmp_path / "runs" / "fpt_plus" / "reproduce"
    assert (out / "config.yaml").is_file() and (out / "env.json").is_file()
    table = pd.read_csv(out / "comparison.csv")
    assert table["method"].tolist() == ["fpt_plus", "side_only", "full_finetune"]
    assert table["seeds"].tolist() == [1, 1, 1] and table["epochs"].tolist() == [1, 1, 1]
    for col in ("auc", "qwk", "kappa", "learnable_percent", "learnable_percent_official", "peak_mib", "step_time_s"):
        assert col in table.columns
    assert table.loc[0, "learnable_percent_vitb"] == pytest.approx(1.0266, abs=1e-3)
    assert table.loc[0, "peak_mib"] < table.loc[2, "peak_mib"]  # FPT+ from cache vs full fine-tuning
    assert (out / "comparison.md").is_file() and (out / "figures" / "roc_curves.png").is_file()
    sub_runs = sorted(p.name for p in (tmp_path / "runs" / "fpt_plus").iterdir())
    assert sub_runs == ["reproduce", "reproduce-fpt_plus-s0", "reproduce-full_finetune-s0", "reproduce-side_only-s0"]


@pytest.mark.slow
def test_fpt_plus_beats_side_only_on_fine_grained_task(tmp_path: Path) -> None:
    """The shipped generator (default texture, disc radius and five grades; fewer images) and the default LPM
    geometry, pre-trained briefly on the texture source domain (60 steps; a random LPM reaches only about 0.57 here):
    same data, seed and epochs. The low-resolution side image carries no grade information (tests/test_data.py), so
    side-only must stay near chance, while the LPM's high-resolution keys/values, reaching the side network only
    through the fine-grained prompts, carry the texture. Margin: 100 test images give a macro-AUC standard error of
    about 0.03; 0.62 is 4 of them above 0.5."""
    from common.config import load_config
    from fpt_plus.pretraining import pretrain
    from fpt_plus.settings import Config, PretrainConfig

    torch.set_num_threads(1)
    weights = tmp_path / "lpm.safetensors"
    pretrain(PretrainConfig(steps=60, batch_size=16, warmup_steps=6),
             load_config(Config, train.PROJECT_DIR / "configs" / "default.yaml", []).model.lpm, weights)
    common_args = [f"data.root={tmp_path / 'data'}", f"runs_root={tmp_path / 'runs'}", f"model.pretrained={weights}",
                   "data.synth.num_train=200", "data.synth.num_val=50", "data.synth.num_test=100",
                   "optim.epochs=15", "runtime.threads=1", "runtime.lpm_threads=1", "runtime.progress=false"]
    fpt_plus = train.main(["model.method=fpt_plus", *common_args])
    side_only = train.main(["model.method=side_only", *common_args])
    assert fpt_plus["test_best"]["auc"] > 0.62, fpt_plus["test_best"]["auc"]
    assert fpt_plus["test_best"]["auc"] > side_only["test_best"]["auc"] + 0.1
    assert side_only["test_best"]["auc"] < 0.62
