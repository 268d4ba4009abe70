"""Official-layout reader on synth.py output, 5-fold split, and clear errors on bad input."""

from __future__ import annotations

import csv
import shutil

import cv2
import numpy as np
import pytest
from sklearn.model_selection import KFold

from common.config import ConfigError, load_config
from common.readers import ImageReadError
from pamsr.data import (
    DataError,
    TrainPatches,
    check_pair,
    kfold_split,
    list_samples,
    load_images,
    read_polar,
    split_file,
)
from pamsr.degradation import DegradationError
from pamsr.settings import PROJECT_DIR, Config, DataConfig, DisplacementConfig, PatchSelectionConfig


def data_cfg(root, **kw) -> DataConfig:
    return DataConfig(root=str(root), patch_size=16, epoch_size=8, **kw)


def test_reader_and_split_on_synthetic_layout(synth_root):
    for name in ("raw", "mid_filter", "clean", "reg_mid"):
        samples = list_samples(synth_root, name)
        assert len(samples) == 5 and all(p.name == "1_X1_X1.png" for _, p in samples)
    names = [s for s, _ in list_samples(synth_root, "reg_mid")]
    folds = kfold_split(names, 5, 55)
    expected = [0] * 5
    for k, (_, test) in enumerate(KFold(5, shuffle=True, random_state=55).split(names)):
        for i in test:
            expected[i] = k
    assert folds == expected
    cfg = data_cfg(synth_root)
    train, test = load_images(cfg, "train"), load_images(cfg, "test")
    assert len(train) == 4 and len(test) == 1 and test[0].name not in {t.name for t in train}
    assert test[0].hr.shape == (128, 128) and test[0].lr.shape == (64, 64)  # 104 + 2*12 = 128
    record = split_file(cfg, "reg_mid")  # the split is recorded under data/splits/pamsr/, never in the data root
    assert record.is_file() and synth_root not in record.parents
    assert not list(synth_root.rglob("*folds*"))
    item = TrainPatches(train, cfg, PatchSelectionConfig(), DisplacementConfig(), seed=0)[3]
    assert item["lr"].shape == (1, 16, 16) and item["hr"].shape == (1, 32, 32)
    assert float(item["hr"].min()) >= 0.0 and float(item["hr"].max()) <= 1.0


def test_missing_folder_and_missing_hr_file(synth_root, tmp_path):
    with pytest.raises(DataError, match="dataset folder not found"):
        list_samples(tmp_path, "reg_mid")
    (tmp_path / "reg_mid" / "brain_9").mkdir(parents=True)
    with pytest.raises(DataError, match="has no 1_X1_X1.png"):
        list_samples(tmp_path, "reg_mid")


def test_corrupt_colour_and_all_zero_images(tmp_path):
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ImageReadError, match="corrupt.png"):
        read_polar(bad)
    zero = tmp_path / "zero.png"
    cv2.imwrite(str(zero), np.zeros((32, 32), np.uint8))
    with pytest.raises(ImageReadError, match="all zeros"):
        read_polar(zero)
    colour = tmp_path / "colour.png"
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 2] = 200
    cv2.imwrite(str(colour), rgb)
    with pytest.raises(ImageReadError, match="colour"):
        read_polar(colour)


def test_hr_size_not_divisible_after_padding(synth_root, tmp_path):
    root = tmp_path / "odd"
    shutil.copytree(synth_root / "reg_mid", root / "reg_mid")
    with pytest.raises(DegradationError, match="not divisible by scale 8"):
        load_images(data_cfg(root, scale=8, pad=10), "all")


