"""The CPU LPM's pre-training: the source domain's dense targets, a few steps that learn texture tokens (reduced
scale), the weights loading back into the LPM through ``model.pretrained``, and the default config pointing at the
recipe's own file."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from common.config import load_config
from fpt_plus.models.lpm import FrozenLPM, build_vit
from fpt_plus.pretraining import pretrain, weights_path
from fpt_plus.settings import Config, LPMConfig, PretrainConfig
from fpt_plus.source_domain import NUM_TEXTURES, texture_bank, texture_batch

PROJECT = Path(__file__).resolve().parent.parent


def test_source_domain_targets() -> None:
    bank = texture_bank(32)
    assert bank.shape == (NUM_TEXTURES + 1, 32, 32) and bank[0].abs().max() == 0
    assert torch.allclose(bank.mean(dim=(1, 2)), torch.zeros(NUM_TEXTURES + 1), atol=1e-6)  # zero-mean patterns
    images, tokens, present = texture_batch(6, 64, 8, torch.Generator().manual_seed(0))
    assert images.shape == (6, 3, 64, 64) and tokens.shape == (6, 64) and present.shape == (6, NUM_TEXTURES)
    assert tokens.max() <= NUM_TEXTURES and (tokens > 0).any() and (tokens == 0).any()
    for b in range(6):  # a textured token implies that texture is present in the image
        assert all(present[b, c - 1] == 1 for c in tokens[b].unique().tolist() if c > 0)
    again = texture_batch(6, 64, 8, torch.Generator().manual_seed(0))
    assert torch.equal(images, again[0]) and torch.equal(tokens, again[1])


def test_short_pretraining_learns_texture_tokens_and_loads_into_the_lpm(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    lpm = LPMConfig(name="vit_tiny_patch16_384", img_size=64, pretrain_img_size=64, patch_size=8, embed_dim=48,
                    depth=2, num_heads=3)
    out = tmp_path / "lpm.safetensors"
    report = pretrain(PretrainConfig(steps=40, batch_size=16, lr=2e-3, warmup_steps=4), lpm, out)
    before, after = report["held_out_before"], report["held_out_after"]
    assert after["textured_token_recall"] > max(0.3, before["textured_token_recall"] + 0.2), report
    assert json.loads((tmp_path / "recipe.json").read_text())["recipe"]["steps"] == 40
    loaded = build_vit(lpm, pretrained=str(out))
    random = build_vit(lpm)
    assert not torch.equal(loaded.blocks[0].attn.qkv.weight, random.blocks[0].attn.qkv.weight)
    frozen = FrozenLPM(lpm, [1], pretrained=str(out))
    assert torch.equal(frozen.vit.patch_embed.proj.weight, loaded.patch_embed.proj.weight)


def test_default_config_points_at_the_recipe_file() -> None:
    cfg = load_config(Config, PROJECT / "configs" / "default.yaml", [])
    assert cfg.model.pretrained == weights_path(PretrainConfig(), cfg.model.lpm).as_posix()
    other = load_config(Config, PROJECT / "configs" / "default.yaml", ["model.lpm.embed_dim=96"])
    assert weights_path(PretrainConfig(), other.model.lpm) != weights_path(PretrainConfig(), cfg.model.lpm)
