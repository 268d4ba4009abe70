"""Smoke and behaviour tests: train.py on configs/ci.yaml, --resume auto, eval/predict, config errors, reproduce,
and FPT+ beating the side-network-only baseline on the synthetic fine-grained task."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from fpt_plus import eval as fpt_eval
from fpt_plus import reproduce, train


def _args(root: Path, *extra: str) -> list[str]:
    return ["--config", "configs/ci.yaml", f"data.root={root / 'data'}", f"runs.root={root / 'runs'}",
            "runtime.num_threads=1", *extra]


def test_train_resume_eval_predict(ci_root: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    result = train.main(_args(ci_root, f"runs.root={runs}", f"data.preload_dir={tmp_path / 'cache'}"))
    run_dir = Path(result["run_dir"])
    for name in ("config.yaml", "env.json", "metrics.csv", "checkpoints/last.pt", "checkpoints/best.pt",
                 "eval/summary.csv", "eval/per_case.csv", "figures/roc_best.png", "figures/training_curves.png"):
        assert (run_dir / name).is_file(), name
    assert result["learnable"] > 0 and 0 <= result["test_best"]["auc"] <= 1
    assert len(pd.read_csv(run_dir / "metrics.csv")) == 2
    summary = pd.read_csv(run_dir / "eval" / "summary.csv")
    assert set(summary["checkpoint"]) == {"best", "final"}

    resumed = train.main(_args(ci_root, f"runs.root={runs}", f"data.preload_dir={tmp_path / 'cache'}",
                               "train.epochs=3", "--resume", "auto"))
    assert Path(resumed["run_dir"]) == run_dir
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert metrics["step"].tolist() == [1, 2, 3]

    ckpt = run_dir / "checkpoints" / "best.pt"
    scores = fpt_eval.main(["--config", "configs/ci.yaml", "--checkpoint", str(ckpt), f"data.root={ci_root / 'data'}",
                            f"runs.root={runs}"])
    assert 0 <= scores["auc"] <= 1
    out = fpt_eval.main(["--config", "configs/ci.yaml", "--checkpoint", str(ckpt),
                         "--predict", str(ci_root / "data" / "test" / "1_mild"), "--out", str(tmp_path / "p.csv"),
                         f"data.root={ci_root / 'data'}"])
    preds = pd.read_csv(out)
    assert len(preds) == 2 and {"image", "pred", "pred_class", "prob_0_none"} <= set(preds.columns)


def test_unknown_config_key_is_a_clear_cli_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        train.main(["--config", "configs/ci.yaml", "train.learning_rate=1e-3"])
    err = capsys.readouterr().err
    assert "unknown config key `train.learning_rate`" in err and "lr" in err
    with pytest.raises(SystemExit):
        train.main(["--config", "configs/ci.yaml", "model.fpt_plus.layers=[3, 9]"])
    assert "model.fpt_plus.layers" in capsys.readouterr().err


def test_reproduce_writes_comparison(ci_root: Path, tmp_path: Path) -> None:
    out = reproduce.main(["--config", "configs/ci.yaml", "--methods", "fpt_plus", "side_only", "full_finetune",
                          "--lpm-epochs", "1", "--runs-root", str(tmp_path / "runs"),
                          f"data.root={ci_root / 'data'}", f"data.preload_dir={tmp_path / 'cache'}", "train.epochs=1"])
    table = pd.read_csv(out / "comparison.csv")
    assert table["method"].tolist() == ["fpt_plus", "side_only", "full_finetune"]
    for col in ("auc", "learnable_percent", "learnable_percent_official", "peak_mib", "step_time_s"):
        assert col in table.columns
    assert table.loc[0, "learnable_percent_vitb"] == pytest.approx(1.0266, abs=1e-3)
    assert table.loc[0, "peak_mib"] < table.loc[2, "peak_mib"]  # FPT+ from cache vs full fine-tuning
    assert (out / "comparison.md").is_file() and (out / "figures" / "roc_curves.png").is_file()


@pytest.mark.slow
def test_fpt_plus_beats_side_only_on_fine_grained_task(tmp_path: Path) -> None:
    """Same data, seeds and epochs: the LPM's high-resolution view, reaching the side network only through the
    fine-grained prompts, carries the 2-pixel texture that the 16^2 side image cannot see."""
    common_args = [f"data.root={tmp_path / 'data'}", f"runs.root={tmp_path / 'runs'}", "data.synth.num_grades=3",
                   "data.synth.num_train=150", "data.synth.num_val=50", "data.synth.num_test=100",
                   "data.synth.lesion_radius=[5, 7]", "data.synth.decoy_radius=[5, 7]",
                   "data.synth.texture_amplitude=[0.08, 0.12]", "train.epochs=15", "train.batch_size=16",
                   "runtime.num_threads=1", "data.cache_images=true"]
    fpt_plus = train.main(["--config", "configs/ci.yaml", "method=fpt_plus", *common_args])
    side_only = train.main(["--config", "configs/ci.yaml", "method=side_only", *common_args])
    assert fpt_plus["test_best"]["auc"] > 0.62
    assert fpt_plus["test_best"]["auc"] > side_only["test_best"]["auc"] + 0.1
