"""Networks (spec §1.7): shapes, parameter counts, gradient flow, token mixing identity."""

import pytest
import torch

from spmix.model import ModelConfig, SPMixNet, count_parameters

SMALL = dict(tiny_channels=(8, 16, 32, 64), tiny_embed_dim=32, tiny_depth=2, tiny_heads=2, proj_hidden=32,
             proj_dim=16, pred_hidden=32)


def test_tiny_hybrid_shapes_and_gradients():
    torch.manual_seed(0)
    model = SPMixNet(ModelConfig(**SMALL), 7, 64)
    x = torch.randn(4, 3, 64, 64)
    assert model.grid_size == (4, 4)
    tokens = model.tokens(x)
    assert tokens.shape == (4, 16, 32)
    feat = model.encode(x)
    assert feat.shape == (4, 32) and torch.isfinite(feat).all()
    logits = model(x)
    assert logits.shape == (4, 7)
    q = model.contrastive(feat, query=True)
    k = model.contrastive(feat, query=False)
    assert q.shape == k.shape == (4, 16)
    assert torch.allclose(q.norm(dim=1), torch.ones(4), atol=1e-5)
    (logits.sum() + q.sum() + k.sum()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing


def test_token_mixing_with_ratio_one_reproduces_unmixed_forward():
    from spmix.mixing import mix_tokens

    torch.manual_seed(0)
    model = SPMixNet(ModelConfig(**SMALL), 7, 64).eval()
    xa, xb = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    za, zb = model.tokens(xa), model.tokens(xb)
    mixed = model.classifier(model.encode_tokens(mix_tokens(za, zb, torch.ones(2, 16))))
    assert torch.equal(mixed, model(xa))
    other = model.classifier(model.encode_tokens(mix_tokens(za, zb, torch.full((2, 16), 0.6))))
    assert not torch.allclose(other, model(xa))


def test_mixing_happens_before_position_embedding():
    """tokens() must return the patch embeddings without CLS/pos-embed (the hook sees what encode_tokens adds)."""
    model = SPMixNet(ModelConfig(**SMALL), 7, 64).eval()
    seen = {}
    model.backbone.blocks[0].register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0]))
    tokens = model.tokens(torch.randn(1, 3, 64, 64))
    model.encode_tokens(tokens)
    vit = model.backbone
    expected = torch.cat([vit.cls_token.expand(1, -1, -1), tokens], 1) + vit.pos_embed
    assert torch.allclose(seen["x"], expected, atol=1e-6)


def test_cnn_backbone_has_no_tokens():
    model = SPMixNet(ModelConfig(backbone="tiny_resnet", **SMALL), 7, 64)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 7)
    with pytest.raises(RuntimeError, match="CNN"):
        model.tokens(torch.randn(1, 3, 64, 64))


def test_paper_hybrid_parameter_count():
    """timm vit_small_resnet50d_s16_224 (official backbone): 56.8 M parameters, 14x14 tokens at 224 px;
    heads 768->4096->4096->256 projector and 256->4096->256 predictor as in the released model."""
    model = SPMixNet(ModelConfig(backbone="vit_small_resnet50d_s16_224"), 7, 224)
    assert model.grid_size == (14, 14)
    assert round(count_parameters(model.backbone) / 1e6, 1) == 56.8
    assert count_parameters(model.classifier) == 768 * 7 + 7
    linear = [m for m in model.projector if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(768, 4096), (4096, 4096), (4096, 256)]
    linear = [m for m in model.predictor if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(256, 4096), (4096, 256)]


def test_unknown_backbone_and_hub_offline():
    with pytest.raises(ValueError, match="backbone"):
        SPMixNet(ModelConfig(backbone="vgg"), 7, 64)
    from common.weights import PretrainedWeightsError

    with pytest.raises(PretrainedWeightsError, match="resnet50d"):
        SPMixNet(ModelConfig(backbone="vit_small_resnet50d_s16_224", pretrained="hub"), 7, 224)
