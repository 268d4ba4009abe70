"""Shared fixtures: one tiny synthetic ISIC-layout data set per test session (written under a tmp folder)."""

import pytest


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    from spmix.synth import generate

    return generate(tmp_path_factory.mktemp("isic_synth"), train=120, val_per_class=2, test_per_class=3, seed=3)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models run fastest single-threaded (and the CI machine is shared); restored after each test."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
