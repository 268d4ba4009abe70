"""Engine-level behaviour of the training components: the SPMix label rule inside ``step_spmix``, RandAugment's
geometric ops on image and saliency in the shipped pipeline, group recalls, the warm-up + cosine schedule,
SaliencyMix's box on the saliency peak and CMO's epoch window."""

from pathlib import Path

import numpy as np
import pytest
import torch

from common.config import load_config
from spmix.settings import CLASSES, Config

CI = Path(__file__).resolve().parents[1] / "configs" / "ci.yaml"


def _ctx(cfg, epoch=0):
    from spmix.engine import StepContext, start_epoch

    ctx = StepContext(num_classes=7, epoch=0, epochs=cfg.optim.epochs, rng=None, generator=torch.Generator(), cfg=cfg)
    start_epoch(ctx, epoch, cfg.seed)
    return ctx


def _batch(labels, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = len(labels)
    return {"image": torch.randn(n, 3, size, size, generator=g), "sal": torch.rand(n, 1, size, size, generator=g),
            "label": torch.tensor(labels)}


@pytest.mark.parametrize("rule", ["balanced", "instance"])
def test_step_spmix_returns_the_dominant_images_hard_label(rule):
    from spmix.engine import step_spmix
    from spmix.model import build_model

    cfg = load_config(Config, CI, [f"spmix.dominant={rule}"])
    model = build_model(cfg.model, 7, 64).eval()
    inst, bal = _batch([1, 1, 1, 4]), _batch([5, 6, 3, 0], seed=1)
    out = step_spmix(model, inst, bal, _ctx(cfg))
    expected = bal["label"] if rule == "balanced" else inst["label"]
    assert torch.equal(out.labels, expected)
    assert torch.equal(out.targets, torch.nn.functional.one_hot(expected, 7).float())  # hard, never mixed


def test_step_spmix_ratio_keeps_the_dominant_image_at_least_half():
    from spmix.engine import step_spmix
    from spmix.model import build_model

    cfg = load_config(Config, CI, [])
    ctx = _ctx(cfg)
    step_spmix(build_model(cfg.model, 7, 64).eval(), _batch([1, 1, 1, 4]), _batch([5, 6, 3, 0], seed=1), ctx)
    r = ctx.last_ratio["ratio"]
    assert ctx.last_ratio["active"] and r.shape == (4, 16)
    assert float(r.min()) >= 0.5 - 1e-6 and float(r.max()) <= cfg.spmix.alpha + 1e-6


def test_randaugment_geometry_is_identical_on_image_and_saliency():
    """The shipped q view (crop, flip, RandAugment n=2 m=10 geometric ops) with colour jitter off: the saliency map
    is a copy of the red channel, so after the transform it must still equal the (de-normalised) red channel."""
    from spmix.data import ISIC_MEAN, ISIC_STD, train_transforms
    from spmix.settings import AugmentConfig

    aug = AugmentConfig(crop_scale=(0.3, 1.0), randaug_n=2, randaug_magnitude=10, randaug_ops="geometric",
                        color_jitter=0.0)
    q, _ = train_transforms(64, aug)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:72, :96]
    image = np.stack([(40 + 2 * xx + yy) % 250 + 3, np.full_like(xx, 90), np.full_like(xx, 60)], -1).astype(np.uint8)
    moved = 0
    for k in range(12):
        q.set_random_seed(int(rng.integers(1 << 30)))
        out = q(image=image, sal=image[..., 0].astype(np.float32) / 255.0)
        red = out["image"][0].numpy() * ISIC_STD[0] + ISIC_MEAN[0]
        sal = out["sal"]
        sal = sal.numpy() if torch.is_tensor(sal) else sal
        valid = sal > 0.02  # outside: RandAugment's fill (image: ISIC mean colour, saliency: 0)
        err = np.abs(red - sal)[valid]
        assert valid.mean() > 0.3 and np.quantile(err, 0.9) < 3 / 255, k
        moved += valid.mean() < 0.999  # some draws rotated/sheared/translated content out of the frame
    assert moved >= 3  # the geometric ops did run


