"""Tiled inference (official forward_tile): equality with whole-image inference and correct overlap averaging."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pamsr.inference import default_overlap, forward_tiled, tile_starts
from pamsr.models import SwinIR


def test_official_overlaps():
    assert [default_overlap(s) for s in (2, 4, 8)] == [48, 56, 60]
    assert tile_starts(128, 64, 48) == [0, 16, 32, 48, 64]
    assert tile_starts(100, 64, 16)[-1] == 36


def test_tile_covering_image_equals_whole():
    torch.manual_seed(0)
    model = SwinIR(2, embed_dim=16, depths=[2], num_heads=[2], num_feat=8).eval()
    x = torch.rand(1, 1, 48, 48)
    with torch.no_grad():
        assert torch.allclose(forward_tiled(model, x, 2, tile=64, overlap=0), model(x), atol=1e-5)


def test_tiled_equals_whole_away_from_tile_borders():
    """One unshifted Swin layer: the receptive field is the 8x8 window plus a few 3x3 convs, so pixels farther
    than `margin` LR px from every border of every tile covering them must match whole-image inference."""
    torch.manual_seed(0)
    model = SwinIR(2, embed_dim=16, depths=[1], num_heads=[2], num_feat=8, drop_path_rate=0.0).eval()
    size, tile, overlap, margin = 128, 64, 32, 16
    x = torch.rand(1, 1, size, size)
    with torch.no_grad():
        whole, tiled = model(x)[0, 0], forward_tiled(model, x, 2, tile=tile, overlap=overlap)[0, 0]
    starts = tile_starts(size, tile, overlap)
    ok = np.ones(size, bool)
    for i in range(size):  # along one axis; the same holds for the other
        for s in starts:
            if not s <= i < s + tile:
                continue
            to_left = i - s if s > 0 else size  # a tile edge on the image border is not an artificial border
            to_right = s + tile - 1 - i if s + tile < size else size
            if min(to_left, to_right) < margin:
                ok[i] = False
    interior = np.kron(np.outer(ok, ok), np.ones((2, 2))).astype(bool)
    assert interior.sum() > 1000
    diff = (whole - tiled).abs().numpy()
    assert diff[interior].max() < 1e-5
    assert diff.max() > 1e-4  # tile borders do differ: the comparison is not vacuous


def test_overlap_averaging_of_constant_and_linear_models():
    class Up(torch.nn.Module):
        def forward(self, x):
            return F.interpolate(x, scale_factor=2, mode="nearest")

    x = torch.full((1, 1, 100, 90), 0.3)
    out = forward_tiled(Up(), x, 2, tile=32, overlap=12)
    assert torch.allclose(out, torch.full_like(out, 0.3))
    ramp = torch.rand(1, 1, 70, 50)
    assert torch.allclose(forward_tiled(Up(), ramp, 2, tile=32, overlap=20), Up()(ramp))


def test_bench_reports_both_modes_and_ratios_from_fresh_processes(tmp_path):
    """``make bench-pamsr`` on CPU: each mode in its own process, tiled relative to whole in the same run."""
    import pandas as pd

    from pamsr.bench import main as bench_main

    out = bench_main(["--size", "256", "--repeats", "1", "--device", "cpu", "--out", str(tmp_path)])
    rows = pd.read_csv(out / "bench.csv").set_index("mode")
    assert list(rows.index) == ["whole", "tiled"] and (rows["status"] == "ok").all()
    assert rows.loc["whole", "speed_vs_whole"] == 1.0 and rows.loc["whole", "memory_vs_whole"] == 1.0
    assert rows.loc["tiled", "speed_vs_whole"] == rows.loc["tiled", "mpix_per_s"] / rows.loc["whole", "mpix_per_s"]
    # each forward's own peak: whole-image activations of a 128^2 LR input take well over a megabyte
    assert (rows["forward_memory_mb"] > 1).all()


def test_self_ensemble_transforms_invert_and_keep_the_decimation_grid():
    """The 8 flips/transposes invert exactly, and after the realignment the self-ensemble of the (grid-aligned)
    bicubic baseline is bicubic itself away from the last s-1 border pixels: a flip must not shift the output."""
    from pamsr.inference import dihedral, super_resolve
    from pamsr.models import Bicubic

    x = torch.rand(1, 1, 12, 16)
    for k in range(8):
        assert torch.equal(dihedral(dihedral(x, k), k, inverse=True), x)
    for scale in (2, 4):
        plain = super_resolve(Bicubic(scale), x, scale, tiled=False)
        ensemble = super_resolve(Bicubic(scale), x, scale, tiled=False, self_ensemble=True)
        inner = (..., slice(0, -scale), slice(0, -scale))
        assert torch.allclose(ensemble[inner], plain[inner], atol=1e-5)
        unaligned = torch.stack([dihedral(Bicubic(scale)(dihedral(x, k)), k, inverse=True) for k in range(8)]).mean(0)
        assert (unaligned[inner] - plain[inner]).abs().max() > 1e-2  # without realign() the flips blur the output


def test_weight_ema_update():
    from pamsr.engine import WeightEMA

    model = torch.nn.Linear(2, 1)
    ema = WeightEMA(model, decay=0.9)
    before = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    assert torch.allclose(ema.state_dict()["weight"], 0.9 * before + 0.1 * model.weight)
