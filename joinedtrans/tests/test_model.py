"""Model tests: exact parameter counts (meta device), shapes and ranges, gradients reach exactly the branches a loss
term trains, the pre-trained encoder transfers strictly, input-channel checks."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from joinedtrans.losses import CoarseLoss
from joinedtrans.model import (
    UnetPlusPlusDecoder,
    build_fine_model,
    build_fovea_model,
    build_model,
    build_pretrain_model,
    count_parameters,
)
from joinedtrans.settings import FineConfig, FoveaConfig, ModelConfig

CPU_SWIN = ModelConfig(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=8, stem_channels=16,
                       decoder_channels=(32, 16, 16, 8, 8))
CPU_CNN = ModelConfig(encoder="cnn", name="resnest14d", channels=(32, 64, 128, 256), stem_width=16,
                      decoder_channels=(32, 16, 16, 8, 8))


def test_joined_paper_model_has_the_official_parameter_count() -> None:
    """JOINED: smp UNetPP_doublesmp with timm-resnest50d = 101,867,814 (smp 0.6.0: each decoder 25,477,568)."""
    with torch.device("meta"):
        model = build_model(ModelConfig(encoder="cnn", name="resnest50d"), 256)
    assert count_parameters(model) == 101_867_814
    assert count_parameters(model.seg_decoder) == 25_477_568
    assert count_parameters(model.heatmap_decoder) == count_parameters(model.distance_decoder) == 25_477_568
    assert count_parameters(model.encoder) == 25_434_240
    assert model.encoder.out_channels == (64, 256, 512, 1024, 2048)


def test_swin_base_paper_model_counts() -> None:
    """Swin-B (patch 4, embed 128, depths 2-2-18-2) at 256 px with window 8, features_only + a 64-channel stem."""
    with torch.device("meta"):
        model = build_model(ModelConfig(), 256)
    assert count_parameters(model.encoder.swin) == 86_762_232
    assert count_parameters(model.encoder) == 86_801_080
    assert model.encoder.out_channels == (64, 128, 256, 512, 1024)
    assert count_parameters(model) == 116_337_502


def test_cpu_encoders_have_the_stated_sizes() -> None:
    with torch.device("meta"):
        swin = build_model(CPU_SWIN, 128)
        cnn = build_model(CPU_CNN, 128)
    assert count_parameters(swin.encoder.swin) == 2_280_830
    assert count_parameters(swin.encoder) == 2_283_630  # + the 2-conv stem (3->16->16, BN)
    assert count_parameters(cnn.encoder) == 2_148_656
    assert swin.encoder.out_channels == (16, 32, 64, 128, 256)
    assert cnn.encoder.out_channels == (32, 128, 256, 512, 1024)


def test_cpu_cnn_projection_gives_the_swin_decoders() -> None:
    """[ours] CPU sizing of JOINED's CNN: 1x1 projections (conv + BN) of its 5 features to the CPU Swin widths, so
    the three UNet++ decoders are exactly the Swin model's and only the encoders differ."""
    with torch.device("meta"):
        swin = build_model(CPU_SWIN, 96)
        cnn = build_model(replace(CPU_CNN, feature_channels=(16, 32, 64, 128, 256)), 96)
    assert cnn.encoder.out_channels == swin.encoder.out_channels
    assert count_parameters(cnn.encoder.cnn) == 2_148_656
    proj = (32 * 16 + 128 * 32 + 256 * 64 + 512 * 128 + 1024 * 256) + 2 * (16 + 32 + 64 + 128 + 256)
    assert count_parameters(cnn.encoder.project) == proj == 349_664
    for name in ("seg_decoder", "heatmap_decoder", "distance_decoder"):
        assert count_parameters(getattr(cnn, name)) == count_parameters(getattr(swin, name))
    x = torch.randn(2, 3, 96, 96)
    out = build_model(replace(CPU_CNN, feature_channels=(16, 32, 64, 128, 256)), 96)(x)
    assert out["seg"].shape == (2, 3, 96, 96)
    with pytest.raises(ValueError, match="feature_channels"):
        build_model(replace(CPU_CNN, feature_channels=(16, 32)), 96)
    with pytest.raises(ValueError, match="feature_channels"):
        replace(CPU_SWIN, feature_channels=(16, 32, 64, 128, 256))


def test_ablation_branches_drop_their_decoders() -> None:
    with torch.device("meta"):
        full = build_model(CPU_SWIN, 128)
        seg_only = build_model(CPU_SWIN, 128, heatmap=False, distance=False)
    per_decoder = count_parameters(full.seg_decoder) + count_parameters(full.seg_head)
    assert count_parameters(full) - count_parameters(seg_only) == 2 * count_parameters(full.seg_decoder) + (
        count_parameters(full.heatmap_head) + count_parameters(full.distance_head))
    assert per_decoder > 0


@pytest.mark.parametrize("cfg", [CPU_SWIN, CPU_CNN], ids=["swin", "cnn"])
def test_coarse_shapes_and_ranges(cfg: ModelConfig) -> None:
    torch.manual_seed(0)
    model = build_model(cfg, 32).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out["seg"].shape == (2, 3, 32, 32)
    assert out["heatmap"].shape == (2, 2, 32, 32)
    assert out["distance"].shape == (2, 1, 32, 32)
    for value in out.values():
        assert torch.isfinite(value).all() and value.min() >= 0 and value.max() <= 1