def test_group_recalls_follow_the_config_groups():
    from spmix.engine import group_metrics

    y = np.repeat(np.arange(7), 10)
    pred = y.copy()
    nv, df, vasc, mel = (CLASSES.index(c) for c in ("NV", "DF", "VASC", "MEL"))
    pred[y == df] = nv                       # DF recall 0
    pred[np.flatnonzero(y == vasc)[:5]] = nv  # VASC recall 0.5
    pred[np.flatnonzero(y == mel)[:2]] = nv   # MEL recall 0.8
    logits = np.eye(7)[pred] * 5.0
    groups = {"head": ("NV",), "medium": ("MEL", "BKL", "BCC"), "tail": ("AKIEC", "VASC", "DF")}
    m = group_metrics(y, logits, groups)
    assert m["head_recall"] == pytest.approx(1.0)
    assert m["medium_recall"] == pytest.approx((0.8 + 1 + 1) / 3)
    assert m["tail_recall"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert m["balanced_accuracy"] == pytest.approx(np.mean([0.8, 1, 1, 1, 1, 0, 0.5]))
    other = group_metrics(y, logits, {"tail": ("DF",), "head": ("NV", "VASC")})
    assert other["tail_recall"] == 0.0 and other["head_recall"] == pytest.approx(0.75)
    absent = group_metrics(y[y != df], logits[y != df], groups)  # a class absent from the labels is left out
    assert absent["tail_recall"] == pytest.approx(0.75)


def test_warmup_then_cosine_schedule_per_iteration():
    from spmix.train import warmup_cosine

    f = warmup_cosine(total_steps=100, warmup_steps=10)
    assert [f(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5)                     # half way through the cosine part
    assert f(99) == pytest.approx(0.5 * (1 + np.cos(np.pi * 89 / 90)))
    assert all(f(s) >= f(s + 1) for s in range(10, 99))    # monotone after warm-up
    assert warmup_cosine(50, 0)(0) == pytest.approx(1.0)


def test_saliencymix_box_is_centred_on_the_sources_saliency_peak():
    from spmix.mixing import saliencymix

    B, H, W = 4, 64, 64
    x = torch.stack([torch.full((3, H, W), float(i + 1)) for i in range(B)])
    sal = torch.zeros(B, 1, H, W)
    peaks = [(20, 30), (40, 12), (32, 32), (25, 45)]
    for i, (r, c) in enumerate(peaks):
        sal[i, 0, r, c] = 1.0
    rng = np.random.default_rng(3)
    for _ in range(5):
        out, t = saliencymix(x, sal, torch.arange(B), 7, alpha=1.0, rng=rng)
        for i in range(B):
            pasted = (out[i, 0] != i + 1).nonzero()
            if len(pasted) == 0:
                continue
            src = int(out[i, 0, pasted[0, 0], pasted[0, 1]].item()) - 1
            (y0, x0), (y1, x1) = pasted.min(0).values.tolist(), pasted.max(0).values.tolist()
            r, c = peaks[src]
            if y0 > 0 and y1 < H - 1:   # box not clipped by the border: centred on the peak (+-1 px)
                assert abs((y0 + y1 + 1) / 2 - r) <= 1
            if x0 > 0 and x1 < W - 1:
                assert abs((x0 + x1 + 1) / 2 - c) <= 1
            assert y0 <= r <= y1 and x0 <= c <= x1
            area = len(pasted) / (H * W)
            assert t[i, src] == pytest.approx(area) and t[i, i] == pytest.approx(1 - area)


def test_cmo_mixes_only_inside_its_epoch_window():
    from spmix.engine import step_cmo

    cfg = load_config(Config, CI, ["method=cmo", "optim.epochs=10", "baselines.cmo_prob=1.0",
                                   "baselines.cmo_start_epoch=3", "baselines.cmo_stop_before_end=2"])

    class Identity(torch.nn.Module):
        def forward(self, x):
            return x

    inst, bal = _batch([1, 1, 1, 1]), _batch([5, 6, 3, 0], seed=1)
    mixed = []
    for epoch in range(10):
        out = step_cmo(Identity(), inst, bal, _ctx(cfg, epoch))
        mixed.append(not torch.equal(out.logits, inst["image"]))
        if not mixed[-1]:
            assert torch.equal(out.targets, torch.nn.functional.one_hot(inst["label"], 7).float())
    assert mixed == [False, False, False, True, True, True, True, True, False, False]
