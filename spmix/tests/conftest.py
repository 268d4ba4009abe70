"""Shared fixtures: tiny synthetic ISIC-layout data sets, generated once per test session under a tmp folder."""

import shutil

import pytest


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    from spmix.synthetic_set import generate

    return generate(tmp_path_factory.mktemp("isic_synth"), train=120, val_per_class=2, test_per_class=3, seed=3)


@pytest.fixture(scope="session")
def ci_data(tmp_path_factory):
    """The synthetic set of configs/ci.yaml (same parameters), made by the generator itself: training tests pass
    ``data.root=<it>`` and reuse it (its stamp matches), so it is generated once."""
    from spmix.synthetic_set import ensure_synthetic

    return ensure_synthetic(tmp_path_factory.mktemp("ci") / "data", train=160, val_per_class=2, test_per_class=3)


@pytest.fixture
def real_copy(ci_data, tmp_path):
    """A copy of the ci set without the generator's stamp or derived files: to the code it is a user's real
    ISIC 2018 folder (only ever read)."""
    root = tmp_path / "isic2018"
    shutil.copytree(ci_data, root, ignore=shutil.ignore_patterns("splits", "saliency", ".synthetic-stamp.json"))
    return root


@pytest.fixture
def snapshot():
    """``snapshot(root)``: every path below ``root`` with size and modification time (to show nothing was written)."""
    def take(root):
        return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}
    return take


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models run fastest single-threaded (and the CI machine is shared); restored after each test."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
