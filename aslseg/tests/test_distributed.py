"""Scale-out: per-sample draws that do not depend on the rank, and torchrun with 2 gloo processes on CPU (one run
folder, every test volume evaluated once, the gathered Dice equal to a one-process eval of the saved checkpoint,
the same weights on both ranks)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from aslseg import eval as aslseg_eval
from aslseg.engine import iteration_rng
from aslseg.pipeline import LabelledPool, batch_share, make_affine, sample_batch
from aslseg.semisup import generate_mask
from aslseg.settings import Config
from aslseg.train import check_world_size, weights_checksum
from common.checkpoint import load_checkpoint
from common.config import load_config

PROJECT_DIR = Path(__file__).resolve().parents[1]


def _pool() -> LabelledPool:
    rng = np.random.default_rng(0)
    images = rng.random((10, 16, 16)).astype(np.float32)
    return LabelledPool(images, (images > 0.7).astype(np.uint8), rng.random((7, 16, 16)).astype(np.float32))


@pytest.mark.parametrize("world, labelled_bs, batch_size", [(2, 4, 8), (4, 8, 16), (2, 4, 4)])
def test_each_sample_is_the_same_whatever_the_rank(world, labelled_bs, batch_size):
    cfg = load_config(Config, PROJECT_DIR / "configs" / "ci.yaml",
                      [f"optim.batch_size={batch_size}", f"optim.labelled_bs={labelled_bs}", "data.augment=true"])
    pool, affine = _pool(), make_affine()
    n_u = batch_size - labelled_bs
    for it in (0, 7):
        whole = sample_batch(pool, cfg, it, affine)
        seen_l, seen_u = [], []
        for rank in range(world):
            part = sample_batch(pool, cfg, it, affine, rank, world)
            pos_l, pos_u = batch_share(labelled_bs, rank, world), batch_share(n_u, rank, world)
            assert torch.equal(part.labelled, whole.labelled[pos_l])  # same rows, same augmentation
            assert torch.equal(part.labels, whole.labels[pos_l])
            assert torch.equal(part.unlabelled, whole.unlabelled[pos_u])
            # BCP's halves stay halves: a rank's first half comes from the batch's first half
            first, second = np.split(pos_l, 2)
            assert (first < labelled_bs // 2).all() and (second >= labelled_bs // 2).all()
            seen_l += list(pos_l)
            seen_u += list(pos_u)
        assert sorted(seen_l) == list(range(labelled_bs)) and sorted(seen_u) == list(range(n_u))
        # the batch's one rectangle comes from (seed, it) alone: every rank draws the same
        masks = [generate_mask(16, 16, iteration_rng(cfg.seed, it)) for _rank in range(world)]
        assert all(torch.equal(m, masks[0]) for m in masks)
    assert not torch.equal(sample_batch(pool, cfg, 0, affine).labelled, sample_batch(pool, cfg, 1, affine).labelled)


def test_uneven_shares_are_refused_before_any_work():
    cfg = load_config(Config, PROJECT_DIR / "configs" / "ci.yaml", [])  # labelled_bs 2: one BCP pair
    check_world_size(cfg, 1)
    with pytest.raises(ValueError, match="optim.labelled_bs"):
        check_world_size(cfg, 2)
    with pytest.raises(ValueError, match="sam.batch_size"):
        check_world_size(load_config(Config, PROJECT_DIR / "configs" / "ci.yaml",
                                     ["optim.batch_size=8", "optim.labelled_bs=4", "sam.batch_size=3"]), 2)


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path, monkeypatch):
    overrides = [f"runs_root={tmp_path / 'runs'}", f"data.root={tmp_path / 'data'}",
                 f"sam_pretrain.cache_dir={tmp_path / 'sam'}", "runtime.threads=1",
                 "optim.batch_size=8", "optim.labelled_bs=4",  # 2 labelled + 2 unlabelled per rank (BCP pairs)
                 "sam.finetune=lora"]  # the encoder under DDP too; the prompts leave point embeddings unused
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=0",
           "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0", "train.py", "--config", "configs/ci.yaml", *overrides]
    done = subprocess.run(cmd, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run,) = list((tmp_path / "runs" / "aslseg" / "ci").iterdir())  # one run folder
    assert len(list((tmp_path / "sam").glob("*.pth"))) == 1  # the tiny SAM pre-trained under DDP, cached once
    per_case = pd.read_csv(run / "eval" / "per_case.csv")
    assert len(per_case) == 2 and per_case["case_id"].is_unique  # every test volume once
    gathered = pd.read_csv(run / "eval" / "summary.csv").iloc[0]
    assert (run / "checkpoints" / "round1.pt").is_file() and (run / "selection.csv").is_file()
    found = re.findall(r"rank (\d)/2 weights sha1 ([0-9a-f]{40}) sam sha1 ([0-9a-f]{40})", done.stdout)
    sums = {rank: (segmenter, sam) for rank, segmenter, sam in found}
    assert set(sums) == {"0", "1"} and sums["0"] == sums["1"]  # the same segmenter and SAM weights on both ranks
    best = run / "checkpoints" / "best.pt"
    assert weights_checksum(load_checkpoint(best)["model"]) == sums["0"][0]
    monkeypatch.chdir(PROJECT_DIR)
    single = aslseg_eval.main(["--checkpoint", str(best), "--out", str(tmp_path / "single")])
    for key in ("dice", "dice_global", "jaccard", "hd95_mm", "asd_mm"):
        assert single[key] == pytest.approx(float(gathered[key]), nan_ok=True), key
