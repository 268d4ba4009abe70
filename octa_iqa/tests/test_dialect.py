"""The repository's shared behaviour in octa_iqa: real data untouched, bad input before any work, exact resume,
refused keys."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from common.datasets import DatasetFolderError, DataVerificationError
from octa_iqa.settings import SynthConfig
from octa_iqa.synth import generate_dataset


def test_generator_refuses_a_folder_holding_foreign_files(tmp_path):
    real = tmp_path / "sOCTA"
    (real / "train" / "2").mkdir(parents=True)
    own = real / "train" / "2" / "real_scan.png"
    own.write_bytes(b"a real scan")
    with pytest.raises(DatasetFolderError, match="not created by this generator"):
        generate_dataset(real, SynthConfig(size=32, train_counts=[1, 1, 1], test_counts=[1, 1, 1]))
    assert own.read_bytes() == b"a real scan" and sorted(p.name for p in real.rglob("*")) == ["2", "real_scan.png",
                                                                                               "train"]


def test_data_root_means_real_data(tmp_path, capsys):
    from octa_iqa.train import main

    with pytest.raises(SystemExit):
        main(["--config", "configs/ci.yaml", "--data-root", str(tmp_path), "--print-config"])
    out = capsys.readouterr().out
    assert "synthetic: false" in out and str(tmp_path) in out


def test_truncated_test_image_stops_before_any_checkpoint(tmp_path, make_config):
    from octa_iqa.train import run_training

    cfg = make_config(tmp_path, "model.pretrained=none")
    generate_dataset(cfg.data.root, cfg.data.synth)
    victim = sorted((Path(cfg.data.root) / "test" / "1").glob("*.png"))[0]
    victim.write_bytes(victim.read_bytes()[:40])
    with pytest.raises(DataVerificationError, match=victim.name):
        run_training(cfg)
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("*.pt"))


def test_resumed_run_writes_the_uninterrupted_rows(trained, tmp_path, make_config):
    """Stopped after epoch 2 and resumed: epoch 3's row equals the uninterrupted 3-epoch run's (shared fixture)."""
    from octa_iqa.train import run_training

    cfg, straight = trained
    short = make_config(tmp_path, "model.pretrained=none", "optim.epochs=2", f"data.root={cfg.data.root}")
    run = run_training(short)
    resumed = run_training(make_config(tmp_path, "model.pretrained=none", "optim.epochs=3",
                                       f"data.root={cfg.data.root}"), resume="auto")
    assert resumed == run
    got = pd.read_csv(run / "metrics.csv").set_index("step")
    want = pd.read_csv(straight / "metrics.csv").set_index("step")
    pd.testing.assert_series_equal(got.loc[3], want.loc[3], check_exact=True)


@pytest.mark.parametrize(("override", "message"), [("optim.epochs=-1", "optim.epochs must be >= 0"),
                                                   ("runtime.amp=bf16", "no mixed-precision path"),
                                                   ("runtime.compile=true", "does not compile")])
def test_values_it_cannot_honour_are_refused_before_work(override, message, capsys):
    from octa_iqa.train import main

    with pytest.raises(SystemExit):
        main(["--config", "configs/ci.yaml", override])
    assert message in capsys.readouterr().err
