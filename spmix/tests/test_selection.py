"""Checkpoint selection: ties of the validation metric are broken by macro AUC, then loss, then the later epoch;
the final weights are evaluated on the test subset as well as ``best.pt``."""

import pandas as pd
import torch

from spmix.train import is_better, selection_key


def _val(bacc, auc, loss):
    return {"balanced_accuracy": bacc, "auc": auc, "loss": loss}


def test_ties_are_broken_by_auc_then_loss_then_later_epoch():
    first = selection_key(_val(1 / 7, 0.60, 1.9), "balanced_accuracy", 1)
    assert is_better(first, None)
    assert is_better(selection_key(_val(1 / 7, 0.61, 2.5), "balanced_accuracy", 2), first)      # higher AUC
    assert not is_better(selection_key(_val(1 / 7, 0.59, 0.1), "balanced_accuracy", 2), first)  # lower AUC
    assert is_better(selection_key(_val(1 / 7, 0.60, 1.8), "balanced_accuracy", 2), first)      # lower loss
    assert not is_better(selection_key(_val(1 / 7, 0.60, 2.0), "balanced_accuracy", 2), first)  # higher loss
    assert is_better(selection_key(_val(1 / 7, 0.60, 1.9), "balanced_accuracy", 2), first)      # full tie: later
    assert not is_better(selection_key(_val(0.14, 0.99, 0.0), "balanced_accuracy", 2), first)   # metric first
    assert is_better(selection_key(_val(1 / 7, 0.60, 1.9), "balanced_accuracy", 2),
                     selection_key(_val(1 / 7, float("nan"), 1.9), "balanced_accuracy", 1))  # NaN AUC loses


def test_flat_validation_score_keeps_the_later_checkpoint(tmp_path, ci_data, monkeypatch):
    """A model whose validation metrics never change (e.g. the head class everywhere) must not be frozen at epoch 1."""
    import spmix.train as train

    real = train.evaluate

    def flat(*args, **kwargs):
        result = real(*args, **kwargs)
        result.metrics.update(balanced_accuracy=1 / 7, auc=0.5, loss=1.9)
        return result

    monkeypatch.setattr(train, "evaluate", flat)
    out = train.main(["--config", "configs/ci.yaml", f"data.root={ci_data}", f"runs_root={tmp_path / 'runs'}",
                      "method=ce", "optim.epochs=3"])
    best = torch.load(out["run_dir"] / "checkpoints" / "best.pt", weights_only=True)
    assert best["epoch"] == 3
    summary = pd.read_csv(out["run_dir"] / "eval" / "summary.csv")
    final = pd.read_csv(out["run_dir"] / "eval" / "final_summary.csv")
    assert summary["checkpoint"].iloc[0] == "best" and final["checkpoint"].iloc[0] == "final"
    assert out["test"]["epoch"] == 3 and out["test_final"]["epoch"] == 3


def test_best_and_final_checkpoints_are_both_reported(tmp_path, ci_data):
    """A real run: best.pt holds the epoch its key says, and the final weights have their own test row."""
    import spmix.train as train

    out = train.main(["--config", "configs/ci.yaml", f"data.root={ci_data}", f"runs_root={tmp_path / 'runs'}",
                      "method=ce", "optim.epochs=3"])
    best = torch.load(out["run_dir"] / "checkpoints" / "best.pt", weights_only=True)
    last = torch.load(out["run_dir"] / "checkpoints" / "last.pt", weights_only=True)
    assert best["extra"]["best_key"] == last["extra"]["best_key"] and best["extra"]["best_key"][3] == best["epoch"]
    metrics = pd.read_csv(out["run_dir"] / "metrics.csv")
    keys = [selection_key({k[4:]: v for k, v in row.items() if k.startswith("val_")}, "balanced_accuracy",
                          int(row["epoch"])) for _, row in metrics.iterrows()]
    assert max(keys)[3] == best["epoch"]
    assert set(out["test_final"]) >= {"balanced_accuracy", "tail_recall", "head_recall", "f1_macro", "epoch"}
