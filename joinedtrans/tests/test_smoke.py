"""Entry points on configs/ci.yaml: train + eval + resume, exact resume after a kill, files checked before any
checkpoint, pre-training transfer and a mismatched encoder checkpoint."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from common.checkpoint import CheckpointError, load_checkpoint
from common.datasets import DataVerificationError
from joinedtrans import engine
from joinedtrans import eval as eval_entry
from joinedtrans import pretrain as pretrain_entry
from joinedtrans import train as train_entry
from joinedtrans.settings import FineConfig


def _args(runs: Path, data: Path, *extra: str) -> list[str]:
    return ["--config", "configs/ci.yaml", f"runs_root={runs}", f"data.root={data}", "data.synthetic=false", *extra]


@pytest.fixture(autouse=True)
def _project_cwd(monkeypatch) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parents[1])


def test_train_eval_and_resume(synth_root: Path, tmp_path: Path) -> None:
    run = train_entry.main(_args(tmp_path, synth_root))
    for name in ("coarse.pt", "fine.pt", "fovea.pt", "best.pt", "last.pt"):
        assert (run / "checkpoints" / name).is_file()
    summary = pd.read_csv(run / "eval" / "summary.csv").iloc[0]
    assert {"dice_disc", "dice_cup", "vcdr_mae", "fovea_dist_norm", "coarse_dice_disc"} <= set(summary.index)
    assert len(pd.read_csv(run / "eval" / "per_case.csv")) == 4
    assert (run / "figures" / "hard_cases.png").is_file()
    again = eval_entry.main(["--checkpoint", str(run / "checkpoints" / "best.pt"), "--out", str(tmp_path / "ev")])
    assert again["dice_disc"] == pytest.approx(summary["dice_disc"])
    resumed = train_entry.main(_args(tmp_path, synth_root, "--resume", "auto"))
    assert resumed == run  # every stage finished: loaded, not retrained
    pred = eval_entry.main(["--checkpoint", str(run / "checkpoints" / "best.pt"), "--predict",
                            str(synth_root / "REFUGE" / "Test400"), "--out", str(tmp_path / "pred")])
    assert len(pd.read_csv(pred)) == 4


def test_killed_run_resumes_to_identical_weights(synth_root: Path, tmp_path: Path, monkeypatch) -> None:
    extra = ["fine.enabled=false", "fovea.enabled=false", "optim.steps=6"]
    full = train_entry.main(_args(tmp_path / "a", synth_root, *extra))
    real = engine.train_one_epoch
    calls = {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # dies in epoch 2, after epoch 1 wrote last.pt
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "train_one_epoch", dying)
    with pytest.raises(KeyboardInterrupt):
        train_entry.main(_args(tmp_path / "b", synth_root, *extra))
    monkeypatch.setattr(engine, "train_one_epoch", real)
    resumed = train_entry.main(_args(tmp_path / "b", synth_root, *extra, "--resume", "auto"))
    a = load_checkpoint(full / "checkpoints" / "coarse.pt")["model"]
    b = load_checkpoint(resumed / "checkpoints" / "coarse.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = pd.read_csv(full / "metrics.csv"), pd.read_csv(resumed / "metrics.csv")
    assert ma["coarse/train_loss"].dropna().tolist() == pytest.approx(mb["coarse/train_loss"].dropna().tolist())


def test_truncated_test_image_fails_before_any_checkpoint(tree: Path, tmp_path: Path) -> None:
    image = tree / "REFUGE" / "Test400" / "T0002.jpg"
    image.write_bytes(image.read_bytes()[:200])
    with pytest.raises(DataVerificationError, match="T0002.jpg"):
        train_entry.main(_args(tmp_path, tree))
    assert not list(tmp_path.rglob("*.pt"))


def test_pretrained_encoder_transfers_and_a_foreign_one_is_refused(synth_root: Path, tmp_path: Path) -> None:
    ckpt = pretrain_entry.main(_args(tmp_path, synth_root, "experiment=ci_pre"))
    state = load_checkpoint(ckpt)["model"]
    run = train_entry.main(_args(tmp_path, synth_root, f"coarse.encoder_init={ckpt}", "optim.steps=1",
                                 "optim.lr=1e-12", "fine.enabled=false", "fovea.enabled=false"))
    coarse = load_checkpoint(run / "checkpoints" / "coarse.pt")["model"]
    key = "encoder.swin.layers_0.blocks.0.attn.qkv.weight"
    assert key in state and torch.allclose(coarse[key], state[key], atol=1e-6)
    with pytest.raises(CheckpointError, match="does not match model"):
        train_entry.main(_args(tmp_path, synth_root, f"coarse.encoder_init={ckpt}", "model.embed_dim=16"))


def test_fine_stage_selected_on_validation(synth_root: Path, tmp_path: Path) -> None:
    run = train_entry.main(_args(tmp_path, synth_root, "fine.val_every=1", "fine.steps=6"))
    best = load_checkpoint(run / "checkpoints" / "fine_best.pt")
    kept = load_checkpoint(run / "checkpoints" / "fine.pt")
    metrics = pd.read_csv(run / "metrics.csv")
    scores = metrics["fine/val_score"].dropna()
    assert len(scores) == 2  # every epoch (6 training crops, batch 2: 3 steps per epoch, 6 steps)
    assert best["best_metric"] == pytest.approx(scores.max())
    for key, value in best["model"].items():
        assert torch.equal(value, kept["model"][key]), key  # the stage's weights are the best-scoring ones
    with pytest.raises(ValueError, match="fine.val_every"):
        FineConfig(val_every=-1)
