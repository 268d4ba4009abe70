"""Representation module: shapes per scale, parameter count, gradients, memory bank, score aggregation."""

from __future__ import annotations

import pytest
import torch

from octa_iqa.model import (
    LowQualityRepresentation,
    build_backbone,
    compactness_loss,
    count_trainable,
    fit_bank,
    greedy_coreset,
    image_scores,
)
from octa_iqa.settings import BankConfig, LossConfig, ModelConfig


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return LowQualityRepresentation(build_backbone(ModelConfig(backbone="resnet10t", pretrained="none")), 16).eval()


def test_scales_strides_and_embedding_shape(model):
    x = torch.rand(2, 3, 64, 64)
    feats = model.backbone_features(x)
    assert [tuple(f.shape) for f in feats] == [(2, 64, 16, 16), (2, 128, 8, 8), (2, 256, 4, 4)]
    emb = model.embed(x)
    assert emb.patches.shape == (2, 48, 16, 16)
    assert [s.shape[1] for s in emb.scales] == [16, 16, 16]
    assert torch.equal(model.embed(x).patches, emb.patches)  # deterministic in eval mode


def test_only_adaptors_learn_and_count(model):
    assert count_trainable(model) == sum(c * 16 + 16 for c in (64, 128, 256))
    model.set_bank(torch.randn(8, 48))
    model.train()
    patches = model.embed(torch.rand(2, 3, 64, 64)).patches.flatten(2).transpose(1, 2).reshape(-1, 48)
    terms = compactness_loss(patches, model.bank, LossConfig())
    model.zero_grad()
    terms["loss"].backward()
    assert torch.isfinite(terms["loss"])
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.adaptors.parameters())
    model.eval()


def test_variance_floor_penalises_collapse():
    bank = torch.zeros(4, 8)
    collapsed = compactness_loss(torch.zeros(100, 8), bank, LossConfig())
    spread = compactness_loss(torch.randn(100, 8) * 2, torch.randn(4, 8) * 2, LossConfig())
    assert collapsed["compact"] == 0 and collapsed["variance"] > 0.4
    assert spread["variance"] < 0.1


def test_bank_member_has_zero_distance(model):
    x = torch.rand(1, 3, 64, 64)
    patches = model.embed(x).patches.flatten(2).transpose(1, 2).reshape(-1, 48)
    model.set_bank(fit_bank(patches, BankConfig(kind="coreset", coreset_ratio=1.0), seed=0))
    dist, _ = model.patch_scores(x)
    assert dist.shape == (1, 256)
    assert float(dist.max()) < 1e-2
    other, _ = model.patch_scores(torch.rand(1, 3, 64, 64))
    assert float(other.mean()) > 10 * float(dist.mean()) + 1e-3


def test_topk_aggregation():
    scores = torch.tensor([[0.1, 0.9, 0.3, 0.5]])
    assert image_scores(scores, top_fraction=0.01).item() == pytest.approx(0.9)  # k = 1 patch -> max
    assert image_scores(scores, top_fraction=0.5).item() == pytest.approx(0.7)
    assert image_scores(scores, aggregate="max").item() == pytest.approx(0.9)


def test_greedy_coreset_and_kmeans_bank():
    pts = torch.cat([torch.randn(50, 4), torch.randn(50, 4) + 20])
    idx = greedy_coreset(pts, 2, projection_dim=0, seed=0)
    assert len(set(idx.tolist())) == 2 and (idx < 50).sum() == 1  # one point from each far-apart blob
    bank = fit_bank(pts, BankConfig(kind="kmeans", size=2), seed=0)
    assert bank.shape == (2, 4)
    assert sorted(bank[:, 0].round().tolist())[1] > 15


def test_hub_weights_fail_offline_with_message():
    from common.weights import PretrainedWeightsError

    with pytest.raises(PretrainedWeightsError, match="model.pretrained"):
        build_backbone(ModelConfig(backbone="resnet18", pretrained="hub"))


def test_backbone_file_given_by_path_is_loaded_with_imagenet_normalisation(tmp_path):
    """``model.pretrained=/path``: the file's weights end up in the features_only backbone (the ImageNet row of
    reproduce.py), and the inputs get ImageNet mean/std."""
    import timm

    from octa_iqa.data import input_stats

    torch.manual_seed(3)
    source = timm.create_model("resnet10t", pretrained=False)
    path = tmp_path / "resnet10t_imagenet.pth"
    torch.save(source.state_dict(), path)
    backbone = build_backbone(ModelConfig(backbone="resnet10t", pretrained=str(path)))
    torch.testing.assert_close(backbone.state_dict()["conv1.0.weight"], source.state_dict()["conv1.0.weight"])
    assert input_stats(str(path))[0] == (0.485, 0.456, 0.406)
