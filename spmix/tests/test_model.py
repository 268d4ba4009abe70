"""Networks: shapes, parameter counts, gradient flow, token mixing identity."""

from pathlib import Path

import pytest
import torch

from spmix.model import SPMixNet, count_parameters
from spmix.settings import ModelConfig

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


def test_exact_parameter_counts_on_the_meta_device():
    """Paper hybrid: timm's 56,762,976 backbone parameters (56.8 M); heads 768*7+7, projector
    768*4096 + 4096*4096 + 4096*256 + two BN(4096) affine pairs, predictor 256*4096 + 4096*256 + one BN(4096)."""
    from common.config import load_config
    from spmix.model import build_model
    from spmix.settings import Config

    with torch.device("meta"):
        paper = build_model(ModelConfig(backbone="vit_small_resnet50d_s16_224"), 7, 224)
    assert count_parameters(paper.backbone) == 56_762_976
    assert count_parameters(paper.classifier) == 768 * 7 + 7
    assert count_parameters(paper.projector) == 768 * 4096 + 4096 * 4096 + 4096 * 256 + 2 * 2 * 4096 == 20_987_904
    assert count_parameters(paper.predictor) == 256 * 4096 + 4096 * 256 + 2 * 4096 == 2_105_344
    cfg = load_config(Config, Path(__file__).parent.parent / "configs" / "default.yaml")
    with torch.device("meta"):
        tiny = build_model(cfg.model, 7, cfg.data.img_size)
    # at 64 px: 4x4 patch tokens + CLS -> position embedding 17 x 64 (324_611 / 191_548 at 96 px, 37 x 64)
    assert count_parameters(tiny) == 323_331 and count_parameters(tiny.backbone) == 190_268


@pytest.mark.parametrize("paco", [False, True])
def test_gradients_reach_exactly_the_trained_parameters(paco):
    """CE trains backbone + classifier (the contrastive heads get no gradient); PaCo trains every parameter."""
    import numpy as np

    from spmix.engine import STEPS, StepContext, TrainStep
    from spmix.losses import ClassificationLoss, LabelQueue, PaCoLoss
    from spmix.settings import Config

    torch.manual_seed(0)
    cfg = Config()
    model = SPMixNet(ModelConfig(**SMALL), 7, 64)
    counts = [10, 40, 5, 4, 8, 2, 3]
    ctx = StepContext(7, 0, 1, np.random.default_rng(0), torch.Generator().manual_seed(0), cfg, two_views=paco)
    losses = (PaCoLoss(counts), LabelQueue(8, SMALL["proj_dim"])) if paco else None
    step = TrainStep(model, STEPS["none"], ClassificationLoss("ce", counts), ctx, losses)
    batch = {"image": torch.randn(4, 3, 64, 64), "image_k": torch.randn(4, 3, 64, 64),
             "label": torch.tensor([0, 1, 2, 1])}
    loss, _, _ = step(batch, None)
    loss.backward()
    got = {n for n, p in model.named_parameters() if p.grad is not None}  # zero-init residual BNs: zero grads
    heads = {n for n, _ in model.named_parameters() if n.startswith(("projector.", "predictor."))}
    everything = {n for n, _ in model.named_parameters()}
    assert got == (everything if paco else everything - heads)


def test_unknown_backbone_and_hub_offline():
    from common.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match="backbone"):
        from_dict(ModelConfig, {"backbone": "vgg"})
    from common.weights import PretrainedWeightsError

    with pytest.raises(PretrainedWeightsError, match="resnet50d"):
        SPMixNet(ModelConfig(backbone="vit_small_resnet50d_s16_224", pretrained="hub"), 7, 224)
