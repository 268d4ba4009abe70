"""Readers on files written by synth.py, the generator's properties, and every kind of bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy import ndimage

from common.readers import ImageReadError
from octa_iqa.data import (
    DataError,
    QualityDataset,
    class_counts,
    read_drac,
    read_manifest,
    scan_socta,
    split_outstanding,
)
from octa_iqa.settings import DataConfig, SynthConfig
from octa_iqa.synth import apply_artefact, render_outstanding, write_dataset


@pytest.fixture(scope="module")
def socta(tmp_path_factory):
    root = tmp_path_factory.mktemp("socta")
    write_dataset(root, SynthConfig(size=48, train_counts=[2, 3, 5], test_counts=[1, 1, 2], seed=3))
    return root


def test_reader_counts_labels_and_normal_only(socta):
    recs = scan_socta(socta, "train")
    assert class_counts(recs) == {"ungradable": 2, "gradable": 3, "outstanding": 5}
    assert all(r.path.parent.name == str(r.label) for r in recs)
    fit, hold = split_outstanding(recs, 0.2, seed=0)
    assert {r.label for r in fit + hold} == {2}
    assert len(fit) + len(hold) == 5 and not set(fit) & set(hold)


def test_dataset_item_shape_and_range(socta):
    ds = QualityDataset(scan_socta(socta, "test"), DataConfig(image_size=32))
    item = ds[0]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert float(item["image"].min()) >= 0.0 and float(item["image"].max()) <= 1.0


def test_missing_label_folder_raises(tmp_path, socta):
    import shutil

    shutil.copytree(socta / "train", tmp_path / "train")
    shutil.rmtree(tmp_path / "train" / "1")
    with pytest.raises(DataError, match=r"label folder missing: .*train/1"):
        scan_socta(tmp_path, "train")
    with pytest.raises(DataError, match="split folder not found"):
        scan_socta(tmp_path, "test")


def test_unknown_label_folder_raises(tmp_path, socta):
    import shutil

    shutil.copytree(socta / "train", tmp_path / "train")
    (tmp_path / "train" / "3").mkdir()
    with pytest.raises(DataError, match=r"\['3'\]"):
        scan_socta(tmp_path, "train")


def test_unreadable_image_raises_naming_file(tmp_path, socta):
    import shutil

    shutil.copytree(socta / "test", tmp_path / "test")
    bad = tmp_path / "test" / "0" / "broken.png"
    bad.write_bytes(b"not a png")
    ds = QualityDataset(scan_socta(tmp_path, "test"), DataConfig(image_size=32))
    index = [r.path for r in ds.records].index(bad)
    with pytest.raises(ImageReadError, match="broken.png"):
        ds[index]


def test_manifest_reader_and_unknown_label(tmp_path, socta):
    img = next((socta / "train" / "2").iterdir())
    good = tmp_path / "m.csv"
    pd.DataFrame({"path": [str(img), str(img)], "label": ["outstanding", "1"], "split": ["train", "train"]}).to_csv(
        good, index=False)
    assert [r.label for r in read_manifest(good, "train")] == [2, 1]
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"path": [str(img)], "label": ["excellent-ish"], "split": ["train"]}).to_csv(bad, index=False)
    with pytest.raises(DataError, match=r"bad.csv row 2: unknown label 'excellent-ish'"):
        read_manifest(bad, "train")
    wrong = tmp_path / "wrong.csv"
    pd.DataFrame({"file": [str(img)], "label": [2], "split": ["train"]}).to_csv(wrong, index=False)
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['path'\]"):
        read_manifest(wrong, "train")


def test_drac_reader_with_seeded_split(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    names = [f"{i}.png" for i in range(12)]
    for name in names:
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(images / name)
    pd.DataFrame({"image name": names, "image quality level": [0, 1, 2] * 4}).to_csv(tmp_path / "labels.csv",
                                                                                     index=False)
    split = tmp_path / "splits" / "drac.csv"
    train = read_drac(tmp_path, "labels.csv", "imgs", "train", 0.25, seed=1, split_file=split)
    test = read_drac(tmp_path, "labels.csv", "imgs", "test", 0.25, seed=1, split_file=split)
    assert len(train) == 9 and len(test) == 3 and {r.label for r in test} == {0, 1, 2}
    assert split.is_file() and not list(tmp_path.glob("*split*.csv"))  # never inside the data root
    assert read_drac(tmp_path, "labels.csv", "imgs", "test", 0.25, seed=1, split_file=split) == test


def test_default_split_file_lives_outside_the_data_root(tmp_path):
    from common.datasets import split_path

    where = split_path("octa_iqa", tmp_path, "drac_split_seed1.csv")
    assert "data/splits/octa_iqa" in str(where) and tmp_path not in where.parents


def test_synth_deterministic_and_in_range(tmp_path):
    a = render_outstanding(64, 5)["image"]
    b = render_outstanding(64, 5)["image"]
    assert a.tobytes() == b.tobytes()
    assert a.min() >= 0.0 and a.max() <= 1.0
    write_dataset(tmp_path / "x", SynthConfig(size=32, train_counts=[1, 1, 1], test_counts=[0, 0, 1], seed=2))
    write_dataset(tmp_path / "y", SynthConfig(size=32, train_counts=[1, 1, 1], test_counts=[0, 0, 1], seed=2))
    for f in (tmp_path / "x").rglob("*.png"):
        assert f.read_bytes() == (tmp_path / "y" / f.relative_to(tmp_path / "x")).read_bytes()


def test_synth_faz_is_dark_and_artefacts_are_detectable():
    sample = render_outstanding(96, 1)
    img, faz = sample["image"], sample["faz"]
    assert img[faz].mean() < 0.5 * img.mean()

    def row_jump(x):
        return float(np.abs(np.diff(x.mean(axis=1))).max())

    def lap_var(x):
        return float(ndimage.laplace(x).var())

    jumps = [row_jump(apply_artefact(img, "motion", t, 7)) for t in (0.0, 0.5, 1.0)]
    assert jumps[0] < jumps[1] <= jumps[2]
    laps = [lap_var(apply_artefact(img, "blur", t, 7)) for t in (0.0, 0.3, 1.0)]
    assert laps[0] > laps[1] > laps[2]
    with pytest.raises(ValueError, match="unknown artefact"):
        apply_artefact(img, "glare", 0.5)


def test_wrong_config_key_stops_before_work(capsys):
    from octa_iqa.train import main as train_main

    with pytest.raises(SystemExit):
        train_main(["--config", "configs/ci.yaml", "model.adaptor_dims=8"])
    assert "did you mean `model.adaptor_dim`" in capsys.readouterr().err


def test_artefact_kinds_are_calibrated_to_equal_anomaly_magnitude():
    """Equal severity, about equal anomaly magnitude (global-statistics distance from outstanding images) for every
    kind: the mean over severities 0.25-1 within 25 % of the calibration target, each kind monotone in severity."""
    from octa_iqa.handcrafted import anomaly_magnitude, statistics_matrix
    from octa_iqa.synth import ARTEFACTS

    reference = statistics_matrix([render_outstanding(128, 1000 + i)["image"] for i in range(40)])
    bases = [render_outstanding(128, seed) for seed in range(6)]
    for kind in ARTEFACTS:
        mags = [float(np.median(anomaly_magnitude([apply_artefact(b["image"], kind, t, i + 100, b["vessels"])
                                                   for i, b in enumerate(bases)], reference)))
                for t in (0.25, 0.5, 0.75, 1.0)]
        assert all(a <= b + 0.05 for a, b in zip(mags, mags[1:])), (kind, mags)
        assert 0.75 * 3.0 < np.mean(mags) < 1.25 * 3.0, (kind, mags)


def test_gradable_is_local_and_ungradable_global_or_combined():
    from octa_iqa.synth import make_image

    cfg = SynthConfig(size=64)
    rng = np.random.default_rng(0)
    for _ in range(20):
        _, severity, kinds = make_image(1, cfg, rng)
        assert len(kinds) == 1 and cfg.gradable_severity[0] <= severity <= cfg.gradable_severity[1]
        _, severity, kinds = make_image(0, cfg, rng)
        assert (len(kinds) == 1 and severity >= cfg.ungradable_severity[0]) or (
            len(kinds) in (2, 3) and cfg.combined_severity[0] <= severity <= cfg.combined_severity[1])
