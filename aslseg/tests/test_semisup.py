"""Segmenter and SSL paradigms: parameter count, BCP rectangle / mixing / loss weights, EMA, uncertainty mask."""

import numpy as np
import pytest
import torch

from aslseg.semisup import (
    SEGMENTER_PARAMS,
    SSLBatch,
    SSLTrainer,
    build_segmenter,
    ema_update,
    filter_components,
    generate_mask,
    masked_dice_loss,
    mix_loss,
    pseudo_labels,
    sigmoid_rampup,
    uncertainty_mask,
)
from aslseg.settings import ModelConfig, OptimConfig, SSLConfig


def test_segmenter_parameter_count_on_meta_device():
    with torch.device("meta"):
        model = build_segmenter(ModelConfig())
    assert sum(p.numel() for p in model.parameters()) == SEGMENTER_PARAMS == 1_625_161


def test_generate_mask_is_one_zero_rectangle_of_two_thirds():
    rng = np.random.default_rng(0)
    for h, w in [(64, 64), (256, 256), (48, 80)]:
        mask = generate_mask(h, w, rng).numpy()
        zeros = np.argwhere(mask == 0)
        (r0, c0), (r1, c1) = zeros.min(0), zeros.max(0)
        assert (r1 - r0 + 1, c1 - c0 + 1) == (int(h * 2 / 3), int(w * 2 / 3))
        assert (mask[r0:r1 + 1, c0:c1 + 1] == 0).all() and (mask == 0).sum() == len(zeros)
        assert set(np.unique(mask)) == {0, 1}


def test_bcp_self_training_mix_composition_and_weights():
    """Student inputs are unlabelled-a outside / labelled-a inside and labelled-b outside / unlabelled-b inside; the
    loss weights the pseudo-labelled region by u_weight."""
    cfg = SSLConfig(method="bcp", pretrain_iters=0, self_iters=10, min_area=0)
    trainer = SSLTrainer(cfg, OptimConfig(batch_size=4, labelled_bs=2), torch.device("cpu"))
    trainer.start_self_training()
    seen = []
    trainer.student.register_forward_hook(lambda m, i, o: seen.append(i[0].detach().clone()))
    x_l = torch.full((2, 1, 32, 32), 1.0)
    x_l[1] = 2.0
    x_u = torch.full((2, 1, 32, 32), -1.0)
    x_u[1] = -2.0
    batch = SSLBatch(x_l, torch.zeros(2, 32, 32, dtype=torch.long), x_u)
    rng = np.random.default_rng(5)
    mask = generate_mask(32, 32, np.random.default_rng(5)).float()
    trainer.step(0, batch, rng)
    net_in = seen[-1]
    assert torch.equal(net_in[0, 0], -1.0 * mask + 1.0 * (1 - mask))   # unlabelled-a outside, labelled-a inside
    assert torch.equal(net_in[1, 0], 2.0 * mask + -2.0 * (1 - mask))   # labelled-b outside, unlabelled-b inside

    logits = torch.randn(1, 2, 32, 32)
    gt = torch.randint(0, 2, (1, 32, 32))
    other = 1 - gt
    m = generate_mask(32, 32, np.random.default_rng(1))
    d_full, ce_full = mix_loss(logits, gt, other, m, u_weight=0.5)
    d_zero, ce_zero = mix_loss(logits, gt, other, m, u_weight=0.0)
    d_img = masked_dice_loss(logits.softmax(1), gt, m.float()[None])
    d_patch = masked_dice_loss(logits.softmax(1), other, 1 - m.float()[None])
    assert torch.allclose(d_full, d_img + 0.5 * d_patch) and torch.allclose(d_zero, d_img)
    d_swap, _ = mix_loss(logits, gt, other, m, u_weight=0.5, unlabelled_image=True)
    assert torch.allclose(d_swap, 0.5 * d_img + d_patch)
    assert ce_full > ce_zero


def test_bcp_pretrain_phase_switch_copies_teacher_and_ema_follows():
    cfg = SSLConfig(method="bcp", pretrain_iters=2, self_iters=2, min_area=0)
    trainer = SSLTrainer(cfg, OptimConfig(batch_size=4, labelled_bs=2), torch.device("cpu"))
    batch = SSLBatch(torch.randn(2, 1, 32, 32), torch.randint(0, 2, (2, 32, 32)), torch.randn(2, 1, 32, 32))
    rng = np.random.default_rng(0)
    for it in range(2):
        trainer.step(it, batch, rng)
        assert trainer.phase == "pretrain"
    before = {k: v.clone() for k, v in trainer.student.state_dict().items()}
    trainer.step(2, batch, rng)
    assert trainer.phase == "self"
    for k, t in trainer.teacher.state_dict().items():  # teacher = 0.99 pretrained + 0.01 updated student
        s = trainer.student.state_dict()[k]
        if t.dtype.is_floating_point:
            assert torch.allclose(t, 0.99 * before[k] + 0.01 * s, atol=1e-6)


