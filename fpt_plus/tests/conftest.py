"""Shared fixtures: a tiny config and a tiny synthetic dataset written once per session under tmp."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config import load_config
from fpt_plus.settings import Config

PROJECT = Path(__file__).resolve().parent.parent


def ci_config(tmp: Path, *overrides: str) -> Config:
    return load_config(Config, PROJECT / "configs" / "ci.yaml",
                       [f"data.root={tmp / 'data'}", f"runs_root={tmp / 'runs'}", "runtime.progress=false",
                        *overrides])


@pytest.fixture(scope="session")
def ci_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tmp folder whose ``data/`` holds the ci synthetic dataset (generated once)."""
    from fpt_plus.pipeline import synthesize

    tmp = tmp_path_factory.mktemp("fpt_ci")
    synthesize(ci_config(tmp))
    return tmp


@pytest.fixture(scope="session")
def make_cfg():
    """``make_cfg(tmp, *overrides)`` -> the ci config with data/runs under ``tmp``."""
    return ci_config
