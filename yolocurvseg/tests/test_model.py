"""Segmenter: shapes, pCE ignores label 2, a tiny UNet overfits a few synthetic pairs."""

import numpy as np
import pytest
import torch

from yolocurvseg.model import SegmenterConfig, build_model, masked_ce_dice_loss
from yolocurvseg.sca import SCAParams, generate_curves


def test_unet_shapes_and_finite():
    net = build_model(SegmenterConfig(channels=[8, 16, 32], strides=[2, 2]))
    out = net(torch.randn(2, 1, 32, 48))
    assert out.shape == (2, 2, 32, 48) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="strides"):
        build_model(SegmenterConfig(channels=[8, 16, 32], strides=[2]))


@pytest.mark.parametrize(("channels", "strides", "count"), [([8, 16, 32], [2, 2], 12_062),
                                                         ([8, 16, 32, 64], [2, 2, 2], 51_777),
                                                         ([16, 32, 64, 128, 256], [2, 2, 2, 2], 838_996)])
def test_segmenter_parameter_counts(channels, strides, count):
    """ci / default / paper-scale segmenters (MONAI UNet, one residual unit per block), counted on the meta device."""
    with torch.device("meta"):
        net = build_model(SegmenterConfig(channels=channels, strides=strides))
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == count


def test_cut_parameter_counts_match_the_official_networks():
    """Official CUT ``resnet_9blocks`` G and ``basic`` PatchGAN D on RGB print 11.378 M and 2.765 M parameters; ours
    has the same layers (blur-pool and nearest up-sampling + conv add none), and one grey channel in and out."""
    from yolocurvseg.synthesizer import PatchGANDiscriminator, ResnetGenerator

    with torch.device("meta"):
        g3, d3 = ResnetGenerator(3, 3, 64, 9), PatchGANDiscriminator(3, 64, 3)
        g1, d1 = ResnetGenerator(1, 1, 64, 9), PatchGANDiscriminator(1, 64, 3)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert (count(g3), count(d3)) == (11_378_179, 2_764_737)
    assert round(count(g3) / 1e6, 3) == 11.378 and round(count(d3) / 1e6, 3) == 2.765
    assert (count(g1), count(d1)) == (11_365_633, 2_762_689)


def test_every_segmenter_parameter_gets_a_gradient():
    net = build_model(SegmenterConfig(channels=[8, 16, 32], strides=[2, 2]))
    target = torch.randint(0, 2, (2, 32, 32))
    masked_ce_dice_loss(net(torch.randn(2, 1, 32, 32)), target).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
               or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_pce_ignores_unlabelled_pixels():
    logits = torch.randn(1, 2, 8, 8, requires_grad=True)
    target = torch.full((1, 8, 8), 2, dtype=torch.long)
    target[0, 0, :4] = 1
    target[0, 7, :4] = 0
    loss = masked_ce_dice_loss(logits, target, dice_weight=0.0)
    loss.backward()
    grad = logits.grad.abs().sum(dim=1)[0]
    assert (grad[target[0] == 2] == 0).all() and (grad[target[0] != 2] > 0).all()
    z = masked_ce_dice_loss(logits, torch.full((1, 8, 8), 2, dtype=torch.long))
    assert z.item() == 0.0 and z.requires_grad


@pytest.mark.slow
def test_tiny_unet_overfits_synthetic_pairs():
    torch.manual_seed(0)
    p = SCAParams(n_attractors=60, influence=20, kill=3, step=2, n_roots=(1, 2), max_radius=2.5, ref_size=32)
    samples = [generate_curves((32, 32), p, i) for i in range(4)]
    x = torch.from_numpy(np.stack([0.6 - 0.4 * s.intensity for s in samples]))[:, None].float()
    x = (x - x.mean()) / x.std()
    y = torch.from_numpy(np.stack([s.mask for s in samples])).long()
    net = build_model(SegmenterConfig(channels=[8, 16, 32], strides=[2, 2]))
    opt = torch.optim.Adam(net.parameters(), 5e-3)
    for _ in range(100):
        loss = masked_ce_dice_loss(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    pred = net(x).argmax(1)
    dice = 2 * ((pred == 1) & (y == 1)).sum() / ((pred == 1).sum() + (y == 1).sum())
    assert dice > 0.9, float(dice)
