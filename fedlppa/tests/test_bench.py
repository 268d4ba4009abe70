"""Communication: bytes of the real Flower messages at the paper's FAZ setting."""

from __future__ import annotations

import pytest

from common.config import load_config
from fedlppa.bench import PAPER, PROJECT_DIR, message_bytes
from fedlppa.settings import Config


@pytest.mark.parametrize("method,tensor_bytes", [("fedavg", 7_265_816), ("fedlppa", 11_608_792)])
def test_message_bytes_paper_setting(method, tensor_bytes):
    cfg = load_config(Config, PROJECT_DIR / "configs" / "default.yaml", [*PAPER, f"federation.method={method}"])
    out = message_bytes(cfg)
    assert out["tensor_bytes"] == tensor_bytes
    # the ArrayRecord adds a small per-array header; downlink = theta_G without aux + the site's aux (+ config)
    assert tensor_bytes < out["up_bytes"] < tensor_bytes * 1.01 and out["up_bytes"] <= out["down_bytes"]
    if method == "fedlppa":
        assert out["official_broadcast_bytes"] == 6 * out["up_bytes"]
