"""Recipe and metric checks (official modules/scheduler.py, utils/metrics.py, utils/peme.py): per-iteration cosine
LR, AUC on logits, quadratic and unweighted kappa, PPE/PME."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from fpt_plus.engine import compute_metrics, cosine_factor, make_scheduler, pme, ppe


def test_cosine_schedule_per_iteration() -> None:
    assert cosine_factor(0, 20) == 1.0
    assert cosine_factor(10, 20) == pytest.approx(0.5)
    assert cosine_factor(19.999, 20) < 1e-6
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=1e-3)
    sched = make_scheduler(opt, epochs=20, steps_per_epoch=10)
    for _ in range(35):  # epoch 3, step 5 of 10 -> e = 3.5
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.5 * (1 + np.cos(np.pi * 3.5 / 20)))


def test_metrics_auc_on_logits_qwk_and_kappa() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    logits = rng.normal(size=(60, 3)) + np.eye(3)[labels] * 1.5
    m = compute_metrics(labels, logits, 3)
    expected = np.mean([roc_auc_score(labels == c, logits[:, c]) for c in range(3)])
    assert m["auc"] == pytest.approx(expected)
    assert m["qwk"] == pytest.approx(cohen_kappa_score(labels, logits.argmax(1), weights="quadratic"))
    assert m["kappa"] == pytest.approx(cohen_kappa_score(labels, logits.argmax(1)))
    assert m["kappa"] != pytest.approx(m["qwk"])
    assert 0.5 < m["auc"] <= 1.0 and m["auc"] != pytest.approx(m["auc_prob"], abs=1e-12)


def test_ppe_pme_match_readme_values() -> None:
    assert ppe(87.12, 0.0103) == pytest.approx(86.73, abs=0.01)
    assert pme(87.12, 736, 23128) == pytest.approx(85.94, abs=0.01)
    assert pme(86.40, 1824, 23128) == pytest.approx(83.60, abs=0.01)
