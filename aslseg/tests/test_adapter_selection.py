"""Adaptation network (learns to undo its corruption) and reliable pseudo-label selection."""

import numpy as np
import pytest
import torch

from aslseg.adapter import AdapterPool, build_adapter, corrupt_mask, refine, train_adapter
from aslseg.selection import binary_entropy_bits, score_slices, select
from aslseg.settings import AdapterConfig, SelectionConfig


def _disc_slices(n, size, rng):
    rows, cols = np.mgrid[:size, :size]
    images, masks, livers = [], [], []
    for _ in range(n):
        liver = ((rows - size / 2) / (size * 0.4)) ** 2 + ((cols - size / 2) / (size * 0.4)) ** 2 <= 1
        mask = np.zeros((size, size), bool)
        for _ in range(int(rng.integers(1, 3))):
            r, c = rng.uniform(size * 0.3, size * 0.7, size=2)
            mask |= (rows - r) ** 2 + (cols - c) ** 2 <= rng.uniform(2, 5) ** 2
        mask &= liver
        images.append((0.2 + 0.4 * liver - 0.2 * mask + 0.03 * rng.standard_normal((size, size))).astype(np.float32))
        masks.append(mask)
        livers.append(liver)
    return np.stack(images), np.stack(masks), np.stack(livers)


def _dice(a, b):
    return 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)


def test_corruption_changes_the_mask_but_stays_plausible():
    rng = np.random.default_rng(0)
    _, masks, livers = _disc_slices(20, 32, rng)
    cfg = AdapterConfig()
    dices = [_dice(corrupt_mask(m, lv, rng, cfg), m) for m, lv in zip(masks, livers)]
    assert 0.2 < np.mean(dices) < 0.95


def test_adapter_beats_its_corruption_in_200_steps():
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    cfg = AdapterConfig(steps=200, batch_size=8, lr=3e-3, channels=(8, 16, 32), strides=(2, 2), num_res_units=1)
    images, masks, livers = _disc_slices(48, 32, rng)
    corrupted = np.stack([corrupt_mask(m, lv, rng, cfg) for m, lv in zip(masks, livers)]).astype(np.float32)
    pool = AdapterPool(images[:32], corrupted[:32], corrupted[:32], masks[:32].astype(np.float32))
    model = build_adapter(cfg)
    losses = train_adapter(model, pool, cfg, seed=0, device=torch.device("cpu"))
    assert np.mean(losses[-20:]) < np.mean(losses[:20])
    out = refine(model, images[32:], corrupted[32:], corrupted[32:], torch.device("cpu")) > 0.5
    before = np.mean([_dice(c > 0.5, m) for c, m in zip(corrupted[32:], masks[32:])])
    after = np.mean([_dice(o, m) for o, m in zip(out, masks[32:])])
    assert after > before + 0.03, (before, after)


def _pair(agreement, size=40):
    """SSL and refined probabilities whose masks have Dice ~ ``agreement`` (two overlapping squares)."""
    ssl = np.zeros((size, size), np.float32)
    ssl[10:30, 10:20] = 0.95
    refined = np.zeros_like(ssl)
    shift = int(round(10 * (1 - agreement)))
    refined[10:30, 10 + shift:20 + shift] = 0.97
    return refined, ssl


def test_selection_on_agreements_growth_and_no_double_pick():
    pairs = [_pair(a) for a in (0.95, 0.6, 0.3)]
    empty = np.zeros((40, 40), np.float32)
    refined = np.stack([p[0] for p in pairs] + [empty, empty])
    ssl = np.stack([p[1] for p in pairs] + [empty, empty + 0.6])  # last: empty mask but SSL unsure
    score = score_slices(refined, ssl)
    assert score.agreement[0] >= 0.85 and score.agreement[1] < 0.8 and score.agreement[2] < 0.5
    assert np.isnan(score.agreement[3])
    cfg = SelectionConfig(max_fraction=1.0, max_uncertainty=0.3)
    rng = np.random.default_rng(0)
    chosen = select(score, np.arange(5), cfg, rng)
    assert chosen.tolist() == [0, 3]  # the reliable positive and one reliable negative (slice 4: SSL max 0.6)
    labelled = set()
    remaining = np.arange(5)
    for _ in range(3):
        picked = select(score, remaining, cfg, rng)
        assert not labelled & set(picked.tolist())
        labelled |= set(picked.tolist())
        remaining = np.array([i for i in remaining if i not in labelled], np.int64)
    assert labelled == {0, 3}
    capped = select(score, np.arange(5), SelectionConfig(max_fraction=0.2), rng)
    assert capped.tolist() == [0]
    assert len(select(score, np.arange(5), SelectionConfig(mode="all"), rng)) == 5
    assert len(select(score, np.arange(5), SelectionConfig(mode="random", max_fraction=1.0), rng)) == 2
    assert binary_entropy_bits(np.array([0.5]))[0] == 1.0


