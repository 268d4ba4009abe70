"""SPMix mixing rule (paper Sec. II-B, Eq. 1-3) and the mixing baselines."""

import numpy as np
import pytest
import torch

from spmix.mixing import (
    cmo,
    cutmix,
    mix_pixels,
    mix_tokens,
    mixing_ratio,
    mixup,
    order_pair,
    patch_scores,
    ratio_map,
    saliencymix,
)


def _blob_saliency(B=3, H=64, W=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    sal = torch.rand(B, 1, H, W, generator=g) * 0.1
    sal[:, :, 16:32, 32:48] += 1.0
    return sal


def test_patch_scores_range_and_extremes():
    sal = _blob_saliency()
    s = patch_scores(sal, 16, generator=torch.Generator().manual_seed(0))
    assert s.shape == (3, 16)
    assert torch.all(s >= 0.5) and torch.all(s <= 1.0)
    assert torch.allclose(s.min(1).values, torch.full((3,), 0.5)) and torch.allclose(s.max(1).values, torch.ones(3))
    assert torch.all(s.argmax(1) == 1 * 4 + 2)  # patch row 1, col 2 holds the blob


def test_patch_scores_invariant_to_affine_rescaling():
    sal = _blob_saliency()
    a = patch_scores(sal, 16, generator=torch.Generator().manual_seed(5))
    b = patch_scores(3.0 * sal + 7.0, 16, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError, match="multiple of the patch"):
        patch_scores(torch.rand(1, 1, 40, 40), 16)


def test_ratio_range_lesion_and_background():
    sal_a, sal_b = _blob_saliency(seed=1), torch.rand(3, 1, 64, 64) * 0.1
    sal_b[:, :, 48:64, 0:16] += 1.0
    r = mixing_ratio(patch_scores(sal_a, 16, 0.0), patch_scores(sal_b, 16, 0.0), alpha=0.8)
    assert torch.all(r >= 0.5) and torch.all(r <= 0.8 + 1e-6)
    assert torch.allclose(r[:, 6], torch.full((3,), 0.8))   # lesion of A
    assert torch.allclose(r[:, 12], torch.full((3,), 0.8))  # lesion of B
    assert r[:, [0, 15]].max() < 0.65                        # flat background of both: close to 0.5
    s = torch.rand(2, 16) * 0.5 + 0.5
    assert torch.allclose(mixing_ratio(s, s, 0.5), torch.full_like(s, 0.5))
    assert torch.allclose(mixing_ratio(s, s, 1.0), s)
    with pytest.raises(ValueError):
        mixing_ratio(s, s, 0.4)


def test_mix_tokens_broadcast_and_identity():
    za, zb = torch.randn(2, 16, 8), torch.randn(2, 16, 8)
    r = torch.rand(2, 16) * 0.3 + 0.5
    assert torch.equal(mix_tokens(za, zb, torch.ones(2, 16)), za)
    assert torch.allclose(mix_tokens(za, torch.zeros_like(zb), r), r[..., None] * za)
    mixed = mix_tokens(za, zb, r)
    assert torch.allclose(mixed[1, 3], r[1, 3] * za[1, 3] + (1 - r[1, 3]) * zb[1, 3])


def test_mix_pixels_follows_patch_ratios():
    xa, xb = torch.ones(1, 3, 32, 32), torch.zeros(1, 3, 32, 32)
    r = torch.tensor([[0.8, 0.5, 0.6, 0.7]])
    out = mix_pixels(xa, xb, r, 16)
    assert torch.allclose(out[0, :, :16, :16], torch.full((3, 16, 16), 0.8))
    assert torch.allclose(out[0, :, 16:, 16:], torch.full((3, 16, 16), 0.7))
    assert ratio_map(r, (2, 2), 16).shape == (1, 1, 32, 32)


@pytest.mark.parametrize("rule", ["balanced", "instance"])
def test_label_always_from_dominant_image(rule):
    inst = (torch.zeros(4, 3, 8, 8), torch.zeros(4, 1, 8, 8), torch.tensor([1, 1, 1, 4]))  # head (NV/BKL)
    bal = (torch.ones(4, 3, 8, 8), torch.ones(4, 1, 8, 8), torch.tensor([5, 6, 3, 0]))     # tail
    pair = order_pair(inst, bal, rule)
    expected = bal if rule == "balanced" else inst
    assert torch.equal(pair.y_dom, expected[2]) and torch.equal(pair.x_dom, expected[0])
    with pytest.raises(ValueError, match="dominant"):
        order_pair(inst, bal, "tail")


def test_tail_image_dominates_every_token():
    """The tail image must not disappear from the mixed sample under the balanced rule (a pitfall of long-tail
    class mixing reported upstream)."""
    z_tail, z_head = torch.ones(2, 16, 4), -torch.ones(2, 16, 4)
    r = mixing_ratio(patch_scores(torch.rand(2, 1, 64, 64), 16), patch_scores(torch.rand(2, 1, 64, 64), 16), 0.8)
    mixed = mix_tokens(z_tail, z_head, r)
    assert torch.all(mixed >= 0)  # r >= 0.5 everywhere -> the dominant sign wins on every token


def test_baseline_targets_are_distributions():
    rng = np.random.default_rng(0)
    x, y = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 4, 5])
    sal = torch.rand(6, 1, 32, 32)
    for xm, t in (mixup(x, y, 7, 1.0, rng), cutmix(x, y, 7, 1.0, rng), saliencymix(x, sal, y, 7, 1.0, rng),
                  cmo(x, y, x.flip(0), y.flip(0), 7, 1.0, 1.0, rng)):
        assert xm.shape == x.shape and t.shape == (6, 7)
        assert torch.allclose(t.sum(1), torch.ones(6)) and torch.all(t >= 0)
    xm, t = cmo(x, y, x, y, 7, 1.0, 0.0, rng)  # probability 0: untouched, one-hot
    assert torch.equal(xm, x) and torch.equal(t.argmax(1), y)
