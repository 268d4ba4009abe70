"""Behaviour on synthetic data (overfit check): a tiny SwinIR trained on 120 batches of random patches halves its L1
and beats nearest-neighbour upsampling on a held-out image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from common.metrics import psnr
from pamsr.data import TrainPatches, load_images
from pamsr.engine import predict_image, quantise
from pamsr.figures import nearest_upsample
from pamsr.losses import SRLoss
from pamsr.models import SwinIR
from pamsr.settings import DataConfig, DisplacementConfig, PatchSelectionConfig


@pytest.fixture
def one_thread():
    """Tiny matrices: one thread is as fast and immune to oversubscription on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_tiny_swinir_learns_and_beats_nearest(synth_root, one_thread):
    torch.manual_seed(0)
    cfg = DataConfig(root=str(synth_root), patch_size=16, epoch_size=960)
    uniform = PatchSelectionConfig(mode="random")  # uniform patches also teach the empty background of the scan
    train, test = load_images(cfg, "train"), load_images(cfg, "test")
    patches = TrainPatches(train, cfg, uniform, DisplacementConfig(enabled=False), seed=0)
    loader = DataLoader(patches, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
    model = SwinIR(2, embed_dim=16, depths=[2], num_heads=[2], num_feat=16, drop_path_rate=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss_fn, losses = SRLoss(), []
    for batch in loader:
        loss, _ = loss_fn(model(batch["lr"]), batch["hr"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-5:]) < 0.5 * losses[0]
    item = test[0]
    sr = predict_image(model, item.lr, 2, torch.device("cpu"), tiled=False, tile=64, overlap=0)
    nearest = nearest_upsample(item.lr, 2)
    assert psnr(quantise(sr), item.hr, 1.0) > psnr(nearest, item.hr, 1.0)
