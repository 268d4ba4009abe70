"""bench.py: the optimised LPM path equals the eager reference, and the memory proxy orders the methods."""

from __future__ import annotations

from pathlib import Path

import torch

import fpt_plus.bench as bench
from fpt_plus.models.lpm import FrozenLPM
from fpt_plus.settings import LPMConfig

CI = str(Path(__file__).resolve().parent.parent / "configs" / "ci.yaml")


def test_optimised_lpm_equals_eager_reference() -> None:
    torch.manual_seed(0)
    cfg = LPMConfig(name="vit_tiny_patch16_384", img_size=32, pretrain_img_size=32, patch_size=8, embed_dim=48,
                    depth=4, num_heads=3, attn_chunk=3)
    lpm = FrozenLPM(cfg, [1, 2], token_ratio=0.4).double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    keys, values = lpm(x)
    ref_keys, ref_values = bench._eager_lpm_forward(lpm, x)
    torch.testing.assert_close(keys, ref_keys)
    torch.testing.assert_close(values, ref_values)


def test_training_step_memory_proxy_orders_methods() -> None:
    bench._GEOMETRY["config"] = CI
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: avoid OpenMP oversubscription on shared CPUs
    try:
        full = bench.measure_step("full_finetune", 64, 2, torch.device("cpu"), repeats=1)
        fpt_plus = bench.measure_step("fpt_plus", 64, 2, torch.device("cpu"), repeats=1)
        online = bench.measure_step("fpt_plus_online", 64, 2, torch.device("cpu"), repeats=1)
    finally:
        bench._GEOMETRY["config"] = None
        torch.set_num_threads(threads)
    assert fpt_plus["saved_for_backward_mib"] < 0.2 * full["saved_for_backward_mib"]
    assert online["saved_for_backward_mib"] == fpt_plus["saved_for_backward_mib"]  # the LPM saves nothing
    assert full["learnable_percent"] == 100.0
