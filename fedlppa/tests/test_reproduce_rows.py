"""reproduce.py rows: every row is a valid config, and the FedALA baseline uses the same ALA rule as our FedLPPA
row (so the two rows differ only in the network and its losses)."""

from __future__ import annotations

from pathlib import Path

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


def test_our_row_adds_only_the_chosen_pls_ramp(tmp_path, make_cfg):
    from fedlppa.reproduce import PLS_CHOICE

    ala = make_cfg(tmp_path, *row_overrides("fedlppa_ala_global_local_bn"))
    ours = make_cfg(tmp_path, *row_overrides("fedlppa_ours"))
    assert ours.loss.beta_rampup == PLS_CHOICE > 0 and ala.loss.beta_rampup == 0.0
    assert ours.ala == ala.ala and ours.federation == ala.federation and ours.model == ala.model
    assert {"fedlppa_ours", "fedavg_local_bn", "local", "fedavg"} <= set(MULTI_SEED)


def test_draws_put_each_seed_on_its_own_unused_draw(tmp_path, make_cfg):
    """``--draws``: seed i on generator seed DRAWS[i], never the default draw nor a development draw."""
    import pytest

    from common.config import load_config
    from fedlppa.reproduce import DEVELOPMENT_DRAWS, DRAWS, SEEDS, draw_overrides
    from fedlppa.select_ala import DEV_CONFIG, PROJECT_DIR
    from fedlppa.settings import Config

    cfg = make_cfg(tmp_path)
    cfgs = [make_cfg(tmp_path, *draw_overrides(cfg, seed)) for seed in SEEDS]
    assert [c.data.synth.seed for c in cfgs] == list(DRAWS)
    assert len({c.data.root for c in cfgs} | {cfg.data.root}) == len(SEEDS) + 1
    used = {load_config(Config, PROJECT_DIR / "configs" / "default.yaml").data.synth.seed,
            load_config(Config, PROJECT_DIR / DEV_CONFIG).data.synth.seed, *DEVELOPMENT_DRAWS}
    assert not used & set(DRAWS)
    with pytest.raises(ValueError, match="real dataset"):
        draw_overrides(make_cfg(tmp_path, "data.synthetic=false"), SEEDS[0])
    with pytest.raises(ValueError, match="pairs the seeds"):
        draw_overrides(cfg, 7)


def test_reproduce_with_draws_trains_each_seed_on_its_draw(tmp_path):
    import pandas as pd

    from fedlppa.reproduce import DRAWS, PROJECT_DIR, main

    csv = main(["--config", str(PROJECT_DIR / "configs" / "ci.yaml"), "--draws", "--only", "local", "--seeds", "2",
                f"data.root={tmp_path / 'data'}", f"runs_root={tmp_path / 'runs'}", "runtime.pool=1"])
    for draw in DRAWS[:2]:
        assert (tmp_path / f"data_draw{draw}").is_dir()
    assert not (tmp_path / "data").exists()  # the shared draw is not written when every seed has its own
    table = pd.read_csv(csv)
    assert list(table["method"]) == ["local"] and int(table["seeds"].iloc[0]) == 2
    assert "one draw per seed" in (Path(csv).with_suffix(".md")).read_text()
