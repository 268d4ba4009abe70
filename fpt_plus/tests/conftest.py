"""Shared fixtures: a tiny config and a tiny synthetic dataset written once per session under tmp."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config import load_config
from fpt_plus.settings import ExperimentConfig

PROJECT = Path(__file__).resolve().parent.parent


def ci_config(tmp: Path, *overrides: str) -> ExperimentConfig:
    return load_config(ExperimentConfig, PROJECT / "configs" / "ci.yaml",
                       [f"data.root={tmp / 'data'}", f"runs.root={tmp / 'runs'}", *overrides])


@pytest.fixture(scope="session")
def ci_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tmp folder whose ``data/`` holds the ci synthetic dataset (generated once)."""
    from fpt_plus.synth import ensure_dataset

    tmp = tmp_path_factory.mktemp("fpt_ci")
    cfg = ci_config(tmp)
    ensure_dataset(tmp / "data", cfg.data.synth)
    return tmp


@pytest.fixture(scope="session")
def make_cfg():
    """``make_cfg(tmp, *overrides)`` -> the ci config with data/runs under ``tmp``."""
    return ci_config
