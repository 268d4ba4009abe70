"""bench.py: the optimised LPM path equals the eager reference, and the memory proxy orders the methods."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import fpt_plus.bench as bench
from fpt_plus.models.lpm import FrozenLPM, compiled_lpm
from fpt_plus.settings import LPMConfig

CI = str(Path(__file__).resolve().parent.parent / "configs" / "ci.yaml")


@pytest.mark.parametrize("attention", ["fused", "chunked"])
def test_optimised_lpm_equals_eager_reference(attention: str) -> None:
    torch.manual_seed(0)
    cfg = LPMConfig(name="vit_tiny_patch16_384", img_size=32, pretrain_img_size=32, patch_size=8, embed_dim=48,
                    depth=4, num_heads=3, attn_chunk=3, attention=attention)
    lpm = FrozenLPM(cfg, [1, 2], token_ratio=0.4).double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    keys, values = lpm(x)
    ref_keys, ref_values = bench._eager_lpm_forward(lpm, x)
    torch.testing.assert_close(keys, ref_keys)
    torch.testing.assert_close(values, ref_values)


def test_untapped_attention_rule() -> None:
    from fpt_plus.models.lpm import untapped_attention

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert untapped_attention("auto", cpu, compiled=True) == "chunked"
    assert untapped_attention("auto", cpu, compiled=False) == "fused"
    assert untapped_attention("auto", cuda, compiled=True) == "fused"
    assert untapped_attention("chunked", cuda, compiled=False) == "chunked"
    with pytest.raises(ValueError, match="model.lpm.attention must be auto, fused or chunked"):
        untapped_attention("flash", cpu, compiled=False)


@pytest.mark.parametrize("mode", ["on", "freeze"])
def test_compiled_lpm_equals_the_module(mode: str) -> None:
    """``model.lpm.compile``: the compiled (and frozen-weight) forward returns the module's keys and values, the
    module keeps its parameters (freezing folds copies into the graph, it does not consume the weights)."""
    torch.manual_seed(0)
    cfg = LPMConfig(name="vit_tiny_patch16_384", img_size=32, pretrain_img_size=32, patch_size=8, embed_dim=48,
                    depth=4, num_heads=3, compile=mode)  # auto attention: chunked untapped block 0 on CPU
    lpm = FrozenLPM(cfg, [1, 2], token_ratio=0.4)
    x = torch.randn(2, 3, 32, 32)
    ref_keys, ref_values = lpm(x)
    keys, values = compiled_lpm(lpm, mode)(x)
    torch.testing.assert_close(keys, ref_keys, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(values, ref_values, rtol=1e-4, atol=1e-5)
    assert sum(p.numel() for p in lpm.parameters()) > 0
    with pytest.raises(ValueError, match="model.lpm.compile must be off, on or freeze"):
        compiled_lpm(lpm, "max-autotune")


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
