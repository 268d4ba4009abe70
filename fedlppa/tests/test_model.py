"""Model contract: exact parameter counts of the released module, shapes, attention identity at init, p_S mapping,
state-dict order, and which parameters receive gradient."""

from __future__ import annotations

import pytest
import torch

from fedlppa.losses import LossConfig, fedlppa_loss
from fedlppa.model import (
    AffinityAttention,
    ChannelAttentionBlock,
    ModelConfig,
    SpatialAttentionBlock,
    UNet,
    UNetUniV5,
    ala_parameter_names,
    build_model,
    count_parameters,
    label_prompt_vector,
)

SMALL = [8, 16, 32, 64, 128]


@pytest.mark.parametrize("in_ch,classes,size,univ5,unet", [(1, 2, 256, 2_897_430, 1_813_474),
                                                           (3, 3, 384, 2_899_928, 1_813_907)])
def test_parameter_counts_equal_the_released_module(in_ch, classes, size, univ5, unet):
    with torch.device("meta"):
        assert count_parameters(UNetUniV5(in_ch, classes, size, num_sites=5)) == univ5
        assert count_parameters(UNet(in_ch, classes)) == unet


def test_ala_keys_and_breakdown_faz():
    with torch.device("meta"):
        model = UNetUniV5(1, 2, 256, num_sites=5)
    names = ala_parameter_names(model)
    params = dict(model.named_parameters())
    assert len(names) == 94 and sum(params[n].numel() for n in names) == 1_333_172
    parts = {"encoder": 1_180_464, "decoder.": 641_202, "decoder_auxiliary": 641_202, "fuse": 374_976,
             "mlp": 50_768, "attention": 7_282}
    for prefix, expected in parts.items():
        assert sum(p.numel() for n, p in params.items() if n.startswith(prefix)) == expected, prefix
    assert params["distribution_prompts"].shape == (5, 16, 16) and params["uni_prompt"].shape == (1, 16, 16)
    assert list(model.state_dict())[:2] == ["distribution_prompts", "uni_prompt"]


def test_shapes_and_fused_list():
    torch.manual_seed(0)
    model = UNetUniV5(1, 2, 64, num_sites=3, site=1, sup_type="keypoint").eval()
    out = model(torch.randn(2, 1, 64, 64))
    assert out.logits.shape == (2, 2, 64, 64) and out.aux_logits.shape == (2, 2, 64, 64)
    assert len(out.fused) == 3 and all(f.shape == (2, 64, 4, 4) for f in out.fused)
    assert model.distribution_prompts.shape == (3, 4, 4) and model.uni_prompt.shape == (1, 4, 4)
    assert all(torch.isfinite(t).all() for t in (out.logits, out.aux_logits, *out.fused))
    assert UNet(1, 2, SMALL)(torch.randn(2, 1, 32, 32)).shape == (2, 2, 32, 32)


def test_attention_is_2x_at_init_and_not_after_gamma_changes():
    torch.manual_seed(0)
    x = torch.randn(2, 64, 4, 4)
    att = AffinityAttention(64).eval()
    assert torch.equal(att(x), 2 * x)
    assert torch.equal(SpatialAttentionBlock(64)(x), x) and torch.equal(ChannelAttentionBlock(64)(x), x)
    with torch.no_grad():
        att.sab.gamma.fill_(0.5)
    assert not torch.allclose(att(x), 2 * x)


def test_label_prompt_mapping():
    assert label_prompt_vector("box").tolist() == [0, 1, 0]
    assert label_prompt_vector("scribble_noisy").tolist() == [1, 0, 0]
    assert label_prompt_vector("keypoint").tolist() == [0, 0, 1]
    assert label_prompt_vector("mask").tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="unknown supervision type"):
        label_prompt_vector("polygon")


def test_onehot_prompt_is_fixed_and_ablation_has_no_prompts():
    model = build_model(ModelConfig(prompt="onehot", channels=SMALL), 1, 2, 64, 4, site=2)
    assert model.distribution_prompts.sum(dim=(1, 2)).tolist() == [0, 0, 16, 0]
    assert not model.distribution_prompts.requires_grad
    bare = build_model(ModelConfig(prompts=False, channels=SMALL), 1, 2, 64, 4, site=2)
    assert not hasattr(bare, "uni_prompt") and len(bare(torch.randn(2, 1, 64, 64)).fused) == 1


def test_gradient_reaches_own_prompt_row_only():
    """Other sites' p_D rows get no gradient from the full objective: L_uni detaches F_k, k != own."""
    torch.manual_seed(0)
    model = UNetUniV5(1, 2, 64, num_sites=4, site=2, sup_type="scribble", channels=SMALL)
    x = torch.randn(3, 1, 64, 64)
    y = torch.randint(0, 3, (3, 64, 64))
    out = model(x)
    terms = fedlppa_loss(out.logits, out.aux_logits, out.fused, y, 2, 0.3, LossConfig(), 2)
    terms.total.backward()
    grad = model.distribution_prompts.grad
    assert torch.isfinite(terms.total)
    assert grad[2].abs().sum() > 0
    assert torch.count_nonzero(grad[[0, 1, 3]]) == 0
    assert model.uni_prompt.grad.abs().sum() > 0
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    # gamma = 0 at init blocks the gradient of SAB's query/key/value (and only theirs); the gammas get one
    assert missing and all(n.startswith(("attention.sab.query", "attention.sab.key", "attention.sab.value"))
                           for n in missing), missing
    assert model.attention.sab.gamma.grad.abs().sum() > 0 and model.attention.cab.gamma.grad.abs().sum() > 0


def test_config_validation():
    with pytest.raises(ValueError, match="5 entries"):
        ModelConfig(channels=[8, 16, 32])
    with pytest.raises(ValueError, match="--init-weights"):
        ModelConfig(pretrained="hub")
    with pytest.raises(ValueError, match="divisible by 16"):
        UNetUniV5(1, 2, 60, 3)


@pytest.mark.parametrize("attention", ["sab", "cab", "multi"])
def test_attention_options_build_and_run(attention):
    model = build_model(ModelConfig(attention=attention, channels=SMALL), 1, 2, 32, 3, site=0)
    out = model(torch.randn(2, 1, 32, 32))
    assert out.logits.shape == (2, 2, 32, 32) and torch.isfinite(out.logits).all()
