"""reproduce.py rows: every row is a valid config, and the FedALA baseline uses the same ALA rule as our FedLPPA
row (so the two rows differ only in the network and its losses)."""

from __future__ import annotations

from fedlppa.reproduce import EXTRA_ROWS, MULTI_SEED, ROWS, row_overrides


def test_every_row_is_a_valid_config(tmp_path, make_cfg):
    methods = {make_cfg(tmp_path, *row_overrides(row)).federation.method for row in [*ROWS, *EXTRA_ROWS]}
    assert {"fedlppa", "fedavg", "local", "fedala", "centralized_full"} <= methods


def test_fedala_row_uses_our_ala_rule(tmp_path, make_cfg):
    ours = make_cfg(tmp_path, *row_overrides("fedlppa_ala_global_local_bn"))
    fedala = make_cfg(tmp_path, *row_overrides("fedala"))
    assert fedala.federation.method == "fedala" and ours.federation.method == "fedlppa"
    assert fedala.ala == ours.ala
    assert ours.ala.init == "global" and ours.ala.persist_weights
    assert fedala.federation.bn_stats == ours.federation.bn_stats == "local"
    assert "fedlppa_ala_global_local_bn" in MULTI_SEED


def test_ala_settings_come_from_the_development_set(tmp_path, make_cfg):
    """The reported FedLPPA row's ALA settings are a candidate of select_ala.py, which runs on a set that shares
    the reported set's styles, labels and counts but not its images (another generator seed) nor its seeds."""
    from common.config import load_config
    from fedlppa.reproduce import ALA_CHOICE, CHOSEN_ALA, SEEDS, TENSOR_ALA
    from fedlppa.select_ala import CANDIDATES, DEV_CONFIG, PROJECT_DIR
    from fedlppa.settings import Config

    assert ALA_CHOICE in CANDIDATES and CHOSEN_ALA and TENSOR_ALA
    assert set(CHOSEN_ALA) <= set(CANDIDATES[ALA_CHOICE])
    ours = make_cfg(tmp_path, *row_overrides("fedlppa_ala_global_local_bn"))
    chosen = make_cfg(tmp_path, *CANDIDATES[ALA_CHOICE])
    assert ours.ala == chosen.ala and ours.federation.bn_stats == chosen.federation.bn_stats
    for name in CANDIDATES:
        assert make_cfg(tmp_path, *CANDIDATES[name]).federation.method == "fedlppa"
    dev = load_config(Config, PROJECT_DIR / DEV_CONFIG)
    reported = load_config(Config, PROJECT_DIR / "configs" / "default.yaml")
    assert dev.data.root != reported.data.root and dev.data.synth.seed != reported.data.synth.seed
    assert dev.seed not in SEEDS
    for key in ("styles", "sparsity", "train_counts", "test_count", "size", "kind"):
        assert getattr(dev.data.synth, key) == getattr(reported.data.synth, key)
    assert dev.model == reported.model and dev.federation == reported.federation and dev.optim == reported.optim


def test_select_ala_runs_and_picks_the_best(tmp_path):
    import pandas as pd

    from fedlppa.select_ala import PROJECT_DIR, best, main

    assert best([{"method": "x", "dice": 0.5}, {"method": "y", "dice": 0.7}, {"method": "z", "dice": 0.7}]) == "y"
    choice = main(["--config", str(PROJECT_DIR / "configs" / "ci.yaml"), "--only",
                   "tensor_global_eta30,element_global_eta1", f"data.root={tmp_path / 'data'}",
                   f"runs_root={tmp_path / 'runs'}"])
    table = pd.read_csv(next((tmp_path / "runs" / "fedlppa" / "select_ala").glob("*/comparison.csv")))
    assert list(table["method"]) == ["tensor_global_eta30", "element_global_eta1"]
    assert choice == table.loc[table["dice"].idxmax(), "method"]
    assert (table["cpu_s"] > 0).all() and table["dice"].between(0, 1).all()