def test_threshold_grid_counts_and_pooled_dice():
    from aslseg.diagnose import threshold_grid
    from common.metrics import mask_dice

    truth = np.zeros((3, 8, 8), bool)
    truth[0, :4] = truth[1, :2] = True
    refined = truth.copy()
    refined[1] = False
    refined[1, :4] = True  # twice too large: Dice 2/3
    agreement, uncertainty = np.array([0.9, 0.6, np.nan]), np.array([0.1, 0.5, 0.0])
    rows = {(r["min_agreement"], r["max_uncertainty"]): r
            for r in threshold_grid(agreement, uncertainty, {"refined": refined}, truth, (0.5, 0.8), (0.3, 0.6))}
    assert rows[(0.8, 0.3)]["n"] == 1 and rows[(0.8, 0.3)]["refined_true_dice"] == 1.0
    assert rows[(0.5, 0.6)]["n"] == 2 and rows[(0.5, 0.6)]["n_with_tumour"] == 2
    assert np.isclose(rows[(0.5, 0.6)]["refined_true_dice"], mask_dice(refined[:2], truth[:2]))
    assert rows[(0.5, 0.3)]["n"] == 1


def test_quantile_rule_selects_the_top_fraction_whatever_the_absolute_scores():
    pairs = [_pair(a) for a in (0.6, 0.5, 0.4, 0.3)]  # all below the absolute threshold 0.8
    refined, ssl = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    score = score_slices(refined, ssl)
    rng = np.random.default_rng(0)
    assert len(select(score, np.arange(4), SelectionConfig(max_fraction=1.0, max_uncertainty=1.0), rng)) == 0
    cfg = SelectionConfig(rule="quantile", top_fraction=0.5, max_fraction=1.0)
    assert select(score, np.arange(4), cfg, rng).tolist() == [0, 1]  # the two best agreements
    assert select(score, np.array([1, 2, 3]), cfg, rng).tolist() == [1]  # relative to the remaining candidates
    disjoint = score_slices(np.stack([_pair(0.0)[0]] * 2), np.stack([_pair(0.0)[1]] * 2))
    assert disjoint.agreement.tolist() == [0.0, 0.0]
    assert len(select(disjoint, np.arange(2), cfg, rng)) == 0  # no overlap is never reliable


def test_gated_fusion_takes_sam_only_where_it_agrees():
    from aslseg.fusion import gated_fusion, mean_fusion

    ssl = np.zeros((1, 32, 32), bool)
    ssl[0, 4:10, 4:10] = True  # SAM slightly larger: agrees -> SAM's extent
    ssl[0, 20:26, 20:26] = True  # SAM says something else in this box: SSL kept
    sam = np.zeros((1, 32, 32), np.float32)
    sam[0, 3:10, 4:11] = 0.9
    sam[0, 20:21, 20:22] = 0.9
    sam[0, 14:16, 14:16] = 0.9  # outside every box: never used
    fused = gated_fusion(ssl, sam, min_area=4, margin=2, min_dice=0.7) > 0.5
    assert fused[0, 3:10, 4:11].all() and fused[0, 20:26, 20:26].all()
    assert not fused[0, 14:16, 14:16].any() and fused.sum() == 7 * 7 + 36
    assert np.allclose(mean_fusion(ssl.astype(np.float32), sam)[0, 14, 14], 0.45)


def test_adapter_on_real_predictions_needs_them():
    import pytest

    from aslseg.pipeline import adapter_stage
    from aslseg.settings import Config

    cfg = Config()
    cfg.adapter.training = "real"
    with pytest.raises(ValueError, match="adapter.training=real"):
        adapter_stage(None, None, cfg, seed=0, device=torch.device("cpu"))


def test_diagnose_names_a_missing_snapshot_before_any_work(tmp_path):
    from aslseg import diagnose

    round0 = tmp_path / "ssl_1800.pt"
    round0.write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="--adapter-from .*ssl_600.pt"):
        diagnose.main(["--config", "configs/ci.yaml", "--round0", str(round0), "--out", str(tmp_path / "d"),
                       "--adapter-from", str(tmp_path / "ssl_600.pt")])
    assert not (tmp_path / "d").exists()
