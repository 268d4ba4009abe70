"""SwinIR-M with adapters: parameter counts of the official configuration, shapes, gradients, progressive init."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.checkpoint import load_init_weights
from pamsr.models import EDSR, RCAN, Bicubic, SwinIR, build_model, count_parameters, swinir_m
from pamsr.settings import ModelConfig


def tiny(scale: int, **kw) -> SwinIR:
    return SwinIR(upscale=scale, embed_dim=24, depths=[2, 2], num_heads=[2, 2], window_size=8, num_feat=16, **kw)


@pytest.mark.parametrize("scale,expected", [(2, 11_752_545), (4, 11_900_257), (8, 12_047_969)])
def test_official_parameter_counts(scale, expected):
    with torch.device("meta"):  # no memory, no time: the count only depends on the shapes
        assert count_parameters(swinir_m(scale)) == expected


def test_official_structure_and_adapters():
    model = swinir_m(2)
    assert model.conv_first_0.in_channels == 1 and model.conv_first_0.out_channels == 3
    assert model.conv_final.in_channels == 3 and model.conv_final.out_channels == 1
    assert len(model.layers) == 6 and all(len(layer.residual_group.blocks) == 6 for layer in model.layers)
    blocks = model.layers[0].residual_group.blocks
    assert [b.shift_size for b in blocks[:2]] == [(0, 0), (4, 4)]
    assert blocks[0].attn.num_heads == 6 and blocks[0].mlp.fc1.out_features == 360


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_tiny_shapes(scale):
    torch.manual_seed(0)
    model = tiny(scale).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 1, 16, 16))
    assert out.shape == (2, 1, 16 * scale, 16 * scale)
    assert torch.isfinite(out).all()


def test_non_multiple_of_window_is_padded_and_cropped():
    model = tiny(2).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 1, 13, 21))
    assert out.shape == (1, 1, 26, 42)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = tiny(2, drop_path_rate=0.0)
    loss = (model(torch.rand(2, 1, 16, 16)) - torch.rand(2, 1, 32, 32)).abs().mean()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert all(p.grad.abs().sum() > 0 for p in model.parameters())


def test_cnn_baselines_and_bicubic():
    x = torch.rand(1, 1, 12, 12)
    assert EDSR(2, n_resblocks=2, n_feats=8)(x).shape == (1, 1, 24, 24)
    assert RCAN(4, n_resgroups=1, n_resblocks=1, n_feats=16, reduction=4)(x).shape == (1, 1, 48, 48)
    up = Bicubic(4)(x)
    assert torch.allclose(up[..., ::4, ::4], x, atol=1e-5)  # LR pixel i sits on HR pixel s*i (decimation grid)
    assert count_parameters(build_model(ModelConfig(name="edsr"), 2)) == 1_367_553  # EDSR baseline (1 channel)


def test_x2_checkpoint_initialises_x4(tmp_path):
    x2, x4 = tiny(2), tiny(4)
    path = tmp_path / "x2.pt"
    torch.save({"model": x2.state_dict()}, path)
    report = load_init_weights(x4, path)
    assert report["missing"] == ["upsample.2.weight", "upsample.2.bias"] and not report["shape_mismatch"]
    for name, tensor in x4.state_dict().items():
        if name in x2.state_dict() and not name.startswith("upsample.2"):
            assert torch.equal(tensor, x2.state_dict()[name]), name


def test_init_from_latest_experiment(tmp_path):
    from common.config import load_config
    from pamsr.settings import PROJECT_DIR, Config
    from pamsr.train import resolve_init_from

    cfg = load_config(Config, PROJECT_DIR / "configs" / "paper_x4.yaml", [f"runs_root={tmp_path}"])
    with pytest.raises(FileNotFoundError, match="paper_x2"):
        resolve_init_from(cfg)
    best = tmp_path / "pamsr" / "paper_x2" / "20260101-000000" / "checkpoints" / "best.pt"
    best.parent.mkdir(parents=True)
    torch.save({"model": tiny(2).state_dict()}, best)
    assert resolve_init_from(cfg) == best


@pytest.mark.gpu
def test_paper_network_trains_on_cuda():
    """The official SwinIR-M on CUDA: 50 steps on one batch of LR 64x64 patches (batch 8) reduce the L1."""
    torch.manual_seed(0)
    device = torch.device("cuda")
    model = swinir_m(2).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    lr = torch.rand(8, 1, 64, 64, device=device)
    hr = torch.nn.functional.interpolate(lr, scale_factor=2, mode="bilinear")
    losses = []
    for _ in range(50):
        loss = (model(lr) - hr).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0] and all(np.isfinite(losses))


@pytest.mark.parametrize("name,extra", [("han", {"n_resgroups": 2, "n_resblocks": 2, "n_feats": 16, "reduction": 4}),
                                        ("rdn", {"rdn_blocks": 2, "rdn_layers": 3, "rdn_growth": 8, "n_feats": 16}),
                                        ("fd_unet", {"n_feats": 8, "unet_levels": 3, "rdn_layers": 2}),
                                        ("swinir", {"embed_dim": 16, "depths": [1], "num_heads": [2]}),
                                        ("edsr", {"n_resblocks": 2, "n_feats": 8})])
@pytest.mark.parametrize("scale", [2, 4])
def test_every_network_shapes_and_bicubic_skip_starts_at_bicubic(name, extra, scale):
    """Every network maps (B, 1, h, w) to (B, 1, h*s, w*s); with model.bicubic_skip its zero-initialised last
    convolution makes the untrained network exactly bicubic, and the gradient still reaches the last convolution."""
    torch.manual_seed(0)
    x = torch.rand(2, 1, 12, 20)
    plain = build_model(ModelConfig(name=name, **extra), scale)
    assert plain(x).shape == (2, 1, 12 * scale, 20 * scale)
    skip = build_model(ModelConfig(name=name, bicubic_skip=True, **extra), scale)
    out = skip(x)
    assert torch.allclose(out, Bicubic(scale)(x), atol=1e-6)
    out.sum().backward()
    grads = [p.grad for p in skip.parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert grads  # the zero-initialised last layer gets a gradient, so training leaves bicubic


def test_swinir_skip_zero_last_starts_at_bicubic_and_trains_the_body_at_once():
    """model.skip_zero=last zero-initialises conv_last (num_feat -> 3) instead of the 3->1 adapter: the untrained
    network is still bicubic, and conv_last gets a gradient at step 0 through the random adapter."""
    torch.manual_seed(0)
    x = torch.rand(2, 1, 12, 20)
    extra = {"embed_dim": 16, "depths": [1], "num_heads": [2], "bicubic_skip": True}
    last = build_model(ModelConfig(name="swinir", skip_zero="last", **extra), 2)
    assert torch.allclose(last(x), Bicubic(2)(x), atol=1e-6)
    assert float(last.conv_final.weight.abs().sum()) > 0 and float(last.conv_last.weight.abs().sum()) == 0
    (last(x) - Bicubic(2)(x) - 0.1).abs().mean().backward()
    assert float(last.conv_last.weight.grad.abs().sum()) > 0
    final = build_model(ModelConfig(name="swinir", **extra), 2)
    (final(x) - Bicubic(2)(x) - 0.1).abs().mean().backward()
    assert float(final.conv_last.weight.grad.abs().sum()) == 0  # gated by the zero adapter at step 0


def test_swinir_without_adapters_reads_and_writes_one_channel():
    """model.adapter_chans=0 (ours): no 1->3 / 3->1 adapters; conv_first reads the LR, conv_last writes the output;
    with the bicubic skip the untrained network is bicubic and conv_last gets a gradient at step 0."""
    torch.manual_seed(0)
    x = torch.rand(2, 1, 12, 20)
    extra = {"embed_dim": 16, "depths": [1], "num_heads": [2], "num_feat": 8, "bicubic_skip": True}
    with_adapters = build_model(ModelConfig(name="swinir", skip_zero="last", **extra), 2)
    plain = build_model(ModelConfig(name="swinir", adapter_chans=0, **extra), 2)
    assert plain.conv_first.in_channels == 1 and plain.conv_last.out_channels == 1
    assert isinstance(plain.conv_first_0, torch.nn.Identity) and isinstance(plain.conv_final, torch.nn.Identity)
    removed = (1 * 3 * 9 + 3) + (3 * 16 * 9) + (8 * 3 * 9 + 3) + (3 * 1 * 9 + 1) - (1 * 16 * 9) - (8 * 1 * 9 + 1)
    assert count_parameters(with_adapters) - count_parameters(plain) == removed
    assert torch.allclose(plain(x), Bicubic(2)(x), atol=1e-6)
    (plain(x) - Bicubic(2)(x) - 0.1).abs().mean().backward()
    assert float(plain.conv_last.weight.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="adapter_chans"):
        ModelConfig(adapter_chans=-1)


@pytest.mark.parametrize("config", ["han_paper_x2", "rdn_paper_x2", "fd_unet_paper_x2", "edsr_paper_x2"])
def test_paper_size_baselines_build_on_the_meta_device(config):
    """Paper-size baselines build without allocating (meta device) and are far larger than the CPU rows."""
    from common.config import load_config
    from pamsr.settings import PROJECT_DIR, Config

    cfg = load_config(Config, PROJECT_DIR / "configs" / f"{config}.yaml")
    assert not cfg.model.bicubic_skip  # the deviation stays off in the paper configs
    with torch.device("meta"):
        model = build_model(cfg.model, cfg.data.scale)
    assert count_parameters(model) > 1_000_000
