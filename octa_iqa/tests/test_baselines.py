"""The supervised upper bound (same initialisation as UNO-QA, frozen modules, validation-selected epoch) and the
progress bars that ``runtime.progress`` switches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from octa_iqa import baselines
from octa_iqa.model import LowQualityRepresentation, build_backbone
from octa_iqa.settings import ModelConfig


def _uno_backbone(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_backbone(ModelConfig(backbone="resnet10t", pretrained="none"))


def test_supervised_net_starts_from_unoqa_backbone_and_freezes_the_stem(make_config, tmp_path):
    """UNO-QA's backbone weights (BatchNorm statistics included) are loaded exactly; modules before
    ``supervised_train_from`` get no gradient and keep their BatchNorm statistics in training mode."""
    source = _uno_backbone(3)
    source.bn1.running_mean.add_(0.5)  # a state that only a real load reproduces
    cfg = make_config(tmp_path, "baselines.supervised_train_from=layer2")
    net = baselines.build_supervised(source.state_dict(), cfg)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(net.backbone.state_dict()[key], value, rtol=0, atol=0)
    assert net.head.in_features == 2 * sum(source.feature_info.channels())
    net.train()
    assert not net.backbone.bn1.training and not net.backbone.layer1.training and net.backbone.layer2.training
    before = net.backbone.bn1.running_mean.clone()
    logits = net(torch.rand(4, 3, 64, 64))
    assert logits.shape == (4, 3)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 0])).backward()
    torch.testing.assert_close(net.backbone.bn1.running_mean, before, rtol=0, atol=0)
    assert all(p.grad is None for name in ("conv1", "bn1", "layer1")
               for p in getattr(net.backbone, name).parameters())
    trained = list(net.backbone.layer2.parameters()) + list(net.backbone.layer3.parameters())
    assert all(p.grad is not None for p in trained)  # (timm zero-inits each block's last BN scale: some grads are 0)
    assert sum(float(p.grad.abs().sum()) for p in trained) > 0
    assert net.head.weight.grad.abs().sum() > 0


def test_supervised_train_from_must_name_a_backbone_module(make_config, tmp_path):
    cfg = make_config(tmp_path, "baselines.supervised_train_from=layer9")
    with pytest.raises(ValueError, match="layer9.*layer2"):
        baselines.build_supervised(_uno_backbone().state_dict(), cfg)


def test_supervised_keeps_the_epoch_of_lowest_validation_loss(trained, make_config, tmp_path, capsys):
    """Every epoch is logged with its validation loss; the returned model is the one of the lowest: scored on the
    validation part itself, its class-weighted loss is the minimum of the log (whichever epoch that was)."""
    import re

    from sklearn.model_selection import train_test_split

    from octa_iqa.data import load_records

    cfg = make_config(tmp_path, f"data.root={trained[0].data.root}", "baselines.supervised_epochs=4",
                      "baselines.supervised_patience=2", "baselines.supervised_lr=3e-3", "runtime.progress=false")
    records = load_records(cfg.data, "train")
    _, val = train_test_split(records, test_size=cfg.baselines.supervised_val_fraction, random_state=cfg.seed,
                              stratify=[r.label for r in records])
    out = baselines.supervised(_uno_backbone().state_dict(), records, val, cfg, torch.device("cpu"))
    log = capsys.readouterr().out
    vals = [float(v) for v in re.findall(r"\[supervised\] epoch \d+/4 .* val=([0-9.]+)", log)]
    assert 2 <= len(vals) <= 4, log
    p2 = 1.0 - out.score
    probs = np.stack([out.ug_score * (1 - p2), (1 - out.ug_score) * (1 - p2), p2], axis=1)
    labels = np.array([r.label for r in val])
    counts = np.bincount([r.label for r in records], minlength=3)
    weight = counts.sum() / counts / 3
    loss = -(weight[labels] * np.log(np.maximum(probs[np.arange(len(val)), labels], 1e-8))).sum() / weight[labels].sum()
    assert loss == pytest.approx(min(vals), abs=5e-4), (loss, vals)
    assert set(out.pred) <= {0, 1, 2} and np.allclose(probs.sum(1), 1)


def _batches(n: int, size: int = 32) -> list[dict]:
    return [{"image": torch.rand(1, 3, size, size), "label": torch.tensor([2])} for _ in range(n)]


@pytest.mark.parametrize("progress", [True, False])
def test_runtime_progress_switches_every_bar(progress, capsys):
    """Adaptor steps, scoring and clustering show a tqdm bar with ``runtime.progress`` and none without it."""
    from octa_iqa.cluster import cluster_non_outstanding
    from octa_iqa.engine import score_loader, train_one_epoch
    from octa_iqa.settings import ClusterConfig, LossConfig

    model = LowQualityRepresentation(_uno_backbone(), 8)
    model.set_bank(torch.randn(4, 24))
    model.set_term_stats(np.zeros(3), np.ones(3))
    optimizer = torch.optim.Adam(model.adaptors.parameters(), lr=1e-3)
    train_one_epoch(model, _batches(8), optimizer, LossConfig(), torch.device("cpu"), progress=progress)
    score_loader(model, _batches(4), torch.device("cpu"), progress=progress)
    rng = np.random.default_rng(0)
    cluster_non_outstanding(rng.normal(size=(20, 6)), rng.normal(size=(20, 4)), ClusterConfig(), progress=progress)
    err = capsys.readouterr().err
    for bar in ("adaptor steps", "scoring", "clustering"):
        assert (bar in err) == progress, (bar, err[-500:])
