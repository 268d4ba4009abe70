"""Smoke and behaviour tests of train.py / eval.py on the synthetic set (CONVENTIONS: smoke, resume, behaviour)."""

import pandas as pd
import pytest
import yaml

from spmix.train import main as train_main


def _args(tmp_path, *extra):
    return ["--config", "configs/ci.yaml", f"data.root={tmp_path / 'data'}", f"runs_root={tmp_path / 'runs'}",
            *extra]


def test_train_ci_then_resume_and_eval(tmp_path):
    out = train_main(_args(tmp_path, "saliency.method=fine_grained"))
    run = out["run_dir"]
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    # the configured saliency method is the one that ran (fails when cv2.saliency is shadowed)
    assert cfg["saliency"]["method"] == "fine_grained" and cfg["saliency"]["resolved"] == "fine_grained"
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "checkpoints" / "best.pt").is_file()
    summary = pd.read_csv(run / "eval" / "summary.csv")
    assert {"balanced_accuracy", "f1_macro", "tail_recall", "recall_DF"} <= set(summary.columns)
    assert len(pd.read_csv(run / "metrics.csv")) == 2

    resumed = train_main(_args(tmp_path, "saliency.method=fine_grained", "optim.epochs=3", "--resume", "auto"))
    assert resumed["run_dir"] == run
    assert pd.read_csv(run / "metrics.csv")["epoch"].tolist() == [1, 2, 3]

    from spmix.eval import main as eval_main

    preds = eval_main(["--config", "configs/ci.yaml", f"data.root={tmp_path / 'data'}",
                       f"runs_root={tmp_path / 'runs'}", "--predict",
                       str(tmp_path / "data" / "ISIC2018_Task3_Test_Input"), "--out", str(tmp_path / "p.csv")])
    assert list(preds.columns) == ["image", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    assert len(preds) == 21 and (preds.iloc[:, 1:].sum(axis=1) - 1).abs().max() < 1e-4
    metrics = eval_main(["--config", "configs/ci.yaml", f"data.root={tmp_path / 'data'}",
                         f"runs_root={tmp_path / 'runs'}", "--out", str(tmp_path / "ev")])
    assert 0.0 <= metrics["balanced_accuracy"] <= 1.0 and (tmp_path / "ev" / "per_case.csv").is_file()


def test_spectral_residual_is_recorded(tmp_path):
    out = train_main(_args(tmp_path, "saliency.method=spectral_residual", "optim.epochs=1", "method=saliencymix"))
    cfg = yaml.safe_load((out["run_dir"] / "config.yaml").read_text())
    assert cfg["saliency"]["resolved"] == "spectral_residual"
    with pytest.raises(RuntimeError, match="computed with spectral_residual"):  # stale maps of another method
        train_main(_args(tmp_path, "saliency.method=fine_grained", "optim.epochs=1"))


@pytest.mark.parametrize("method,extra", [("cmo", []), ("mixup", []), ("reweighting", []),
                                          ("spmix", ["loss.name=paco", "spmix.dominant=instance"]),
                                          ("spmix", ["model.backbone=tiny_resnet"])])
def test_every_method_runs_one_epoch(tmp_path, method, extra):
    out = train_main(_args(tmp_path, f"method={method}", "optim.epochs=1", *extra))
    assert 0.0 <= out["test"]["balanced_accuracy"] <= 1.0


def test_bad_config_key_and_value(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train_main(_args(tmp_path, "optim.lrr=1"))
    assert "optim.lr" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_main(_args(tmp_path, "method=remix"))
    assert "method" in capsys.readouterr().err


def test_reproduce_writes_comparison_and_figure(tmp_path):
    from spmix.reproduce import main as reproduce_main

    out = reproduce_main(["--config", "configs/ci.yaml", "--data-root", str(tmp_path / "data"), "--seeds", "1",
                          "--jobs", "1", "--rows", "spmix", "ce", "--out", str(tmp_path / "cmp"),
                          f"runs_root={tmp_path / 'runs'}", "optim.epochs=1"])
    table = pd.read_csv(out / "comparison.csv")
    assert table["method"].tolist() == ["spmix", "ce"]
    assert list(table.columns[:3]) == ["method", "balanced_accuracy", "balanced_accuracy_std"]
    assert {"f1_macro", "tail_recall", "tail_recall_std"} <= set(table.columns)
    assert (out / "figures" / "spmix_mixed_samples.png").stat().st_size > 1000
    assert "spmix_mixed_samples.png" in (out / "comparison.md").read_text()
