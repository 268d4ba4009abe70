"""Losses: pCE ignore rule, pDice, L_pls, and L_uni under both KL semantics (the NaN hazard of torch >= 1.13)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from fedlppa.losses import (
    LossConfig,
    fedlppa_loss,
    kl_div_torch110,
    partial_cross_entropy,
    partial_dice_loss,
    pls_loss,
    pls_weight,
    pseudo_label,
    uni_loss,
)


def test_pce_ignores_unlabelled_and_equals_ce_without_ignore():
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 8, 8, requires_grad=True)
    target = torch.full((2, 8, 8), 2, dtype=torch.long)
    target[:, :3] = 1
    target[:, 6:] = 0
    partial_cross_entropy(logits, target, 2).backward()
    grad = logits.grad.abs().sum(1)
    assert (grad[target == 2] == 0).all() and (grad[target != 2] > 0).all()
    full = torch.randint(0, 2, (2, 8, 8))
    assert torch.allclose(partial_cross_entropy(logits, full, 2), F.cross_entropy(logits, full))
    none = partial_cross_entropy(logits, torch.full((2, 8, 8), 2), 2)
    assert none.item() == 0.0 and none.requires_grad


def test_pdice_zero_for_perfect_prediction():
    target = torch.randint(0, 3, (2, 16, 16))
    probs = F.one_hot(target, 3).permute(0, 3, 1, 2).float()
    assert partial_dice_loss(probs, target, 3).item() == pytest.approx(0.0, abs=1e-6)
    assert partial_dice_loss(1 - probs, target, 3).item() == pytest.approx(1.0, abs=1e-6)


def test_pls_symmetric_and_pseudo_label_mixes():
    torch.manual_seed(0)
    a, b = torch.randn(2, 2, 8, 8), torch.randn(2, 2, 8, 8)
    la, ya = pls_loss(a, b, 0.3, 2)
    lb, yb = pls_loss(b, a, 0.7, 2)
    assert torch.equal(ya, yb) and la.item() == pytest.approx(lb.item(), rel=1e-6)
    assert torch.equal(pseudo_label(a, b, 1.0), a.argmax(1)) and torch.equal(pseudo_label(a, b, 0.0), b.argmax(1))


def test_uni_kl_torch110_semantics():
    torch.manual_seed(0)
    x, t = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4)
    warnings.filterwarnings("ignore", message="reduction: 'mean'")
    # modern kl_div is NaN on negative targets: the hazard this option removes
    assert torch.isnan(F.kl_div(x, t, reduction="mean"))
    value = kl_div_torch110(x, t)
    assert torch.isfinite(value)
    pos = t.abs()
    assert torch.allclose(kl_div_torch110(x, pos), F.kl_div(x, pos, reduction="mean"))
    manual = torch.where(t > 0, t * (t.clamp_min(1e-30).log() - x), torch.zeros_like(x)).mean()
    assert torch.allclose(value, manual)


@pytest.mark.parametrize("kind", ["torch110", "softmax"])
def test_uni_loss_finite_for_any_sign_and_detaches_others(kind):
    torch.manual_seed(0)
    fused = [torch.randn(2, 8, 4, 4, requires_grad=True) for _ in range(3)]
    loss = uni_loss(fused, 1, kind)
    assert torch.isfinite(loss)
    loss.backward()
    assert fused[1].grad is not None and fused[0].grad is None and fused[2].grad is None
    single = [torch.randn(2, 8, 4, 4, requires_grad=True)]
    assert uni_loss(single, 0, kind).item() == 0.0


def test_uni_torch110_is_linear_in_own_feature():
    """The faithful term is linear in F_own (unbounded below); the softmax variant is not."""
    torch.manual_seed(0)
    own, other = torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2)
    f = [lambda s: uni_loss([own * s, other], 0, "torch110")]
    vals = [f[0](s).item() for s in (1.0, 2.0, 3.0)]
    assert vals[2] - vals[1] == pytest.approx(vals[1] - vals[0], rel=1e-5)


def test_gated_crf_refused():
    with pytest.raises(ValueError, match="gated_crf"):
        LossConfig(gated_crf=True)


def test_pls_weight_ramps_up_then_stays_at_beta():
    released = LossConfig()
    assert [pls_weight(released, t, 300) for t in (0, 150, 299)] == [0.5, 0.5, 0.5]  # constant as released
    ramp = LossConfig(beta_rampup=0.5)
    w = [pls_weight(ramp, t, 300) for t in range(0, 301, 10)]
    assert w[0] == pytest.approx(0.5 * math.exp(-5.0))
    assert all(b >= a for a, b in zip(w, w[1:]))  # non-decreasing
    assert pls_weight(ramp, 75, 300) == pytest.approx(0.5 * math.exp(-5.0 * 0.25))
    assert all(pls_weight(ramp, t, 300) == 0.5 for t in (150, 200, 300))
    with pytest.raises(ValueError, match="beta_rampup"):
        LossConfig(beta_rampup=1.5)


def test_fedlppa_loss_beta_override_weights_only_l_pls():
    torch.manual_seed(0)
    logits, aux = torch.randn(2, 2, 8, 8), torch.randn(2, 2, 8, 8)
    fused = [torch.randn(2, 4, 2, 2) for _ in range(3)]
    target = torch.randint(0, 3, (2, 8, 8))
    cfg = LossConfig()
    full = fedlppa_loss(logits, aux, fused, target, 0, 0.4, cfg, 2)
    zero = fedlppa_loss(logits, aux, fused, target, 0, 0.4, cfg, 2, beta=0.0)
    assert zero.pls == pytest.approx(full.pls)
    assert full.total.item() - zero.total.item() == pytest.approx(cfg.beta * full.pls, rel=1e-5)
