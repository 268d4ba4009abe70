"""Bad input is found before any work, and real data is never written (synthetic generator, split files,
saliency maps, config values, corrupt images, an unwritable runs folder)."""

from pathlib import Path

import pytest

from spmix.train import main as train_main


def _args(tmp_path, *extra, data_root=None):
    real = ["--data-root", str(data_root)] if data_root is not None else []  # options before the overrides
    return ["--config", "configs/ci.yaml", *real, f"runs_root={tmp_path / 'runs'}", *extra]


def test_generator_refuses_a_folder_holding_a_foreign_file(tmp_path):
    from common.datasets import DatasetFolderError
    from spmix.synthetic_set import ensure_synthetic

    real = tmp_path / "isic2018"
    (real / "ISIC2018_Task3_Training_Input").mkdir(parents=True)
    foreign = real / "ISIC2018_Task3_Training_Input" / "ISIC_0024306.jpg"
    foreign.write_bytes(b"a real dermoscopy image")
    with pytest.raises(DatasetFolderError, match="not empty"):
        ensure_synthetic(real, train=20, val_per_class=1, test_per_class=1)
    assert foreign.read_bytes() == b"a real dermoscopy image"
    assert sorted(p.name for p in real.rglob("*")) == ["ISIC2018_Task3_Training_Input", "ISIC_0024306.jpg"]
    assert not (tmp_path / "isic2018.partial").exists()


def test_train_with_synthetic_true_on_real_data_refuses_and_writes_nothing(tmp_path, real_copy, snapshot, capsys):
    before = snapshot(real_copy)
    with pytest.raises(SystemExit) as exit_info:
        train_main(_args(tmp_path, f"data.root={real_copy}", "data.synthetic=true"))
    assert exit_info.value.code == 1 and "refusing to write" in capsys.readouterr().err
    assert snapshot(real_copy) == before
    assert not (tmp_path / "runs" / "spmix").exists()


def test_data_root_means_real_data_and_derived_files_live_outside_it(real_copy, capsys):
    from common.config import load_config
    from spmix.pipeline import saliency_dir, split_file
    from spmix.settings import Config

    with pytest.raises(SystemExit) as exit_info:  # the default config is synthetic; --data-root turns that off
        train_main(["--data-root", str(real_copy), "--print-config"])
    assert exit_info.value.code == 0 and "synthetic: false" in capsys.readouterr().out
    cfg = load_config(Config, Path(__file__).parent.parent / "configs" / "default.yaml",
                      [f"data.root={real_copy}", "data.synthetic=false"])
    for derived in (split_file(cfg, real_copy), saliency_dir(cfg, real_copy)):
        assert real_copy not in derived.parents and "spmix" in derived.parts


def test_truncated_test_image_fails_before_any_checkpoint(tmp_path, real_copy, capsys):
    victim = sorted((real_copy / "ISIC2018_Task3_Test_Input").glob("*.jpg"))[2]
    victim.write_bytes(victim.read_bytes()[:200])
    with pytest.raises(SystemExit) as exit_info:
        train_main(_args(tmp_path, "method=ce", f"data.split_file={tmp_path / 'split.csv'}", data_root=real_copy))
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and victim.name in err and "nothing was trained" in err
    assert not list((tmp_path / "runs").rglob("*.pt")) and not (tmp_path / "runs" / "spmix").exists()


def test_bad_values_stop_before_any_data_is_written(tmp_path, capsys):
    data = tmp_path / "new_data"
    for bad, named in (("optim.lrr=1", "optim.lr"), ("method=remix", "method"), ("optim.epochs=-1", "epochs"),
                       ("saliency.method=gradcam", "saliency.method"), ("spmix.alpha=0.3", "spmix.alpha"),
                       ("data.tail=[XYZ]", "data.tail")):
        with pytest.raises(SystemExit) as exit_info:
            train_main(_args(tmp_path, f"data.root={data}", bad))
        assert exit_info.value.code == 2 and named in capsys.readouterr().err, bad
    assert not data.exists() and not Path(f"{data}.partial").exists()


def test_unwritable_runs_folder_fails_before_the_data_work(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    data = tmp_path / "new_data"
    with pytest.raises(SystemExit) as exit_info:
        train_main(["--config", "configs/ci.yaml", f"runs_root={blocker / 'runs'}", f"data.root={data}"])
    assert exit_info.value.code == 1 and "runs_root" in capsys.readouterr().err
    assert not data.exists()
