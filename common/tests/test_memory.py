import numpy as np

from common.memory import peak_memory_mb, reset_peak_memory


def test_cpu_peak_rises_with_an_allocation_after_a_reset():
    reset_peak_memory("cpu")
    before = peak_memory_mb("cpu")
    block = np.ones(64 * 2**20 // 8)  # 64 MiB touched
    after = peak_memory_mb("cpu")
    assert block.sum() > 0
    assert after - before > 40
