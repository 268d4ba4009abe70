"""One intra-op thread per test: on a shared 2-core machine two OpenMP threads spin-wait on tiny tensors (measured
14x slower CUT steps). The previous setting is restored after each test."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
