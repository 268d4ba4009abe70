"""Tiled inference (official forward_tile): equality with whole-image inference and correct overlap averaging."""

from __future__ import annotations

import numpy as np
import pytest
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


def test_bench_mode_grid_from_fresh_processes(tmp_path):
    """``make bench-pamsr`` on CPU: the reference (whole, fp32, eager) first, each mode in its own process, ratios
    to the reference of the same run; bf16 is measured only where torch reports support, else marked."""
    import pandas as pd

    from pamsr.bench import main as bench_main
    from pamsr.inference import bf16_native

    out = bench_main(["--model", "cpu", "--sizes", "128", "--overlaps", "8", "--precisions", "fp32,bf16",
                      "--repeats", "1", "--device", "cpu", "--out", str(tmp_path)])
    rows = pd.read_csv(out / "bench.csv")
    ref = rows.iloc[0]
    assert ref["overlap"] != ref["overlap"] and ref["precision"] == "fp32" and ref["speed_vs_reference"] == 1.0
    assert len(rows) == 4  # reference + tiled 8 fp32 + {whole, tiled 8} bf16
    bf16 = rows[rows["precision"] == "bf16"]
    if bf16_native(torch.device("cpu")):
        assert (bf16["status"] == "ok").all()
    else:
        assert bf16["status"].str.startswith("unsupported").all()
    ok = rows[rows["status"] == "ok"]
    assert (ok["forward_memory_mb"] > 0).all()
    tiled = ok[ok["overlap"] == 8].iloc[0]
    assert tiled["speed_vs_reference"] == pytest.approx(tiled["mpix_per_s"] / ref["mpix_per_s"])


def test_bench_times_a_tile_subset_and_extra_modes(tmp_path):
    """``--timed-tiles``: the first N tiles are timed and the per-tile time extrapolated to every tile of the image;
    ``--modes`` adds single modes (here a second size for the memory-against-size rows)."""
    import pandas as pd

    from pamsr.bench import main as bench_main
    from pamsr.bench import parse_mode

    out = bench_main(["--model", "cpu", "--sizes", "128", "--overlaps", "8", "--precisions", "fp32", "--whole",
                      "reference", "--tile", "32", "--timed-tiles", "2", "--tile-batch", "1",
                      "--modes", "256:8:fp32:fused:off", "--device", "cpu", "--threads", "1", "--clock", "cpu",
                      "--check-fp32", "--out", str(tmp_path)])
    rows = pd.read_csv(out / "bench.csv")
    assert list(rows["size"]) == [128, 128, 256] and rows["status"].eq("ok").all()
    assert rows.loc[0, "timing"] == "whole image" and rows["clock"].eq("cpu").all()
    assert rows["params"].eq(113_709).all()
    tiled = rows.iloc[1:]
    assert list(tiled["tiles_total"]) == [9, 25] and list(tiled["tiles_timed"]) == [2, 2]  # LR 64: starts 0, 24, 32
    assert np.allclose(tiled["seconds"], tiled["seconds_measured"] * tiled["tiles_total"] / 2)
    assert tiled["timing"].str.startswith("first 2 of").all()
    assert (tiled["max_abs_diff_vs_fp32_eager"] < 1e-4).all()  # fp32 (materialised or fused): the same network
    assert parse_mode("1024:whole:bf16:default:freezing") == {"size": 1024, "overlap": None, "precision": "bf16",
                                                             "attention": "default", "compile": "freezing"}
    with pytest.raises(ValueError, match="size:overlap"):
        parse_mode("1024:8:fp32")


def test_forward_tiled_max_tiles_stops_early_on_full_size_buffers():
    class Up(torch.nn.Module):
        def forward(self, x):
            return F.interpolate(x, scale_factor=2, mode="nearest")

    x = torch.full((1, 1, 64, 64), 0.5)
    out = forward_tiled(Up(), x, 2, tile=32, overlap=0, batch=1, max_tiles=1)  # tiles (0,0), (0,32), ...
    assert out.shape == (1, 1, 128, 128)
    assert torch.all(out[..., :64, :64] == 0.5) and torch.all(out[..., 64:, :] == 0)


def test_attention_switch_changes_the_path_not_the_result():
    from pamsr.inference import set_attention

    torch.manual_seed(0)
    model = SwinIR(2, embed_dim=16, depths=[2], num_heads=[2], num_feat=8).eval()
    x = torch.rand(1, 1, 16, 16)
    assert set_attention(model, "materialised") == 2
    with torch.no_grad():
        slow = model(x)
        set_attention(model, "fused")
        assert all(m.fused_attn for m in model.modules() if hasattr(m, "fused_attn"))
        assert torch.allclose(model(x), slow, atol=1e-5)


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
