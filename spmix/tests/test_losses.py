"""Losses: PaCo closed form, class-balanced weights, balanced softmax, label queue."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from spmix.losses import ClassificationLoss, LabelQueue, PaCoLoss, effective_number_weights, soft_cross_entropy

CI = Path(__file__).resolve().parents[1] / "configs" / "ci.yaml"
COUNTS = (1113, 6705, 514, 327, 1099, 115, 142)


def _batch(seed=0, B=6, K=5, d=8):
    g = torch.Generator().manual_seed(seed)
    feats = F.normalize(torch.randn(2 * B + K, d, generator=g), dim=1)
    labels = torch.randint(0, 7, (B,), generator=g)
    all_labels = torch.cat([labels, labels, torch.randint(0, 7, (K,), generator=g)])
    return feats, all_labels, torch.randn(2 * B, 7, generator=g), labels


def test_paco_reduces_to_balanced_softmax_when_contrast_is_off():
    feats, labels, logits, _ = _batch()
    prior = torch.tensor(COUNTS, dtype=torch.float32) / sum(COUNTS)
    expected = F.cross_entropy(logits + torch.log(prior + 1e-9), labels[:12])
    for beta in (0.5, 1.0, 3.0):
        loss = PaCoLoss(COUNTS, alpha=0.0, beta=beta, gamma=0.0, temperature=0.2)(feats, labels, logits)
        assert torch.allclose(loss, expected, atol=1e-5)


def test_paco_hand_computed_single_anchor_row():
    feats, labels, logits, _ = _batch(seed=1)
    crit = PaCoLoss(COUNTS, alpha=0.05, beta=1.0, gamma=1.0, temperature=0.2)
    loss = crit(feats, labels, logits)
    assert torch.isfinite(loss)
    prior = torch.log(torch.tensor(COUNTS, dtype=torch.float32) / sum(COUNTS) + 1e-9)
    per_anchor = []
    for i in range(12):
        row = torch.cat([logits[i] + prior, feats[i] @ feats.T / 0.2])
        keep = torch.ones_like(row, dtype=torch.bool)
        keep[7 + i] = False
        log_p = row - torch.logsumexp(row[keep], 0)
        w = torch.zeros_like(row)
        w[labels[i]] = 1.0
        same = (labels == labels[i]).float() * 0.05
        same[i] = 0
        w[7:] = same
        per_anchor.append((w * log_p).sum() / w.sum())
    assert torch.allclose(loss, -torch.stack(per_anchor).mean(), atol=1e-5)


def test_paco_decreases_on_separable_toy_batch():
    torch.manual_seed(0)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    x = torch.eye(3)[labels] + 0.1 * torch.randn(6, 3)
    net = torch.nn.Linear(3, 8)
    head = torch.nn.Linear(8, 7)
    crit = PaCoLoss(COUNTS[:7], alpha=0.05)
    opt = torch.optim.SGD([*net.parameters(), *head.parameters()], lr=0.5)
    losses = []
    for _ in range(30):
        f = net(x)
        z = F.normalize(f, dim=1)
        loss = crit(torch.cat([z, z]), torch.cat([labels, labels]), torch.cat([head(f), head(f)]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0]


def test_effective_number_weights_favour_tail():
    w = effective_number_weights(COUNTS, 0.9999)
    assert abs(float(w.sum()) - 7) < 1e-4
    assert int(w.argmax()) == 5 and int(w.argmin()) == 1  # DF largest, NV smallest


def test_balanced_softmax_and_reweighting_differ_from_ce():
    logits, y = torch.randn(8, 7), torch.randint(0, 7, (8,))
    t = F.one_hot(y, 7).float()
    ce = ClassificationLoss("ce", COUNTS)(logits, t)
    assert torch.allclose(ce, F.cross_entropy(logits, y))
    prior = torch.tensor(COUNTS, dtype=torch.float32) / sum(COUNTS)
    assert torch.allclose(ClassificationLoss("balanced_softmax", COUNTS)(logits, t),
                          F.cross_entropy(logits + prior.log(), y), atol=1e-6)
    w = effective_number_weights(COUNTS)
    assert torch.allclose(soft_cross_entropy(logits, t, w), F.cross_entropy(logits, y, weight=w), atol=1e-6)


def test_label_queue_fifo():
    q = LabelQueue(4, 2)
    assert q.contents()[0].shape == (0, 2)
    q.push(torch.ones(3, 2), torch.tensor([1, 2, 3]))
    q.push(2 * torch.ones(3, 2), torch.tensor([4, 5, 6]))
    feats, labels = q.contents()
    assert feats.shape == (4, 2) and sorted(labels.tolist()) == [3, 4, 5, 6]


@pytest.mark.parametrize("dominant,uniform", [("balanced", True), ("instance", False)])
def test_paco_prior_is_the_prior_of_the_labels_fed(dominant, uniform):
    """SPMix with dominant=balanced feeds the class-balanced sampler's labels (uniform), so PaCo's log prior must be
    uniform; with the released code's rule (instance labels) it is the training-count prior."""
    from types import SimpleNamespace

    import numpy as np
    import torch

    from common.config import load_config
    from spmix.settings import Config
    from spmix.train import build_training

    labels = [1] * 60 + [0] * 10 + [4] * 10 + [2] * 5 + [3] * 3 + [6] * 2 + [5] * 2
    loaders = SimpleNamespace(primary=type("L", (), {"dataset": SimpleNamespace(labels=labels),
                                                     "__len__": lambda self: 3})())
    cfg = load_config(Config, CI, ["loss.name=paco", f"spmix.dominant={dominant}"])
    training = build_training(cfg, loaders, torch.device("cpu"), None)
    paco = training.step_module._losses[1][0]
    counts = np.bincount(labels, minlength=7)
    expected = np.full(7, 1 / 7) if uniform else counts / counts.sum()
    assert torch.allclose(paco.log_prior.exp(), torch.as_tensor(expected, dtype=torch.float32), atol=1e-6)


def test_balanced_softmax_under_class_balanced_labels_has_no_prior_shift():
    """Balanced softmax on labels drawn class-balanced would re-balance twice: its prior is uniform there."""
    import numpy as np

    from common.config import load_config
    from spmix.settings import Config
    from spmix.train import fed_label_counts

    counts = np.array([100, 600, 40, 30, 100, 10, 12])
    spmix = load_config(Config, CI, ["loss.name=balanced_softmax"])
    assert np.allclose(fed_label_counts(spmix, counts), counts.mean())
    plain = load_config(Config, CI, ["method=balanced_softmax"])
    assert np.array_equal(fed_label_counts(plain, counts), counts)
