"""Shared fixtures: a tiny synthetic dataset and one tiny trained model per test session (under tmp paths)."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config import load_config
from octa_iqa.settings import Config

PROJECT = Path(__file__).resolve().parents[1]


def tiny_config(tmp: Path, *overrides: str) -> Config:
    """configs/ci.yaml with runs and data redirected under ``tmp``."""
    return load_config(Config, PROJECT / "configs" / "ci.yaml",
                       [f"runs_root={tmp / 'runs'}", f"data.root={tmp / 'data'}", *overrides])


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """(cfg, run path) of a ci-sized model trained from a random backbone (no self-supervised stage: fast)."""
    from octa_iqa.train import run_training

    tmp = tmp_path_factory.mktemp("octa_trained")
    cfg = tiny_config(tmp, "model.pretrained=none", "optim.epochs=3")
    return cfg, run_training(cfg)


@pytest.fixture
def make_config():
    """``make_config(tmp, *overrides)``: :func:`tiny_config` for tests that build their own runs."""
    return tiny_config