def test_unetplusplus_node_names_follow_smp() -> None:
    dec = UnetPlusPlusDecoder((64, 256, 512, 1024, 2048), (256, 128, 64, 32, 16))
    assert sorted(dec.blocks) == sorted(["x_0_0", "x_0_1", "x_1_1", "x_0_2", "x_1_2", "x_2_2", "x_0_3", "x_1_3",
                                         "x_2_3", "x_3_3", "x_0_4"])


def _grad_owners(model: torch.nn.Module) -> set[str]:
    return {name.split(".")[0] for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_curriculum_gradients_reach_exactly_the_active_branches() -> None:
    torch.manual_seed(0)
    model = build_model(CPU_SWIN, 32)
    x = torch.randn(2, 3, 32, 32)
    batch = {"seg": (torch.rand(2, 3, 32, 32) > 0.5).float(), "heatmap": torch.rand(2, 2, 32, 32),
             "distance": torch.rand(2, 1, 32, 32)}
    loss_fn = CoarseLoss((1 / 6, 1 / 3))
    expected = {0: {"encoder", "distance_decoder", "distance_head"},
                30: {"encoder", "distance_decoder", "distance_head", "heatmap_decoder", "heatmap_head"},
                80: {"encoder", "distance_decoder", "distance_head", "heatmap_decoder", "heatmap_head",
                     "seg_decoder", "seg_head"}}
    for step, owners in expected.items():
        model.zero_grad(set_to_none=True)
        loss, _ = loss_fn(model(x), batch, step, 100)
        loss.backward()
        assert _grad_owners(model) == owners, step
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_vessel_encoder_loads_strictly_into_the_coarse_model() -> None:
    pre = build_pretrain_model(CPU_SWIN, 64, "vessel")
    coarse = build_model(CPU_SWIN, 64)
    coarse.encoder.load_state_dict(pre.encoder.state_dict(), strict=True)
    for key, value in pre.encoder.state_dict().items():
        assert torch.equal(coarse.encoder.state_dict()[key], value)
    with torch.no_grad():
        assert pre(torch.randn(1, 3, 64, 64)).shape == (1, 1, 64, 64)


def test_fine_and_fovea_networks() -> None:
    torch.manual_seed(0)
    fine = build_fine_model(FineConfig(encoder="efficientnet_b0", decoder_channels=(32, 16, 16, 8))).eval()
    rgb_only = build_fine_model(FineConfig(encoder="efficientnet_b0", decoder_channels=(32, 16, 16, 8),
                                           use_coarse=False))
    fovea = build_fovea_model(FoveaConfig(decoder_channels=(16, 16, 8, 8))).eval()
    with torch.no_grad():
        assert fine(torch.randn(2, 5, 64, 64)).shape == (2, 3, 64, 64)
        assert fovea(torch.randn(2, 4, 32, 32)).shape == (2, 1, 32, 32)
        with pytest.raises(ValueError, match="expects 5 input channels"):
            fine(torch.randn(1, 3, 64, 64))
    assert rgb_only.in_chans == 3
    with torch.device("meta"):
        paper_fine = build_fine_model(FineConfig())
    assert paper_fine.in_chans == 5
    assert count_parameters(paper_fine.encoder) == 16_743_080
    assert count_parameters(paper_fine) == 18_464_651


def test_residual_fine_stage_starts_at_its_coarse_input() -> None:
    """[ours] ``fine.residual``: with the zero-initialised head the untrained fine U-Net returns the coarse OC, OD
    (and BG = not OD) at threshold 0.5, and the head still receives a gradient."""
    torch.manual_seed(0)
    fine = build_fine_model(FineConfig(encoder="efficientnet_b0", decoder_channels=(32, 16, 16, 8), residual=3.0))
    x = torch.randn(2, 5, 64, 64)
    od = torch.zeros(2, 64, 64)
    od[:, 16:48, 16:48] = 1
    oc = torch.zeros(2, 64, 64)
    oc[:, 24:40, 24:40] = 1
    x[:, 3], x[:, 4] = oc, od
    out = fine(x)
    assert torch.equal(out[:, 0] >= 0.5, oc.bool()) and torch.equal(out[:, 1] >= 0.5, od.bool())
    assert torch.equal(out[:, 2] >= 0.5, ~od.bool())
    out[:, :2].sum().backward()
    assert fine.head.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="fine.residual"):
        FineConfig(use_coarse=False, residual=3.0)


def test_residual_fovea_stage_starts_at_its_coarse_heatmap() -> None:
    """[ours] ``fovea.residual``: the untrained fovea U-Net returns sigmoid(g (2 h - 1)) of the coarse heatmap h, so
    its peak is the coarse peak; the head still receives a gradient."""
    import math

    torch.manual_seed(0)
    net = build_fovea_model(FoveaConfig(decoder_channels=(16, 16, 8, 8), roi=64, residual=3.0))
    x = torch.randn(2, 4, 64, 64)
    x[:, 3] = 0
    x[:, 3, 20, 41] = 1.0
    out = net(x)
    assert torch.allclose(out[:, 0], torch.sigmoid(3.0 * (2 * x[:, 3] - 1)))
    assert int(out[0, 0].argmax()) == 20 * 64 + 41
    assert math.isclose(float(out.max()), 1 / (1 + math.exp(-3.0)), rel_tol=1e-6)
    out.sum().backward()
    assert net.head.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="fovea.residual"):
        FoveaConfig(residual=-1.0)


def test_hub_weights_fail_with_instructions() -> None:
    from common.weights import PretrainedWeightsError

    with pytest.raises(PretrainedWeightsError, match="model.pretrained=/path/to/that/file"):
        build_model(ModelConfig(pretrained="hub"), 256)
