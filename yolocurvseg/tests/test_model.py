"""Segmenter: shapes, pCE ignores label 2, a tiny UNet overfits a few synthetic pairs."""

import numpy as np
import pytest
import torch

from yolocurvseg.model import SegmenterConfig, build_segmenter, masked_ce_dice_loss
from yolocurvseg.sca import SCAParams, generate_curves


def test_unet_shapes_and_finite():
    net = build_segmenter(SegmenterConfig(channels=[8, 16, 32], strides=[2, 2]))
    out = net(torch.randn(2, 1, 32, 48))
    assert out.shape == (2, 2, 32, 48) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="strides"):
        build_segmenter(SegmenterConfig(channels=[8, 16, 32], strides=[2]))


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
    net = build_segmenter(SegmenterConfig(channels=[8, 16, 32], strides=[2, 2]))
    opt = torch.optim.Adam(net.parameters(), 5e-3)
    for _ in range(100):
        loss = masked_ce_dice_loss(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    pred = net(x).argmax(1)
    dice = 2 * ((pred == 1) & (y == 1)).sum() / ((pred == 1).sum() + (y == 1).sum())
    assert dice > 0.9, float(dice)
