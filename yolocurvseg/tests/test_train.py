"""Smoke: every method runs on configs/ci.yaml in a temporary folder; --resume auto continues; eval/predict."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.checkpoint import load_checkpoint
from yolocurvseg import eval as evaluate
from yolocurvseg import train

CFG = str(Path(__file__).resolve().parents[1] / "configs" / "ci.yaml")


def _args(tmp_path, *extra):
    return ["--config", CFG, f"runs_root={tmp_path / 'runs'}", f"data.root={tmp_path / 'data'}", *extra]


def test_yolocurvseg_pipeline_smoke_and_resume(tmp_path):
    res = train.main(_args(tmp_path))
    ckpts = res.run_dir / "checkpoints"
    for name in ("cut.pt", "coarse.pt", "fine1.pt", "best.pt", "last.pt"):
        assert (ckpts / name).is_file(), name
    assert (res.run_dir / "figures" / "synthesis.png").is_file()
    assert (res.run_dir / "eval" / "summary.csv").is_file() and (res.run_dir / "eval" / "coarse_summary.csv").is_file()
    assert 0.0 <= res.summary["dice"] <= 1.0 and "cldice" in res.summary and "hd95" in res.summary
    assert load_checkpoint(ckpts / "last.pt")["extra"]["stage"] == "fine1"
    # as if killed before the fine stage finished: drop its final checkpoint, resume with a longer schedule
    (ckpts / "fine1.pt").unlink()
    state = load_checkpoint(ckpts / "last.pt")
    assert state["step"] == 4
    cut_mtime = (ckpts / "cut.pt").stat().st_mtime_ns
    res2 = train.main(_args(tmp_path, "fine.steps=6", "--resume", "auto"))
    assert res2.run_dir == res.run_dir
    assert load_checkpoint(ckpts / "fine1.pt")["step"] == 6
    assert (ckpts / "cut.pt").stat().st_mtime_ns == cut_mtime  # finished stages are reused, not retrained


@pytest.mark.parametrize("method", ["full_supervision", "pce_skeleton", "pce_skeleton_all", "synthetic_only"])
def test_baselines_smoke(tmp_path, method):
    extra = ["method=pce_skeleton", "pce.images=all"] if method == "pce_skeleton_all" else [f"method={method}"]
    res = train.main(_args(tmp_path, *extra, "curves.n_samples=4"))
    assert (res.run_dir / "checkpoints" / "best.pt").is_file()
    assert np.isfinite(res.summary["dice"])
    if method == "synthetic_only":
        assert not (res.run_dir / "checkpoints" / "cut.pt").exists()


def test_eval_and_predict_modes(tmp_path):
    res = train.main(_args(tmp_path, "method=full_supervision"))
    best = str(res.run_dir / "checkpoints" / "best.pt")
    summary = evaluate.main(_args(tmp_path)[:2] + [f"data.root={tmp_path / 'data'}", "--checkpoint", best])
    assert summary["dice"] == pytest.approx(res.summary["dice"], abs=1e-6)
    img_dir = tmp_path / "unlabelled"
    img_dir.mkdir()
    Image.fromarray((np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8)).save(img_dir / "x.png")
    csv_path = evaluate.main(_args(tmp_path)[:2] + ["--checkpoint", best, "--predict", str(img_dir),
                                                    "--out", str(tmp_path / "pred")])
    mask = np.array(Image.open(tmp_path / "pred" / "x_mask.png"))
    assert mask.shape == (50, 70) and set(np.unique(mask).tolist()) <= {0, 255} and csv_path.is_file()


def test_config_errors_name_the_key(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.main(_args(tmp_path, "coarse.stepz=3"))
    err = capsys.readouterr().err
    assert "coarse.stepz" in err and "steps" in err
    from common.config import ConfigError

    with pytest.raises(ConfigError, match="curves.overrides"):
        train.main(_args(tmp_path, "curves.overrides={kil: 3}"))
    with pytest.raises(ConfigError, match="labelled_case"):
        train.main(_args(tmp_path, "data.labelled_case=99"))
