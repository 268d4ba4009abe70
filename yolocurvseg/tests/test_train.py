"""Smoke: every method runs on configs/ci.yaml in a temporary folder; --resume auto continues (exactly: same
metrics.csv, step counter included); bad input and bad values stop before any work; eval and predict modes."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.checkpoint import load_checkpoint
from common.config import ConfigError
from common.datasets import DataVerificationError
from common.readers import ImageReadError
from yolocurvseg import engine, train
from yolocurvseg import eval as evaluate

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
    assert (res.run_dir / "eval" / "per_case.csv").is_file()
    assert 0.0 <= res.summary["dice"] <= 1.0 and "cldice" in res.summary and "hd95" in res.summary
    assert load_checkpoint(ckpts / "last.pt")["extra"]["stage"] == "fine1"
    assert any((res.run_dir / "tb").iterdir())
    # as if killed before the fine stage finished: drop its final checkpoint, resume with a longer schedule
    (ckpts / "fine1.pt").unlink()
    state = load_checkpoint(ckpts / "last.pt")
    assert state["step"] == 4 and state["extra"]["global_step"] == 3 + 4 + 4
    cut_mtime = (ckpts / "cut.pt").stat().st_mtime_ns
    res2 = train.main(_args(tmp_path, "fine.steps=6", "--resume", "auto"))
    assert res2.run_dir == res.run_dir
    assert load_checkpoint(ckpts / "fine1.pt")["step"] == 6
    assert (ckpts / "cut.pt").stat().st_mtime_ns == cut_mtime  # finished stages are reused, not retrained


class _KilledError(Exception):
    pass


def test_resume_after_a_kill_writes_the_same_metrics_rows(tmp_path, monkeypatch):
    """A run killed inside the coarse stage (during its step 3 of 4, one metrics row past its last.pt, which holds
    coarse step 2) and resumed with --resume auto writes exactly the metrics.csv of an uninterrupted run: same rows,
    same global step counter, same test metrics."""
    full = train.main(_args(tmp_path / "a"))
    expected = (full.run_dir / "metrics.csv").read_text()

    original = engine.run_steps

    def kill_in_coarse(name, step_fn, start, total, store, runtime, save):
        def step_then_maybe_die(step):
            losses = step_fn(step)
            if name == "coarse" and step == 2:  # coarse step 3 of 4: last.pt holds coarse step 2 (save_every 2)
                store.log({"coarse/loss": losses["loss"]}, store.global_step + 1)  # a row past the checkpoint
                raise _KilledError
            return losses
        return original(name, step_then_maybe_die, start, total, store, runtime, save)

    monkeypatch.setattr(engine, "run_steps", kill_in_coarse)
    with pytest.raises(_KilledError):
        train.main(_args(tmp_path / "b"))
    monkeypatch.setattr(engine, "run_steps", original)
    run_dir = next((tmp_path / "b" / "runs" / "yolocurvseg" / "ci").iterdir())
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert last["extra"]["stage"] == "coarse" and last["step"] == 2 and last["extra"]["global_step"] == 5
    assert not (run_dir / "checkpoints" / "coarse.pt").exists()
    resumed = train.main(_args(tmp_path / "b", "--resume", "auto"))
    assert resumed.run_dir == run_dir
    assert (run_dir / "metrics.csv").read_text() == expected
    assert resumed.summary == full.summary


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
    summary = evaluate.main(["--checkpoint", best])  # config rebuilt from the checkpoint
    assert summary["dice"] == pytest.approx(res.summary["dice"], abs=1e-6)
    assert (res.run_dir / "eval" / "per_case.csv").is_file() and (res.run_dir / "eval" / "predictions.png").is_file()
    auto = evaluate.main(_args(tmp_path, "method=full_supervision", "--checkpoint", "auto",
                               "--out", str(tmp_path / "auto_eval")))
    assert auto["dice"] == pytest.approx(res.summary["dice"], abs=1e-6)
    assert (tmp_path / "auto_eval" / "summary.csv").is_file()
    img_dir = tmp_path / "unlabelled"
    img_dir.mkdir()
    Image.fromarray((np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8)).save(img_dir / "x.png")
    csv_path = evaluate.main(["--checkpoint", best, "--predict", str(img_dir), "--out", str(tmp_path / "pred")])
    mask = np.array(Image.open(tmp_path / "pred" / "x_mask.png"))
    assert mask.shape == (50, 70) and set(np.unique(mask).tolist()) <= {0, 255} and csv_path.is_file()


def test_config_errors_name_the_key(tmp_path, capsys):
    """Every bad value stops at parse time with the key named, before any data is generated or a run folder made;
    ``curves.overrides`` is checked key by key, by type and by range."""
    cases = (("optim.stepz=3", ("optim.stepz", "steps")), ("curves.overrides={kil: 3}", ("curves.overrides", "kill")),
             ("curves.overrides={n_attractors: 0}", ("n_attractors", ">= 1")),
             ("curves.overrides={kill: abc}", ("curves.overrides.kill", "float")),
             ("optim.steps=-1", ("optim.steps", ">= 1")), ("fine.bg_threshold=0.95", ("bg_threshold",)),
             ("data.crop=30", ("data.crop", "multiple")))
    for bad, words in cases:
        with pytest.raises(SystemExit) as info:
            train.main(_args(tmp_path, bad))
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert all(w in err for w in words), (bad, err)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()  # nothing written
    with pytest.raises(ConfigError, match="labelled_case"):
        train.main(_args(tmp_path, "data.labelled_case=99"))
    assert not (tmp_path / "runs" / "yolocurvseg").exists()  # checked before the run folder exists


@pytest.mark.parametrize(("keep", "verify", "error"), [(100, "header", DataVerificationError),
                                                     (0.5, "full", DataVerificationError),
                                                     (0.5, "header", ImageReadError)])
def test_truncated_test_image_fails_before_any_checkpoint(tmp_path, keep, verify, error):
    """The header check finds a cut header; a file cut in the middle fails the full check, or (header mode) the
    decoding of every image that prepare_data does before the run folder is created."""
    from yolocurvseg.hidden_domain import ensure_hidden_domain

    root = ensure_hidden_domain(tmp_path / "data", 4, 2, 64, 0)  # the ci domain
    image = root / "test" / "images" / "02_test.tif"
    data = image.read_bytes()
    image.write_bytes(data[: keep if isinstance(keep, int) else int(len(data) * keep)])
    with pytest.raises(error, match="02_test.tif"):
        train.main(_args(tmp_path, f"data.verify={verify}"))
    assert not (tmp_path / "runs" / "yolocurvseg").exists()


def test_synthetic_generator_refuses_a_foreign_folder(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "ISIC_0024306.jpg").write_bytes(b"real data")
    from common.datasets import DatasetFolderError

    with pytest.raises(DatasetFolderError, match="not empty"):
        train.main(_args(tmp_path))
    assert (data / "ISIC_0024306.jpg").read_bytes() == b"real data"
    assert sorted(p.name for p in data.iterdir()) == ["ISIC_0024306.jpg"]
    assert not (tmp_path / "runs" / "yolocurvseg").exists()


def test_data_root_means_real_data(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.main(["--config", CFG, "--data-root", str(tmp_path / "DRIVE"), "--print-config"])
    out = capsys.readouterr().out
    assert "synthetic: false" in out and str(tmp_path / "DRIVE") in out


def test_missing_skeleton_file_is_an_error_and_simulate_is_explicit(tmp_path, capsys):
    """``data.skeleton=file`` (default) never falls back to a skeleton simulated from the label: a missing file stops
    the run before its folder exists, naming the file; ``simulate`` is an explicit choice, logged in the run."""
    from yolocurvseg.hidden_domain import ensure_hidden_domain

    root = ensure_hidden_domain(tmp_path / "data", 4, 2, 64, 0)  # the ci domain
    (root / "skeleton" / "03.png").unlink()
    with pytest.raises(ConfigError, match=r"skeleton[/\\]03\.png"):
        train.main(_args(tmp_path, "data.labelled_case=03"))
    assert not (tmp_path / "runs" / "yolocurvseg").exists()
    with pytest.raises(ConfigError, match=r"03\.png"):  # pCE on all images needs every skeleton file
        train.main(_args(tmp_path, "data.labelled_case=04", "method=pce_skeleton", "pce.images=all"))
    capsys.readouterr()
    res = train.main(_args(tmp_path, "data.labelled_case=03", "data.skeleton=simulate", "method=pce_skeleton"))
    assert res.skeleton == "simulate"
    assert "simulated from the label" in (res.run_dir / "skeleton_source.txt").read_text()
    assert "noisy skeleton (simulate) simulated from the label" in capsys.readouterr().out
    res = train.main(_args(tmp_path, "data.labelled_case=04", "method=pce_skeleton"))
    assert (res.run_dir / "skeleton_source.txt").read_text().startswith(f"file: {root / 'skeleton' / '04.png'}")
