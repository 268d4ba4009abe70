"""Model tests (official modules/builder.py, frozen_vit.py, bridge.py, side_vit.py): parameter counts, token
counts, token selection, fusion at init, layer mapping, freezing, prompt stripping, shapes."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from common.config import from_dict
from fpt_plus.models.factory import build_model, count_learnable, learnable_percent
from fpt_plus.models.fpt import FusionModule
from fpt_plus.models.lpm import (
    FrozenLPM,
    chunked_attention,
    num_selected,
    num_tokens,
    reference_frozen_params,
    select_tokens,
)
from fpt_plus.settings import Config, LPMConfig, ModelConfig


@pytest.mark.parametrize("method,expected,percent", [
    ("fpt_plus", 900_965, 1.03), ("fpt", 1_602_341, 1.81), ("vpt", 151_301, 0.17), ("adapter", 1_792_901, 2.02),
    ("lora", 593_669, 0.68), ("side_only", 751_877, 0.86), ("linear_probe", 3_845, 0.0),
])
def test_learnable_parameters_match_official_architecture(method: str, expected: int, percent: float) -> None:
    cfg = Config(model=ModelConfig(method=method))  # ViT-B/16 at 512, C = 5
    with torch.device("meta"):  # exact counts without allocating or initialising 86 M weights
        model = build_model(cfg.model, 5, preloaded=True)
    assert count_learnable(model) == expected
    assert round(learnable_percent(method, expected, cfg.model.lpm), 2) == percent


def test_official_denominator_and_other_class_counts() -> None:
    lpm = LPMConfig()
    assert reference_frozen_params(lpm) == 86_859_496
    with torch.device("meta"):
        for c, expected in ((2, 900_674), (3, 900_771), (7, 901_159)):
            assert count_learnable(build_model(ModelConfig(), c, preloaded=True)) == expected


def test_full_finetune_trains_everything() -> None:
    with torch.device("meta"):
        model = build_model(ModelConfig(method="full_finetune"), 5, preloaded=False)
    assert all(p.requires_grad for p in model.parameters())
    assert learnable_percent("full_finetune", count_learnable(model), LPMConfig()) == 100.0


@pytest.mark.parametrize("size,n,k", [(384, 577, 115), (512, 1025, 205), (1024, 4097, 819), (2048, 16385, 3277)])
def test_token_counts(size: int, n: int, k: int) -> None:
    assert num_tokens(size, 16) == n
    assert num_selected(size, 16, 0.2) == k


def test_global_selection_picks_known_columns() -> None:
    torch.manual_seed(0)
    b, h, n, d, keep = 2, 3, 20, 4, 5
    attn = torch.rand(b, h, n, n) * 0.1
    wanted = torch.stack([torch.randperm(n)[:keep] for _ in range(b * h)]).view(b, h, keep)
    for bi in range(b):
        for hi in range(h):
            attn[bi, hi, :, wanted[bi, hi]] += torch.arange(keep, 0, -1).float()  # decreasing column means
    attn = attn / attn.sum(-1, keepdim=True)
    k, v = torch.randn(b, h, n, d), torch.randn(b, h, n, d)
    k_sel, v_sel, idx = select_tokens(attn.mean(-2), k, v, keep)
    assert torch.equal(idx, wanted)
    for bi in range(b):
        for hi in range(h):
            assert torch.equal(k_sel[bi, hi], k[bi, hi, wanted[bi, hi]])
            assert torch.equal(v_sel[bi, hi], v[bi, hi, wanted[bi, hi]])


def test_chunked_attention_equals_full_attention() -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 37, 8, dtype=torch.float64) for _ in range(3))
    probs = (q @ k.transpose(-2, -1) / math.sqrt(8)).softmax(-1)
    for chunk in (1, 5, 37, 100):
        out, received = chunked_attention(q, k, v, chunk)
        torch.testing.assert_close(out, probs @ v)
        torch.testing.assert_close(received, probs.mean(-2).float())


def _tiny_lpm_cfg() -> LPMConfig:
    return LPMConfig(name="vit_tiny_patch16_384", img_size=32, pretrain_img_size=32, patch_size=8, embed_dim=48,
                     depth=4, num_heads=3)


def _tiny_cfg(method: str) -> Config:
    lpm = dataclasses.asdict(_tiny_lpm_cfg())
    return from_dict(Config, {"model": {"method": method,
        "lpm": lpm, "fpt_plus": {"layers": [2, 3], "side_img_size": 16}, "fpt": {"layers": [0, 1, 2, 3]},
        "vpt_prompts": 2, "adapter_bottleneck": 4, "lora_rank": 2}})


def test_class_token_selection_is_top_k_of_cls_row() -> None:
    torch.manual_seed(0)
    lpm = FrozenLPM(_tiny_lpm_cfg(), [1, 3], token_ratio=0.3, token_imp="class_token")
    x = torch.randn(2, 3, 32, 32)
    keys, values = lpm(x)
    vit = lpm.vit
    h = vit.norm_pre(vit._pos_embed(vit.patch_embed(x)))
    h = vit.blocks[0](h)
    blk = vit.blocks[1]
    qkv = blk.attn.qkv(blk.norm1(h)).reshape(2, 17, 3, 3, 16).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    cls_row = (q[:, :, :1] @ k.transpose(-2, -1) / 4.0).softmax(-1)[:, :, 0]
    idx = cls_row.topk(lpm.num_keep, dim=-1).indices
    expected = k.gather(2, idx.unsqueeze(-1).expand(-1, -1, -1, 16))
    torch.testing.assert_close(keys[0], expected)
    assert keys.shape == values.shape == (2, 2, 3, lpm.num_keep, 16)


def test_fusion_attention_near_uniform_at_init_and_output() -> None:
    torch.manual_seed(0)
    fusion = FusionModule(6, 768, 96, 12, 16, prompt_dim=768, prompt_norm=True, prompt_proj=False, dropout=0.5)
    fusion.eval()
    keys, values = torch.randn(6, 2, 12, 205, 64), torch.randn(6, 2, 12, 205, 64)
    attn = fusion.attention(keys)
    assert attn.shape == (6, 2, 12, 16, 205)
    assert (attn - 1 / 205).abs().max() < 1e-3
    out = fusion(keys, values)
    assert out.shape == (6, 2, 16, 96)
    mean_v = values.mean(-2).reshape(6, 2, 1, 768)  # heads merged
    approx = fusion.out_proj(mean_v + fusion.prompts)
    assert (out - approx.expand_as(out)).abs().max() < 1e-2


def test_fpt_plus_shapes_prompt_stripping_and_layer_mapping() -> None:
    torch.manual_seed(0)
    cfg = Config()
    model = build_model(cfg.model, 5, preloaded=True).eval()
    keys, values = torch.randn(6, 2, 12, 205, 64), torch.randn(6, 2, 12, 205, 64)
    side = torch.randn(2, 3, 128, 128)
    seen: list[tuple[int, ...]] = []
    hooks = [blk.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape))) for blk in model.side.vit.blocks]
    logits = model(side, keys, values)
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    assert seen == [(2, 81, 96)] * 6  # 65 tokens + 16 prompts inside each block
    for h in hooks:
        h.remove()
    # layer mapping: perturbing LPM block 6 (index 0 of the stack) changes only side block 0's prompts
    inputs: list[torch.Tensor] = []
    hooks = [blk.register_forward_pre_hook(lambda m, a: inputs.append(a[0].detach().clone()))
             for blk in model.side.vit.blocks]
    model(side, keys, values)
    base = list(inputs)
    inputs.clear()
    k2 = keys.clone()
    k2[0] += 1.0
    model(side, k2, values)
    assert not torch.equal(inputs[0][:, 65:], base[0][:, 65:])  # prompts of side block 0 changed
    assert torch.equal(inputs[0][:, :65], base[0][:, :65])  # nothing upstream of it
    inputs.clear()
    v2 = values.clone()
    v2[5] += 1.0
    model(side, keys, v2)
    assert all(torch.equal(inputs[i], base[i]) for i in range(5))  # blocks 0-4 untouched
    assert not torch.equal(inputs[5][:, 65:], base[5][:, 65:])
    for h in hooks:
        h.remove()


def test_fpt_variant_shapes() -> None:
    model = build_model(ModelConfig(method="fpt"), 5, preloaded=True).eval()
    out = model.fusion(torch.randn(12, 2, 12, 205, 64), torch.randn(12, 2, 12, 205, 64))
    assert out.shape == (12, 2, 16, 96)
    assert model(torch.randn(2, 3, 224, 224), torch.randn(12, 2, 12, 205, 64),
                 torch.randn(12, 2, 12, 205, 64)).shape == (2, 5)


def test_freezing_online_path_only_side_and_fusion_get_gradients() -> None:
    torch.manual_seed(0)
    cfg = _tiny_cfg("fpt_plus")
    model = build_model(cfg.model, 5, preloaded=False)
    model.train()
    assert not model.lpm.vit.training
    assert all(not p.requires_grad for p in model.lpm.parameters())
    logits = model(torch.randn(2, 3, 16, 16), lpm=torch.randn(2, 3, 32, 32))
    logits.sum().backward()
    assert all(p.grad is None for p in model.lpm.parameters())
    learnable = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in learnable)
    assert sum(p.numel() for p in learnable) == count_learnable(model.fusion) + count_learnable(model.side)
    assert "lpm.vit.cls_token" not in model.state_dict()  # checkpoints hold the learnable part only


@pytest.mark.parametrize("method", ["vpt", "adapter", "lora", "linear_probe", "full_finetune"])
def test_petl_baselines_forward_and_gradients(method: str) -> None:
    torch.manual_seed(0)
    cfg = _tiny_cfg(method)
    model = build_model(cfg.model, 3, preloaded=False)
    logits = model(lpm=torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 3)
    logits.sum().backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, name
    if method in ("adapter", "lora"):  # zero-initialised updates: the frozen network's output is unchanged
        plain = build_model(dataclasses.replace(cfg.model, method="linear_probe"), 3, preloaded=False)
        plain.head.load_state_dict(model.head.state_dict())
        x = torch.randn(2, 3, 32, 32)
        torch.testing.assert_close(model(lpm=x), plain(lpm=x))
