"""Shared fixtures: one tiny synthetic set of all six trees (written once per session) and a CI config."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from common.config import load_config
from joinedtrans.settings import Config, SynthConfig
from joinedtrans.synth import ensure_synthetic

PROJECT_DIR = Path(__file__).resolve().parents[1]
TINY = SynthConfig(n_train=6, n_val=2, n_test=4, train_size=(160, 152), test_size=(152, 152), n_gamma=10, n_palm=5,
                   n_drive=4, n_chase=2, n_hrf=3, vessel_size=96)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    pytest.importorskip("openpyxl", reason="the fovea tables are .xlsx: install the joinedtrans extra (openpyxl)")
    root = tmp_path_factory.mktemp("jt") / "data"
    return ensure_synthetic(root, TINY)


@pytest.fixture
def tree(synth_root, tmp_path) -> Path:
    """A private, writable copy of the synthetic trees (for tests that break files)."""
    dst = tmp_path / "data"
    shutil.copytree(synth_root, dst)
    (dst / ".synthetic-stamp.json").unlink()
    return dst


@pytest.fixture(scope="session")
def tiny() -> SynthConfig:
    return TINY


@pytest.fixture
def ci_config():
    """``ci_config(runs_root, data_root, *overrides)`` -> the CI config on real-data terms (no generation)."""
    def make(runs_root: Path, data_root: Path, *overrides: str) -> Config:
        return load_config(Config, PROJECT_DIR / "configs" / "ci.yaml",
                           [f"runs_root={runs_root}", f"data.root={data_root}", "data.synthetic=false", *overrides])
    return make
