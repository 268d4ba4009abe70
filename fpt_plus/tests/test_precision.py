"""``model.lpm.amp``: ``auto`` decides bf16 at run time from the device (both branches, by monkeypatching what the
CPU reports), the decision reaches the preload cache, and a bf16 LPM gives the fp32 AUC at reduced scale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from common import runtime
from fpt_plus.engine import compute_metrics, prepare_batch
from fpt_plus.models import lpm as lpm_module
from fpt_plus.models.factory import build_model
from fpt_plus.models.lpm import native_bf16, resolve_lpm_amp
from fpt_plus.pipeline import build_dataset, make_loader, prepare_data, run_preload

CPU = torch.device("cpu")


@pytest.mark.parametrize(("support", "expected"), [
    ("native", "bf16"),
    ("emulated", "off"),  # oneDNN emulates bf16 on plain AVX-512: slower than fp32
    ("none", "off"),
])
def test_auto_is_bf16_only_on_native_bf16_units(monkeypatch, support: str, expected: str) -> None:
    monkeypatch.setattr(lpm_module, "bf16_support", lambda device: support)
    assert native_bf16(CPU) is (expected == "bf16")
    assert resolve_lpm_amp("auto", CPU) == expected
    assert resolve_lpm_amp("off", CPU) == "off" and resolve_lpm_amp("bf16", CPU) == "bf16"


def test_this_machine_decides_auto_from_what_torch_reports() -> None:
    assert resolve_lpm_amp("auto", CPU) == ("bf16" if runtime.bf16_support(CPU) == "native" else "off")


def _cache(cfg, bundle, native: bool, monkeypatch, tmp_path: Path, name: str):
    monkeypatch.setattr(lpm_module, "bf16_support", lambda device: "native" if native else "emulated")
    return run_preload(cfg(f"data.preload_dir={tmp_path / name}"), bundle)


def test_auto_decision_reaches_the_cache_and_bf16_keeps_the_auc(ci_root: Path, tmp_path: Path, make_cfg,
                                                                monkeypatch) -> None:
    """With native bf16 reported, ``auto`` preloads under bf16 (meta says so, keys differ from fp32); a model
    fitted on the fp32 cache scores the same AUC on either cache (reduced scale: the ci train split)."""
    def cfg(*extra: str):
        return make_cfg(ci_root, "model.lpm.amp=auto", "model.fusion_dropout=0", *extra)

    bundle = prepare_data(cfg())
    fp32 = _cache(cfg, bundle, False, monkeypatch, tmp_path, "fp32")
    bf16 = _cache(cfg, bundle, True, monkeypatch, tmp_path, "bf16")
    assert fp32.meta["lpm_amp"] == "off" and bf16.meta["lpm_amp"] == "bf16"
    records = bundle.splits["train"]  # fitted and scored on the same images: parity, not generalisation
    k32, _ = fp32.load(records[0].key)
    k16, _ = bf16.load(records[0].key)
    assert not torch.equal(k32, k16)  # bf16 really ran (near-tied tokens may swap places in the top-k)

    torch.manual_seed(0)
    model = build_model(cfg().model, bundle.num_classes, preloaded=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    train = make_loader(build_dataset(cfg(), bundle, "train", model.input_keys, train=False, cache=fp32), 10,
                        train=False, seed=0)
    for _ in range(40):
        for raw in train:
            batch = prepare_batch(raw, CPU)
            loss = torch.nn.functional.cross_entropy(model(batch["side"], batch["keys"], batch["values"]),
                                                     batch["label"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    aucs, logits = [], []
    for cache in (fp32, bf16):
        ds = build_dataset(cfg(), bundle, "train", model.input_keys, train=False, cache=cache, records=records)
        with torch.no_grad():
            batches = [prepare_batch(b, CPU) for b in make_loader(ds, 20, train=False, seed=0)]
            out = torch.cat([model(b["side"], b["keys"], b["values"]) for b in batches])
        logits.append(out)
        aucs.append(compute_metrics(np.array([r.label for r in records]), out.numpy(), bundle.num_classes)["auc"])
    assert aucs[0] > 0.7  # the model fitted the images (chance is 0.5), so parity is not trivially chance vs chance
    assert abs(aucs[0] - aucs[1]) < 0.02, aucs
    agree = int((logits[0].argmax(1) == logits[1].argmax(1)).sum())  # counted: 18/20 in float32 is 0.8999999762
    assert 10 * agree >= 9 * len(records), (agree, len(records))
