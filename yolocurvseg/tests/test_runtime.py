"""Runtime paths: torchrun with 2 gloo processes on CPU gives one run folder and the metrics of one process;
``runtime.amp`` autocasts a real segmenter training step; device-dependent runtime values are refused before any
work."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from common.runtime import DistInfo
from yolocurvseg import engine, train
from yolocurvseg.data import PairSampler
from yolocurvseg.model import SegmenterConfig, build_model

PROJECT_DIR = Path(__file__).resolve().parents[1]
CFG = str(PROJECT_DIR / "configs" / "ci.yaml")


def _args(tmp_path, *extra):
    return ["--config", CFG, f"runs_root={tmp_path / 'runs'}", f"data.root={tmp_path / 'data'}",
            "runtime.threads=1", *extra]


def _rows(run_dir: Path) -> dict[int, dict[str, str]]:
    with (run_dir / "metrics.csv").open(newline="") as handle:
        return {int(r["step"]): r for r in csv.DictReader(handle)}


@pytest.mark.slow
def test_torchrun_two_processes_one_run_folder_and_the_one_process_metrics(tmp_path):
    """The whole ci pipeline (CUT on rank 0, coarse and fine under DDP, sharded pseudo-labels and evaluation) under
    torchrun with 2 gloo processes: one run folder with one set of files, and every loss row and test metric of a
    one-process run. Each step draws the same global batch on both ranks and the loss is evaluated on the gathered
    logits, so the gradients are those of one process up to float summation order (a batch of 1 vs 2 in the
    convolutions): measured, the coarse losses are bitwise equal and two fine losses differ by 1e-7 relative; the
    test metrics were equal. Tolerances: rtol 1e-5 on the losses; 1e-3 on the test metrics, the size of one flipped
    pixel near the threshold in a 64 px test image."""
    one = train.main(_args(tmp_path / "one"))
    runs = tmp_path / "two" / "runs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=0",
           "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0", "train.py",
           *_args(tmp_path / "two")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run,) = list((runs / "yolocurvseg" / "ci").iterdir())  # one run folder for both ranks
    assert json.loads((run / "env.json").read_text())["world_size"] == 2
    assert done.stdout.count("[yolocurvseg] yolocurvseg (ci): dice") == 1  # rank 0 reports, rank 1 does not
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == \
        sorted(p.name for p in (one.run_dir / "checkpoints").iterdir())
    got, want = _rows(run), _rows(one.run_dir)
    assert sorted(got) == sorted(want)  # the same steps, the global step counter included
    for step, row in want.items():
        for key, value in row.items():
            if value and not key.startswith("test/"):
                assert float(got[step][key]) == pytest.approx(float(value), rel=1e-5), (step, key)
    last = max(want)
    for key in ("test/dice", "test/cldice", "test/iou"):
        assert float(got[last][key]) == pytest.approx(one.summary[key[5:]], abs=1e-3), key
    cases = {}
    for folder in (run, one.run_dir):
        with (folder / "eval" / "per_case.csv").open(newline="") as handle:
            cases[folder] = list(csv.DictReader(handle))
    assert [r["case_id"] for r in cases[run]] == [r["case_id"] for r in cases[one.run_dir]]  # each image once
    assert len(cases[run]) == 2  # data.n_test of the ci config, split 1 + 1 between the ranks
    for a, b in zip(cases[run], cases[one.run_dir], strict=True):
        assert float(a["dice"]) == pytest.approx(float(b["dice"]), abs=1e-3), a["case_id"]


class _Store:
    """In-memory ``engine.StageStore``."""

    def __init__(self):
        self.global_step, self.rows = 0, []

    def finished(self, name):
        return None

    def resumed(self, name):
        return None

    def save(self, name, step, **kwargs):
        pass

    def log(self, scalars, step):
        self.rows.append(dict(scalars))


def test_amp_bf16_runs_a_segmenter_training_step_in_bf16():
    """``runtime.amp=bf16`` on CPU: the U-Net forward of a real training step runs in bf16 (a forward hook sees
    bf16 logits), the loss is finite and the weights move; ``off`` (the default) stays fp32."""
    from yolocurvseg.settings import StepRuntimeConfig

    rng = np.random.default_rng(0)
    images = [rng.random((32, 32)).astype(np.float32) for _ in range(2)]
    labels = [(rng.random((32, 32)) > 0.8).astype(np.uint8) for _ in range(2)]
    sampler = PairSampler(images, labels, crop=16)
    for amp, dtype in (("bf16", torch.bfloat16), ("off", torch.float32)):
        torch.manual_seed(0)
        model = build_model(SegmenterConfig(channels=[4, 8], strides=[2]))
        seen = []
        model.register_forward_hook(lambda module, args, out, seen=seen: seen.append(out.dtype))
        before = [p.detach().clone() for p in model.parameters()]
        store = _Store()
        stage = engine.SegmenterStage("coarse", steps=2, lr=1e-2, batch_size=2)
        engine.train_segmenter(model, sampler, stage, store, StepRuntimeConfig(amp=amp, log_every=1),
                               torch.device("cpu"), seed=0)
        assert seen == [dtype, dtype], (amp, seen)
        assert len(store.rows) == 2 and all(np.isfinite(r["coarse/loss"]) for r in store.rows)
        assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
        assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast: fp32 master weights


@pytest.mark.parametrize(("override", "patch", "message"), [
    ("runtime.amp=fp16", None, "runtime.amp=fp16 needs CUDA"),
    ("runtime.amp=bf16", "no-bf16", "no bf16 support"),
    ("runtime.compile=true", None, "does not compile"),
])
def test_runtime_values_the_device_cannot_run_are_refused_before_any_work(tmp_path, monkeypatch, capsys, override,
                                                                         patch, message):
    if patch == "no-bf16":
        monkeypatch.setattr(train, "bf16_supported", lambda device: False)
    try:
        train.main(_args(tmp_path, override))
    except SystemExit:  # refused by the config check (parse time)
        assert message in capsys.readouterr().err
    except ValueError as exc:  # refused once the device is known, before the data and the run folder
        assert message in str(exc)
    else:
        pytest.fail(f"{override} was accepted")
    assert not (tmp_path / "runs" / "yolocurvseg").exists() and not (tmp_path / "data").exists()


def test_a_batch_the_ranks_cannot_share_is_refused(monkeypatch):
    monkeypatch.setattr(engine, "dist_info", lambda: DistInfo(rank=1, local_rank=1, world_size=3))
    with pytest.raises(ValueError, match="multiple of --nproc_per_node"):
        engine.rank_share(8)
    assert engine.rank_share(6) == slice(2, 4)  # rank 1 of 3: rows 2 and 3 of the global batch
