"""Shared fixtures: the tiny three-site synthetic set of configs/ci.yaml, generated once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from common.config import load_config
from fedlppa.settings import Config
from fedlppa.synth import ensure_synthetic

PROJECT = Path(__file__).resolve().parent.parent
# one intra-op thread, as every client step uses: on a busy 2-core machine two OpenMP threads spin-wait
torch.set_num_threads(1)


def ci_config(tmp: Path, *overrides: str) -> Config:
    return load_config(Config, PROJECT / "configs" / "ci.yaml",
                       [f"data.root={tmp / 'data'}", f"runs_root={tmp / 'runs'}", *overrides])


@pytest.fixture(scope="session")
def make_cfg():
    """``make_cfg(tmp, *overrides)``: configs/ci.yaml with data and runs under ``tmp``."""
    return ci_config


@pytest.fixture(scope="session")
def ci_data(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("fedlppa")
    cfg = ci_config(tmp)
    ensure_synthetic(tmp / "data", cfg.data.synth)
    return tmp
