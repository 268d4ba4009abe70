"""Shared fixtures: one small synthetic PAM set in the official layout (written once per session)."""

from __future__ import annotations

import pytest

from pamsr.pipeline import register_folder
from pamsr.settings import RegistrationConfig, SynthConfig
from pamsr.synth import write_dataset


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """``raw/``, ``mid_filter/``, ``clean/``, ``shifts.csv`` and the registered ``reg_mid/`` (5 samples, 104 px)."""
    root = tmp_path_factory.mktemp("pamsr_data")
    write_dataset(root, SynthConfig(n_samples=5, size=104, max_shift=3, seed=3))
    register_folder(root, "raw", "reg_mid", RegistrationConfig(max_shift=8), progress=False)
    return root
