"""Threads: ``runtime.threads`` / ``runtime.lpm_threads`` 0 means the thread count torch picks in a fresh process,
on every path that runs the frozen LPM (preloading, linear-probe feature caching, the LPM-trained baselines of
reproduce.py), whatever count the run itself uses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.runtime import setup_runtime
from fpt_plus import reproduce
from fpt_plus.models.lpm import FrozenLPM
from fpt_plus.pipeline import cached_features, prepare_data, run_preload
from fpt_plus.settings import Config


def fresh_process_threads() -> int:
    """``torch.get_num_threads()`` of a new Python process with this environment."""
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"], check=True,
                         capture_output=True, text=True, env=dict(os.environ))
    return int(out.stdout.strip())


@pytest.fixture()
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_zero_is_the_fresh_process_default(restore_threads) -> None:
    default = fresh_process_threads()
    torch.set_num_threads(1)
    setup_runtime(Config().runtime.__class__(threads=0), seed=0)
    assert torch.get_num_threads() == default
    setup_runtime(Config().runtime.__class__(threads=1), seed=0)
    assert torch.get_num_threads() == 1


def test_frozen_lpm_runs_with_lpm_threads_zero(ci_root: Path, tmp_path: Path, make_cfg, monkeypatch,
                                               restore_threads) -> None:
    """A run on one thread preloads and caches features with torch's default count, then returns to one thread."""
    default = fresh_process_threads()
    seen: list[int] = []
    forward = FrozenLPM.forward

    def recording(self, images):
        seen.append(torch.get_num_threads())
        return forward(self, images)

    monkeypatch.setattr(FrozenLPM, "forward", recording)
    cfg = make_cfg(ci_root, f"data.preload_dir={tmp_path / 'cache'}", "runtime.threads=1", "runtime.lpm_threads=0")
    torch.set_num_threads(1)
    bundle = prepare_data(cfg)
    run_preload(cfg, bundle)
    assert seen and set(seen) == {default} and torch.get_num_threads() == 1

    from fpt_plus.models.factory import build_model

    probe_cfg = make_cfg(ci_root, "model.method=linear_probe", "runtime.threads=1", "runtime.lpm_threads=0")
    probe = build_model(probe_cfg.model, bundle.num_classes, preloaded=True)
    counts: list[int] = []
    encode = probe.encode
    probe.encode = lambda x: (counts.append(torch.get_num_threads()), encode(x))[1]
    cached_features(probe, probe_cfg, bundle, "val", torch.device("cpu"))
    assert counts and set(counts) == {default} and torch.get_num_threads() == 1


def test_reproduce_trains_lpm_baselines_with_lpm_threads(restore_threads) -> None:
    """The rows that back-propagate through the LPM get ``runtime.threads=<runtime.lpm_threads>`` (0 = default) and
    ``optim.lpm_epochs``; the cheap rows keep the run's own thread count."""
    base, args = reproduce.parse(["runtime.threads=1", "runtime.lpm_threads=0", "optim.lpm_epochs=3"])
    for row in ("lora", "full_finetune", "vpt", "adapter"):
        argv = reproduce.train_argv(args, base, row, 0, on_cpu=True)
        assert "runtime.threads=0" in argv and "optim.epochs=3" in argv, (row, argv)
    for row in ("fpt_plus", "side_only", "side_only_hr", "linear_probe"):
        assert not any(a.startswith(("runtime.threads=", "optim.epochs=")) for a in
                       reproduce.train_argv(args, base, row, 0, on_cpu=True)[-3:]), row
    matched = reproduce.train_argv(args, base, "fpt_plus_matched", 1, on_cpu=True)
    assert "model.method=fpt_plus" in matched and "optim.epochs=3" in matched and "seed=1" in matched
    random = reproduce.train_argv(args, base, "fpt_plus_random_lpm", 0, on_cpu=True)
    assert "model.pretrained=none" in random
