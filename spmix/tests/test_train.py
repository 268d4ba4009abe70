"""Smoke tests of train.py / eval.py / reproduce.py on the synthetic set (CONVENTIONS: smoke, resume, every method)."""

import pandas as pd
import pytest
import yaml

from spmix.train import main as train_main


def _args(tmp_path, data, *extra):
    return ["--config", "configs/ci.yaml", f"data.root={data}", f"runs_root={tmp_path / 'runs'}", *extra]


def test_train_ci_then_resume_and_eval(tmp_path, ci_data, capsys):
    out = train_main(_args(tmp_path, ci_data, "saliency.method=fine_grained"))
    run = out["run_dir"]
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    # the configured saliency method is the one that ran (fails when cv2.saliency is shadowed)
    assert cfg["saliency"]["method"] == "fine_grained" and cfg["saliency"]["resolved"] == "fine_grained"
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "checkpoints" / "best.pt").is_file()
    summary = pd.read_csv(run / "eval" / "summary.csv")
    assert {"balanced_accuracy", "f1_macro", "tail_recall", "recall_DF"} <= set(summary.columns)
    assert len(pd.read_csv(run / "eval" / "per_case.csv")) == 21
    assert (run / "figures" / "confusion_test.png").is_file() and (run / "figures" / "roc_test.png").is_file()
    assert len(pd.read_csv(run / "metrics.csv")) == 2
    assert list((run / "tb").glob("events.*"))

    resumed = train_main(_args(tmp_path, ci_data, "saliency.method=fine_grained", "optim.epochs=3", "--resume",
                               "auto"))
    assert resumed["run_dir"] == run and f"resuming {run}" in capsys.readouterr().out
    assert pd.read_csv(run / "metrics.csv")["epoch"].tolist() == [1, 2, 3]

    from spmix.eval import main as eval_main

    preds = eval_main(["--checkpoint", str(run / "checkpoints" / "best.pt"), "--predict",
                       str(ci_data / "ISIC2018_Task3_Test_Input"), "--out", str(tmp_path / "p")])
    assert list(preds.columns) == ["image", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    assert len(preds) == 21 and (preds.iloc[:, 1:].sum(axis=1) - 1).abs().max() < 1e-4
    assert (tmp_path / "p" / "predictions.csv").is_file()
    metrics = eval_main(["--out", str(tmp_path / "ev"), "experiment=ci", f"runs_root={tmp_path / 'runs'}"])
    # --checkpoint auto: newest best.pt of experiment ci, its stored config (the same data root)
    assert 0.0 <= metrics["balanced_accuracy"] <= 1.0 and (tmp_path / "ev" / "per_case.csv").is_file()
    assert pd.read_csv(tmp_path / "ev" / "summary.csv")["balanced_accuracy"].iloc[0] == pytest.approx(
        metrics["balanced_accuracy"])


def test_resume_auto_with_nothing_to_resume_says_so(tmp_path, ci_data, capsys):
    train_main(_args(tmp_path, ci_data, "method=ce", "optim.epochs=1", "--resume", "auto"))
    assert "no last.pt" in capsys.readouterr().out


def test_spectral_residual_is_recorded(tmp_path, ci_data):
    sal = f"saliency.root={tmp_path / 'sal'}"
    out = train_main(_args(tmp_path, ci_data, "saliency.method=spectral_residual", sal, "optim.epochs=1",
                           "method=saliencymix"))
    cfg = yaml.safe_load((out["run_dir"] / "config.yaml").read_text())
    assert cfg["saliency"]["resolved"] == "spectral_residual"
    with pytest.raises(RuntimeError, match="computed with spectral_residual"):  # stale maps of another method
        train_main(_args(tmp_path, ci_data, "saliency.method=fine_grained", sal, "optim.epochs=1"))


@pytest.mark.parametrize("method,extra", [("cmo", []), ("mixup", []), ("reweighting", []), ("resampling", []),
                                          ("resampling_cutmix", []),
                                          ("spmix", ["loss.name=paco", "spmix.dominant=instance"]),
                                          ("spmix", ["model.backbone=tiny_resnet"])])
def test_every_method_runs_one_epoch(tmp_path, ci_data, method, extra):
    out = train_main(_args(tmp_path, ci_data, f"method={method}", "optim.epochs=1", *extra))
    assert 0.0 <= out["test"]["balanced_accuracy"] <= 1.0


def test_reproduce_on_real_data_writes_comparison_and_leaves_the_data_untouched(tmp_path, real_copy, snapshot):
    """`make reproduce-spmix DATA=<real folder>`: --data-root means real data, so nothing is generated into it."""
    from spmix.reproduce import main as reproduce_main

    before = snapshot(real_copy)
    out = reproduce_main(["--config", "configs/ci.yaml", "--data-root", str(real_copy), "--seeds", "1", "--jobs",
                          "1", "--only", "spmix,ce", "--out", str(tmp_path / "runs"), "optim.epochs=1",
                          f"data.split_file={tmp_path / 'split.csv'}", f"saliency.root={tmp_path / 'sal'}"])
    assert snapshot(real_copy) == before
    assert out.parent == tmp_path / "runs" / "spmix" / "reproduce"
    assert (out / "config.yaml").is_file() and (out / "env.json").is_file()
    table = pd.read_csv(out / "comparison.csv")
    assert table["method"].tolist() == ["spmix", "ce"]
    assert list(table.columns[:3]) == ["method", "balanced_accuracy", "balanced_accuracy_std"]
    assert {"f1_macro", "tail_recall", "tail_recall_std", "head_recall", "seeds", "final_balanced_accuracy",
            "train_tail_recall", "best_epoch"} <= set(table.columns)
    assert table["seeds"].tolist() == [1, 1]
    assert (out / "figures" / "spmix_mixed_samples.png").stat().st_size > 1000
    assert "spmix_mixed_samples.png" in (out / "comparison.md").read_text()
    for row in ("spmix", "ce"):  # one experiment per row and seed, next to the comparison folder
        runs = list((tmp_path / "runs" / "spmix" / f"reproduce-{row}-s0").iterdir())
        assert len(runs) == 1 and (runs[0] / "checkpoints" / "best.pt").is_file()
        assert yaml.safe_load((runs[0] / "config.yaml").read_text())["data"]["synthetic"] is False


def test_reproduce_rows_and_seeds():
    """The default table's rows in order; the rows the claims compare get --seeds seeds, the others one."""
    from types import SimpleNamespace

    from spmix.reproduce import ROWS, row_seeds

    assert list(ROWS) == ["spmix", "ce", "resampling", "reweighting", "balanced_softmax", "mixup", "cutmix",
                          "saliencymix", "cmo", "resampling_mixup", "resampling_cutmix", "spmix_uniform"]
    args = SimpleNamespace(seeds=3, all=False)
    assert [row_seeds(r, args) for r in ROWS] == [3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 3]
    assert {row_seeds(r, SimpleNamespace(seeds=3, all=True)) for r in ROWS} == {3}


def test_reproduce_only_names_unknown_rows(capsys):
    from spmix.reproduce import main as reproduce_main

    with pytest.raises(SystemExit):
        reproduce_main(["--only", "spmix,remix"])
    assert "remix" in capsys.readouterr().err


def test_claim_check_reports_held_missed_and_missing_rows():
    from spmix.reproduce import check_claims

    def row(name, bacc, tail):
        return {"method": name, "balanced_accuracy": bacc, "balanced_accuracy_std": 0.01, "tail_recall": tail,
                "tail_recall_std": 0.02, "seeds": 3}

    lines = check_claims([row("spmix", 0.60, 0.50), row("resampling", 0.56, 0.52)])
    assert lines[0].startswith("spmix >= resampling + 0.03 on balanced_accuracy: held (0.600")
    assert lines[1].startswith("spmix >= resampling + 0.00 on tail_recall: missed (0.500")
    assert lines[2] == "spmix >= spmix_uniform + 0.01 on balanced_accuracy: not measured (row missing)"
    assert "missed" in check_claims([row("spmix", 0.58, 0.5), row("resampling", 0.56, 0.4)])[0]