def test_lr_hr_pair_mismatch():
    with pytest.raises(DegradationError, match="do not match at scale 2"):
        check_pair(np.zeros((32, 32)), np.zeros((60, 64)), 2, "case_1")
    check_pair(np.zeros((32, 32)), np.zeros((64, 64)), 2)


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"unknown config key `data.patchsize`.*patch_size"):
        load_config(Config, PROJECT_DIR / "configs" / "ci.yaml", ["data.patchsize=32"])
    with pytest.raises(ConfigError, match="patch_selection.score"):
        load_config(Config, PROJECT_DIR / "configs" / "ci.yaml", ["patch_selection.score=sum"])
    with pytest.raises(ConfigError, match="data.scale"):
        load_config(Config, PROJECT_DIR / "configs" / "ci.yaml", ["data.scale=5"])
    for name in ("default", "paper_x2", "paper_x4", "paper_x8", "paper_x2_rec", "edsr_paper_x2", "rcan_paper_x2"):
        load_config(Config, PROJECT_DIR / "configs" / f"{name}.yaml")


def test_preprocess_entry_point_registers_a_folder(synth_root, tmp_path):
    from pamsr import preprocess

    shutil.copytree(synth_root / "raw", tmp_path / "raw")
    out = preprocess.main(["--root", str(tmp_path), "--src", "raw", "--dst", "reg", "--subpixel"])
    assert len(list_samples(tmp_path, "reg")) == 5
    before = (out / "registration.csv").read_bytes()
    with pytest.raises(DataError, match="not empty"):  # registered data is never written over
        preprocess.main(["--root", str(tmp_path), "--src", "raw", "--dst", "reg"])
    assert (out / "registration.csv").read_bytes() == before
    text = (out / "registration.csv").read_text()
    with (synth_root / "shifts.csv").open() as handle:
        truth = list(csv.DictReader(handle))
    for item in truth:  # the fixed shift plus a slow drift: the global estimate lands on the scan's mean shift
        row = next(r for r in text.splitlines() if r.startswith(item["sample"] + ","))
        assert abs(float(row.split(",")[1]) - float(item["mean_shift"])) < 0.15


def test_clean_target_on_the_hr_scale_and_pair_checks(synth_root, tmp_path):
    """The clean ground truth comes with every image, on the HR's intensity scale; a clean file of another size and
    an LR/HR patch pair of mismatching size stop with the file named."""
    cfg = data_cfg(synth_root)
    (item,) = load_images(cfg, "test")
    assert item.clean is not None and item.clean.shape == item.hr.shape
    assert abs(float(np.mean(item.clean)) - float(np.mean(item.hr))) < 0.02  # same scale, noise has mean ~0
    assert load_images(data_cfg(synth_root, clean_dataset=None), "test")[0].clean is None
    root = tmp_path / "bad_clean"
    for name in ("reg_mid", "clean"):
        shutil.copytree(synth_root / name, root / name)
    victim = root / "clean" / item.name / "1_X1_X1.png"
    cv2.imwrite(str(victim), cv2.imread(str(victim), cv2.IMREAD_GRAYSCALE)[:-2])
    with pytest.raises(DegradationError, match=f"{item.name}.*clean ground truth must have the HR's size"):
        load_images(data_cfg(root), "test")
    patches = TrainPatches(load_images(cfg, "train"), cfg, PatchSelectionConfig(), DisplacementConfig(), seed=0)
    patches.images[0].hr = patches.images[0].hr[:-3]  # a broken pair: the HR lost rows
    with pytest.raises(DegradationError, match=f"{patches.images[0].name} patch .* do not match at scale 2"):
        for i in range(0, len(patches), len(patches.images)):
            patches[i]


def test_synthetic_displacement_is_systematic(synth_root):
    """A real scanner's odd/even offset keeps its sign: every scan is shifted the same way, by max/2..max px, and
    drifts slowly around that value."""
    with (synth_root / "shifts.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    shifts = np.array([float(r["shift"]) for r in rows])
    assert (shifts > 0).all() and (shifts >= 1.5).all() and (shifts <= 3).all()
    assert all(abs(float(r["mean_shift"]) - float(r["shift"])) < 0.1 and float(r["drift"]) > 0 for r in rows)
