"""reproduce.py rows: every row is a valid config, and the FedALA baseline uses the same ALA rule as our FedLPPA
row (so the two rows differ only in the network and its losses)."""

from __future__ import annotations

from fedlppa.reproduce import EXTRA_ROWS, MULTI_SEED, ROWS, row_overrides


def test_every_row_is_a_valid_config(tmp_path, make_cfg):
    methods = {make_cfg(tmp_path, *row_overrides(row)).federation.method for row in [*ROWS, *EXTRA_ROWS]}
    assert {"fedlppa", "fedavg", "local", "fedala", "centralized_full"} <= methods


def test_fedala_row_uses_our_ala_rule(tmp_path, make_cfg):
    ours = make_cfg(tmp_path, *row_overrides("fedlppa_ala_tensor_local_bn"))
    fedala = make_cfg(tmp_path, *row_overrides("fedala"))
    assert fedala.federation.method == "fedala" and ours.federation.method == "fedlppa"
    assert fedala.ala == ours.ala
    assert ours.ala.granularity == "tensor" and ours.ala.init == "global" and ours.ala.persist_weights
    assert fedala.federation.bn_stats == ours.federation.bn_stats == "local"
    assert "fedlppa_ala_tensor_local_bn" in MULTI_SEED
