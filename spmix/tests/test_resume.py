"""Exact resume: a run killed after epoch k and resumed with ``--resume auto`` writes the same epoch k+1 row of
metrics.csv as an uninterrupted run (data order, class-balanced draws, augmentation, mixing draws, schedule)."""

import pandas as pd
import pytest

import spmix.train as train_module


class KilledError(Exception):
    """Stands in for a kill right after the epoch-1 checkpoint was written."""


def test_killed_and_resumed_run_matches_uninterrupted_run(tmp_path, ci_data, monkeypatch):
    common = ["--config", "configs/ci.yaml", f"data.root={ci_data}", "method=spmix", "optim.epochs=2"]
    full = train_module.main([*common, f"runs_root={tmp_path / 'a'}"])
    uninterrupted = pd.read_csv(full["run_dir"] / "metrics.csv")

    save = train_module.save_checkpoint

    def save_then_die(path, **kw):
        save(path, **kw)
        if path.name == "last.pt" and kw["epoch"] == 1:
            raise KilledError

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_die)
    with pytest.raises(KilledError):
        train_module.main([*common, f"runs_root={tmp_path / 'b'}"])
    monkeypatch.setattr(train_module, "save_checkpoint", save)
    resumed = train_module.main(["--resume", "auto", *common, f"runs_root={tmp_path / 'b'}"])
    rows = pd.read_csv(resumed["run_dir"] / "metrics.csv")
    assert rows["epoch"].tolist() == [1, 2]
    pd.testing.assert_frame_equal(rows, uninterrupted, check_exact=True)
    assert resumed["test"] == full["test"]
