"""Smoke runs of every method and the loop on configs/ci.yaml, exact resume, eval from the checkpoint."""

import csv

import numpy as np
import pytest

from aslseg import eval as aslseg_eval
from aslseg import train
from aslseg.semisup import SSLTrainer


def _args(tmp_path, *extra):
    return ["--config", "configs/ci.yaml", f"runs_root={tmp_path / 'runs'}", f"data.root={tmp_path.parent / 'data'}",
            f"sam_pretrain.cache_dir={tmp_path.parent / 'sam'}", "runtime.threads=1", *extra]


def _rows(run_dir):
    with open(run_dir / "metrics.csv", newline="") as handle:
        return {int(r["step"]): r for r in csv.DictReader(handle) if r.get("train/loss")}


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return tmp_path_factory.mktemp("aslseg_train") / "run"


def test_loop_smoke_resume_and_eval(shared, monkeypatch):
    shared.mkdir(parents=True, exist_ok=True)
    full = train.main(_args(shared / "a"))
    assert np.isfinite(full.summary["dice"]) and full.summary["n_iterations"] == 6
    for name in ("rounds.csv", "selection.csv", "eval/summary.csv", "eval/per_case.csv", "checkpoints/best.pt",
                 "checkpoints/round1.pt", "config.yaml", "env.json"):
        assert (full.run_dir / name).exists(), name
    assert [r["round"] for r in full.rounds] == ["0", "1"]
    # kill during round 1's retraining, then --resume auto: the next losses equal the uninterrupted run's
    original = SSLTrainer.step

    def dying(self, it, batch, rng):
        if it == 5 and self.cfg.method == "bcp":
            raise KeyboardInterrupt("killed")
        return original(self, it, batch, rng)

    monkeypatch.setattr(SSLTrainer, "step", dying)
    with pytest.raises(KeyboardInterrupt):
        train.main(_args(shared / "b", "runtime.save_every=1"))
    monkeypatch.setattr(SSLTrainer, "step", original)
    resumed = train.main(_args(shared / "b", "runtime.save_every=1", "--resume", "auto"))
    assert resumed.run_dir.parent == (shared / "b" / "runs" / "aslseg" / "ci")
    a, b = _rows(full.run_dir), _rows(resumed.run_dir)
    assert a[6]["train/loss"] == b[6]["train/loss"] and a[5]["train/loss"] == b[5]["train/loss"]
    assert resumed.summary["dice"] == pytest.approx(full.summary["dice"], abs=1e-9)
    summary = aslseg_eval.main(["--checkpoint", str(full.run_dir / "checkpoints" / "best.pt"),
                                "--out", str(shared / "eval")])
    assert summary["dice"] == pytest.approx(full.summary["dice"], abs=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("extra", [
    ["method=ssl", "ssl.method=bcp"], ["method=ssl", "ssl.method=mean_teacher"],
    ["method=ssl", "ssl.method=ua_mt", "ssl.uncertainty_passes=2"], ["method=ssl", "ssl.method=supervised"],
    ["method=sam_zero_shot_gtbox"], ["loop.refiner=teacher"], ["loop.refiner=sam_raw", "sam.finetune=lora"],
    ["selection.mode=all", "loop.reinit=true"],
])
def test_every_method_smoke(shared, extra):
    shared.mkdir(parents=True, exist_ok=True)
    result = train.main(_args(shared / "m", *extra))
    assert np.isfinite(result.summary["dice"])
    assert (result.run_dir / "eval" / "per_case.csv").is_file()


def test_config_errors_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.main(_args(tmp_path, "ssl.methd=bcp"))
    assert "ssl.method" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main(_args(tmp_path, "optim.labelled_bs=8"))
    with pytest.raises(SystemExit):
        train.main(_args(tmp_path, "runtime.amp=bf16"))
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_reproduce_writes_the_comparison(shared):
    from aslseg import reproduce

    shared.mkdir(parents=True, exist_ok=True)
    out = reproduce.main(["--config", "configs/ci.yaml", "--seeds", "1", "--workers", "1", "--only", "aslseg,bcp",
                          "--out", str(shared / "repro"), f"data.root={shared.parent / 'data'}",
                          f"sam_pretrain.cache_dir={shared.parent / 'sam'}"])
    import pandas as pd

    table = pd.read_csv(out / "comparison.csv")
    assert table["method"].tolist() == ["aslseg", "bcp"]
    assert table.loc[0, "n_iterations"] == table.loc[1, "n_iterations"]  # equal segmenter budget
    assert (out / "selection.csv").is_file() and (out / "rounds.csv").is_file()


def test_reproduce_pretrains_each_tiny_sam_once(tmp_path):
    """The ASLseg rows that load the same pre-trained tiny SAM share one cache entry (trained once, beside the first
    stage); a row with a random SAM needs none, and another mask prompt is another model."""
    from aslseg import reproduce
    from aslseg.sam_prior import cache_path
    from aslseg.settings import Config
    from common.config import load_config

    common = [f"sam_pretrain.cache_dir={tmp_path}"]
    cfg = load_config(Config, "configs/ci.yaml", common, [reproduce.PROJECT_DIR])
    rows = ["bcp", "aslseg", "aslseg_lora", "aslseg_full", "aslseg_sam_random", "aslseg_rounds1"]
    caches = reproduce.sam_caches(rows, cfg, "configs/ci.yaml", common)
    assert list(caches) == [cache_path(cfg.sam_pretrain, cfg.data.size, cfg.sam.mask_prompt)]
    assert reproduce.sam_caches(["aslseg_sam_random"], cfg, "configs/ci.yaml", common) == {}
    flipped = "none" if cfg.sam.mask_prompt == "ellipse" else "ellipse"
    other = reproduce.sam_caches(["aslseg"], cfg, "configs/ci.yaml", [*common, f"sam.mask_prompt={flipped}"])
    assert list(other) != list(caches)
