"""aslseg tests run with one torch thread (restored afterwards): the models are small, and on a shared 2-core
machine thread oversubscription makes every step several times slower."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