def test_ema_update_formula():
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    wa, wb = a.weight.detach().clone(), b.weight.detach().clone()
    ema_update(a, b, 0.9)
    assert torch.allclose(a.weight, 0.9 * wa + 0.1 * wb)


def test_filter_components_keeps_every_lesion_above_min_area():
    mask = np.zeros((32, 32), bool)
    mask[2:6, 2:6] = True      # 16 px
    mask[10:13, 20:23] = True  # 9 px
    mask[25, 25] = True        # 1 px speck
    out = filter_components(mask, 9)
    assert out[2:6, 2:6].all() and out[10:13, 20:23].all() and not out[25, 25]
    logits = torch.zeros(1, 2, 32, 32)
    logits[0, 1][torch.from_numpy(mask)] = 5.0
    assert pseudo_labels(logits, 9).sum() == 25


def test_uncertainty_mask_and_rampup():
    confident = torch.tensor([0.99, 0.01]).view(1, 1, 2, 1, 1).expand(4, 1, 2, 2, 2)
    split = torch.tensor([0.5, 0.5]).view(1, 1, 2, 1, 1).expand(4, 1, 2, 2, 2)
    ent_c, mask_c = uncertainty_mask(confident, 0.75 * np.log(2))
    ent_s, mask_s = uncertainty_mask(split, 0.75 * np.log(2))
    assert mask_c.all() and not mask_s.any()
    assert torch.allclose(ent_s, torch.full_like(ent_s, np.log(2)), atol=1e-4)
    assert sigmoid_rampup(0, 40) == pytest.approx(np.exp(-5)) and sigmoid_rampup(40, 40) == 1.0


@pytest.mark.parametrize("method", ["bcp", "mean_teacher", "ua_mt", "supervised"])
def test_every_method_steps_with_finite_loss(method):
    cfg = SSLConfig(method=method, pretrain_iters=1, self_iters=2, min_area=4, uncertainty_passes=2)
    trainer = SSLTrainer(cfg, OptimConfig(batch_size=4, labelled_bs=2), torch.device("cpu"))
    batch = SSLBatch(torch.randn(2, 1, 32, 32), torch.randint(0, 2, (2, 32, 32)), torch.randn(2, 1, 32, 32))
    rng = np.random.default_rng(0)
    for it in range(3):
        out = trainer.step(it, batch, rng)
        assert np.isfinite(out["loss"])


def test_nan_loss_raises():
    trainer = SSLTrainer(SSLConfig(method="supervised"), OptimConfig(batch_size=4, labelled_bs=2),
                         torch.device("cpu"))
    batch = SSLBatch(torch.full((2, 1, 32, 32), float("nan")), torch.zeros(2, 32, 32, dtype=torch.long),
                     torch.zeros(2, 1, 32, 32))
    with pytest.raises(FloatingPointError, match="non-finite"):
        trainer.step(0, batch, np.random.default_rng(0))


def test_poly_lr_decays_over_the_whole_horizon_and_survives_the_bcp_phase_switch():
    optim = OptimConfig(lr=0.01, batch_size=4, labelled_bs=2, lr_schedule="poly", lr_power=0.9)
    trainer = SSLTrainer(SSLConfig(pretrain_iters=2, self_iters=2), optim, torch.device("cpu"), horizon=10)
    for it, expected in ((0, 0.01), (5, 0.01 * 0.5 ** 0.9), (9, 0.01 * 0.1 ** 0.9)):
        trainer._set_lr(it)
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(expected)
    trainer.start_self_training()  # fresh SGD (official BCP), same schedule position
    trainer._set_lr(5)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * 0.5 ** 0.9)
    constant = SSLTrainer(SSLConfig(pretrain_iters=2, self_iters=2), OptimConfig(batch_size=4, labelled_bs=2),
                          torch.device("cpu"))
    constant._set_lr(3)
    assert constant.optimizer.param_groups[0]["lr"] == 0.01
