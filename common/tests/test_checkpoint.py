import random

import numpy as np
import pytest
import torch

import common.checkpoint as ckpt_mod
from common.checkpoint import (
    CheckpointError,
    find_resume_checkpoint,
    load_checkpoint,
    load_init_weights,
    restore_training_state,
    save_checkpoint,
)


def make_state():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return model, opt, sched, scaler


def train_step(model, opt, sched):
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    sched.step()


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path):
    model, opt, sched, scaler = make_state()
    for _ in range(3):
        train_step(model, opt, sched)
    save_checkpoint(tmp_path / "last.pt", model=model, optimizer=opt, scheduler=sched, scaler=scaler,
                    config={"lr": 1e-2}, epoch=3, step=3, best_metric=0.5)
    random.random(), np.random.rand()
    train_step(model, opt, sched)  # uninterrupted continuation, consumes RNG after the save
    expected = [p.detach().clone() for p in model.parameters()]
    expected_draws = (random.random(), np.random.rand())

    model2, opt2, sched2, scaler2 = make_state()
    ck = load_checkpoint(tmp_path / "last.pt")
    epoch, step, best = restore_training_state(ck, model=model2, optimizer=opt2, scheduler=sched2, scaler=scaler2)
    assert (epoch, step, best) == (3, 3, 0.5) and ck["config"] == {"lr": 1e-2}
    random.random(), np.random.rand()
    train_step(model2, opt2, sched2)
    for a, b in zip(expected, model2.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (random.random(), np.random.rand()) == expected_draws
    assert sched2.last_epoch == sched.last_epoch


def test_atomic_save_survives_a_crash_mid_write(tmp_path, monkeypatch):
    model, *_ = make_state()
    path = tmp_path / "last.pt"
    save_checkpoint(path, model=model, config={}, epoch=1, step=1)
    before = path.read_bytes()

    def crashing_save(obj, handle):
        handle.write(b"partial garbage")
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(ckpt_mod.torch, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model=model, config={}, epoch=2, step=2)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


def test_load_rejects_truncated_and_foreign_files(tmp_path):
    model, *_ = make_state()
    good = save_checkpoint(tmp_path / "a.pt", model=model, config={}, epoch=0, step=0)
    (tmp_path / "trunc.pt").write_bytes(good.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="trunc.pt"):
        load_checkpoint(tmp_path / "trunc.pt")
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="--init-weights"):
        load_checkpoint(tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_find_resume_auto_picks_newest_last(tmp_path):
    assert find_resume_checkpoint("auto", tmp_path) is None
    model, *_ = make_state()
    old = save_checkpoint(tmp_path / "20240101" / "checkpoints" / "last.pt", model=model, config={}, epoch=1, step=1)
    new = save_checkpoint(tmp_path / "20250101" / "checkpoints" / "last.pt", model=model, config={}, epoch=2, step=2)
    import os

    os.utime(old, (1, 1))
    assert find_resume_checkpoint("auto", tmp_path) == new
    assert find_resume_checkpoint(None, tmp_path) is None
    with pytest.raises(CheckpointError):
        find_resume_checkpoint(tmp_path / "nope.pt", tmp_path)


def test_init_weights_strips_ddp_prefix_and_reports_mismatches(tmp_path):
    model, *_ = make_state()
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    state["module.extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "w.pt")
    other = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    report = load_init_weights(other, tmp_path / "w.pt")
    torch.testing.assert_close(other[0].weight, model[0].weight)
    assert report["unexpected"] == ["extra.weight"]
    assert set(report["shape_mismatch"]) == {"2.weight", "2.bias"}
    with pytest.raises(CheckpointError):
        load_init_weights(other, tmp_path / "w.pt", strict=True)


def test_a_failed_save_names_the_file_and_cause_and_cleans_stale_tmp(tmp_path, monkeypatch):
    import errno

    import pytest
    import torch

    from common import checkpoint as ck

    target = tmp_path / "last.pt"
    stale = tmp_path / ".last.pt.abc.tmp"
    stale.write_bytes(b"half")

    def full_disk(obj, handle):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck.torch, "save", full_disk)
    with pytest.raises(ck.CheckpointError, match=r"last.pt: the disk is full"):
        ck.atomic_torch_save({"a": torch.zeros(1)}, target)
    assert not stale.exists() and not list(tmp_path.glob("*.tmp")) and not target.exists()
