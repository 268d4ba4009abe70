"""Data tests: the ImageFolder/CSV readers on synth.py output, converters, transforms, and every kind of bad input
raising a clear error, before any training."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from common.readers import ImageReadError
from fpt_plus.convert import convert, stratified_split
from fpt_plus.data import (
    DatasetError,
    load_records,
    load_rgb,
    lpm_transform,
    read_split_csv,
    scan_imagefolder,
    side_transform,
)
from fpt_plus.settings import SynthConfig
from fpt_plus.synth import grade_names, render_image


def test_imagefolder_reader_on_synthetic_layout(ci_root: Path) -> None:
    records, classes = scan_imagefolder(ci_root / "data")
    assert classes == grade_names(5)
    counts = {s: sum(r.split == s for r in records) for s in ("train", "val", "test")}
    assert counts == {"train": 20, "val": 10, "test": 10}
    assert all(classes[r.label] == Path(r.key).parent.name for r in records)
    assert len({r.key for r in records}) == len(records)


def _area_down(image: np.ndarray, factor: int) -> np.ndarray:
    """``(S, S, 3)`` -> ``(S/f, S/f, 3)`` float mean over f x f cells (the side branch's 4x down-sampling)."""
    s = image.shape[0] // factor
    return image.astype(np.float64).reshape(s, factor, s, factor, 3).mean(axis=(1, 3))


def test_low_resolution_image_is_grade_independent() -> None:
    """Information bound of the generator at side resolution: one seed rendered at every grade gives images whose
    4x area-down-sampled versions differ by at most the uint8 rounding (< 1 grey level), while the full-resolution
    images differ by the texture. The low-resolution image is thus (up to rounding) a function of draws that do not
    depend on the grade: any low-resolution classifier, counting dark discs included, is at chance."""
    cfg = SynthConfig()
    for seed in range(3):
        images = [render_image(g, cfg, np.random.default_rng(seed)) for g in range(cfg.num_grades)]
        lows = [_area_down(im, 4) for im in images]
        for g in range(1, cfg.num_grades):
            low_gap = np.abs(lows[g] - lows[0])
            high_gap = np.abs(images[g].astype(np.float64) - images[0])
            assert low_gap.max() <= 1.0 and low_gap.mean() < 0.05, (seed, g, low_gap.max(), low_gap.mean())
            assert high_gap.max() >= 255 * cfg.texture_amplitude[0] - 1  # the texture is there at full resolution
            assert (high_gap > 0).mean() > 0.002 * g


def _auc_of(score: np.ndarray, grades: np.ndarray) -> float:
    """Macro one-vs-rest AUC of a 1-D statistic, each class scored by how close the statistic is to the class's
    mean in the other half (fit on even, scored on odd images): the count-statistic style bound."""
    from sklearn.metrics import roc_auc_score

    fit, test = np.arange(len(score)) % 2 == 0, np.arange(len(score)) % 2 == 1
    centres = np.array([score[fit & (grades == g)].mean() for g in range(grades.max() + 1)])
    closeness = -np.abs(score[test, None] - centres[None]) / (score.std() + 1e-9)
    probs = np.exp(closeness) / np.exp(closeness).sum(1, keepdims=True)
    return float(roc_auc_score(grades[test], probs, multi_class="ovr", labels=list(range(len(centres)))))


def test_low_resolution_statistics_are_at_chance_and_the_texture_is_not() -> None:
    """Over 120 images of random grades: the dark-disc area and the high-frequency energy of the down-sampled image
    (the statistics a low-resolution counter could use) are at chance, the checkerboard energy at full resolution
    is not (so the test can fail in both directions)."""
    cfg = SynthConfig(image_size=128, lesion_radius=[5, 7])
    rng = np.random.default_rng(7)
    grades = np.arange(120) % cfg.num_grades
    dark, energy, texture = [], [], []
    checker = np.indices((128, 128)).sum(0) % 2 * 2 - 1.0
    for g in grades:
        image = render_image(int(g), cfg, rng)
        low = _area_down(image, 4)[..., 1]
        dark.append((low < np.median(low[low > 10]) - 3).sum())
        energy.append(np.abs(np.diff(low, 2, axis=0)).sum() + np.abs(np.diff(low, 2, axis=1)).sum())
        cells = (image[..., 1].astype(np.float64) * checker).reshape(64, 2, 64, 2).mean(axis=(1, 3))
        texture.append((np.abs(cells) > 6).sum())  # 2x2 cells holding the checkerboard (amplitude >= 12.75)
    aucs = {name: _auc_of(np.array(stat, float), grades)
            for name, stat in (("dark area", dark), ("low-res energy", energy), ("texture", texture))}
    assert abs(aucs["dark area"] - 0.5) < 0.12 and abs(aucs["low-res energy"] - 0.5) < 0.12, aucs
    assert aucs["texture"] > 0.9, aucs


def test_missing_class_folder_in_one_split(ci_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "d"
    shutil.copytree(ci_root / "data", root)
    shutil.rmtree(root / "val" / "3_severe")
    with pytest.raises(DatasetError, match=r"3_severe.*missing from .*val"):
        scan_imagefolder(root)


def test_unknown_class_folder(ci_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "d"
    shutil.copytree(ci_root / "data", root)
    (root / "test" / "9_other").mkdir()
    with pytest.raises(DatasetError, match="9_other"):
        scan_imagefolder(root)


def test_missing_split_folder(tmp_path: Path) -> None:
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(DatasetError, match="val"):
        scan_imagefolder(tmp_path)


def test_image_that_is_not_an_image(tmp_path: Path) -> None:
    bad = tmp_path / "x.png"
    bad.write_text("not an image")
    with pytest.raises(ImageReadError, match="x.png"):
        load_rgb(bad)
    with pytest.raises(ImageReadError, match="not found"):
        load_rgb(tmp_path / "missing.png")


def _csv_dataset(tmp_path: Path, labels: list[str]) -> Path:
    for i in range(len(labels)):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / f"{i}.png")
    splits = (["train", "val", "test"] * len(labels))[: len(labels)]
    pd.DataFrame({"image": [f"{i}.png" for i in range(len(labels))], "label": labels, "split": splits}).to_csv(
        tmp_path / "split.csv", index=False)
    return tmp_path / "split.csv"


def test_split_csv_reader_and_unknown_label(tmp_path: Path) -> None:
    _csv_dataset(tmp_path, ["benign", "malignant", "benign", "malignant", "benign", "malignant"])
    records, classes = read_split_csv(tmp_path, tmp_path / "split.csv")
    assert classes == ["benign", "malignant"] and [r.label for r in records] == [0, 1, 0, 1, 0, 1]
    with pytest.raises(DatasetError, match=r"label 'malignant' is not in the class list"):
        read_split_csv(tmp_path, tmp_path / "split.csv", classes=["benign", "nevus"])


@pytest.mark.parametrize(("labels", "match"), [
    (["0", "1", "2", "1", "2", "0", "2", "0", "7"], r"class index\(es\) \[3, 4, 5, 6, 7\] without a train image"),
    (["0", "1", "0", "1", "0", "5_unknown"], r"mix integers and names \(\['5_unknown'\]\)"),
    (["benign", "malignant", "benign", "malignant", "benign", "nevus"], r"\['nevus'\] occur in val/test but never"),
])
def test_split_csv_without_class_list_refuses_gaps_and_unknown_labels(tmp_path: Path, labels: list[str],
                                                                      match: str) -> None:
    """``data.classes: null`` on CSV data: a label that would silently become a new class stops the run, naming
    ``data.classes`` as the fix (with the class list the same file reads, or fails on the unknown label)."""
    path = _csv_dataset(tmp_path, labels)
    with pytest.raises(DatasetError, match=match) as info:
        read_split_csv(tmp_path, path)
    assert "data.classes" in str(info.value)


def test_split_csv_wrong_column(tmp_path: Path) -> None:
    path = _csv_dataset(tmp_path, ["a", "b", "a"])
    pd.read_csv(path).rename(columns={"label": "diagnosis"}).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['label'\]"):
        load_records(tmp_path, "csv", path)


def test_chncxr_converter_and_seeded_split(tmp_path: Path) -> None:
    src = tmp_path / "ChinaSet_AllFiles" / "CXR_png"
    src.mkdir(parents=True)
    for i in range(20):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(src / f"CHNCXR_{i:04d}_{i % 2}.png")
    out = convert("chncxr", tmp_path / "ChinaSet_AllFiles", tmp_path / "split.csv", seed=3)
    frame = pd.read_csv(out)
    assert set(frame["label"]) == {"normal", "tuberculosis"}
    assert frame.loc[frame["image"].str.endswith("_1.png"), "label"].eq("tuberculosis").all()
    assert set(frame["split"]) == {"train", "val", "test"}
    again = pd.read_csv(convert("chncxr", tmp_path / "ChinaSet_AllFiles", tmp_path / "again.csv", seed=3))
    assert frame.equals(again)
    records, classes = read_split_csv(tmp_path / "ChinaSet_AllFiles", out)
    assert classes == ["normal", "tuberculosis"] and len(records) == 20


def test_ddr_converter_drops_ungradable_and_keeps_official_split(tmp_path: Path) -> None:
    base = tmp_path / "DR_grading"
    for native, grades in (("train", [0, 1, 5]), ("valid", [2, 3]), ("test", [4, 0])):
        (base / native).mkdir(parents=True)
        lines = []
        for i, g in enumerate(grades):
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(base / native / f"{native}{i}.jpg")
            lines.append(f"{native}{i}.jpg {g}")
        (base / f"{native}.txt").write_text("\n".join(lines) + "\n")
    frame = pd.read_csv(convert("ddr", tmp_path, tmp_path.parent / f"{tmp_path.name}_ddr.csv"))
    assert len(frame) == 6 and "5" not in set(frame["label"].astype(str))
    assert frame.groupby("split").size().to_dict() == {"test": 2, "train": 2, "val": 2}


def test_isic2018_converter_one_hot(tmp_path: Path) -> None:
    folder = tmp_path / "ISIC2018_Task3_Training_Input"
    folder.mkdir()
    classes = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    rows = []
    for i in range(70):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / f"ISIC_{i:07d}.jpg")
        rows.append({"image": f"ISIC_{i:07d}", **{c: float(j == i % 7) for j, c in enumerate(classes)}})
    pd.DataFrame(rows).to_csv(tmp_path / "ISIC2018_Task3_Training_GroundTruth.csv", index=False)
    frame = pd.read_csv(convert("isic2018", tmp_path, tmp_path.parent / f"{tmp_path.name}_isic.csv"))
    assert frame["label"].tolist()[:7] == classes
    assert set(frame["split"]) == {"train", "val", "test"}


def test_stratified_split_keeps_groups_together() -> None:
    labels = ["a"] * 10 + ["b"] * 10
    groups = [f"case{i // 2}" for i in range(20)]
    splits = stratified_split(labels, seed=0, groups=groups)
    for g in set(groups):
        assert len({s for s, gg in zip(splits, groups) if gg == g}) == 1


def test_transforms_sizes_and_determinism() -> None:
    image = torch.randint(0, 255, (3, 90, 140), dtype=torch.uint8)
    mean, std = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
    assert side_transform(32, mean, std, train=True)(image).shape == (3, 32, 32)
    assert side_transform(32, mean, std, train=False)(image).shape == (3, 32, 32)
    lpm = lpm_transform(64, mean, std)
    assert lpm(image).shape == (3, 64, 64)
    assert torch.equal(lpm(image), lpm(image))


def test_converter_never_writes_into_the_download(tmp_path: Path) -> None:
    src = tmp_path / "CXR_png"
    src.mkdir()
    for i in range(10):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(src / f"CHNCXR_{i:04d}_{i % 2}.png")
    with pytest.raises(DatasetError, match="inside the download"):
        convert("chncxr", tmp_path, tmp_path / "split.csv")
    assert not (tmp_path / "split.csv").exists()


def test_files_with_other_suffixes_are_named_not_dropped_silently(ci_root: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "d"
    shutil.copytree(ci_root / "data", root)
    (root / "train" / "0_none" / "notes.txt").write_text("grader remarks")
    records, _ = scan_imagefolder(root)
    assert len(records) == 40
    out = capsys.readouterr().out
    assert "ignored 1 file(s)" in out and "notes.txt" in out


def test_synthetic_generator_refuses_a_foreign_folder_and_leaves_it_untouched(tmp_path: Path, make_cfg) -> None:
    from common.datasets import DatasetFolderError
    from fpt_plus.pipeline import prepare_data

    real = tmp_path / "data"
    (real / "train").mkdir(parents=True)
    foreign = real / "train" / "ISIC_0024306.jpg"
    foreign.write_bytes(b"the user's real image")
    cfg = make_cfg(tmp_path, "data.synthetic=true")
    with pytest.raises(DatasetFolderError, match="refusing to write"):
        prepare_data(cfg)
    assert foreign.read_bytes() == b"the user's real image"
    assert sorted(p.name for p in real.rglob("*")) == ["ISIC_0024306.jpg", "train"]
    assert not (tmp_path / "data.partial").exists()


def test_synthetic_stamp_with_other_parameters_is_refused(ci_root: Path, make_cfg) -> None:
    from common.datasets import DatasetFolderError
    from fpt_plus.pipeline import prepare_data

    with pytest.raises(DatasetFolderError, match="other parameters"):
        prepare_data(make_cfg(ci_root, "data.synth.seed=99"))


def test_truncated_image_is_found_by_the_file_check(ci_root: Path, tmp_path: Path, make_cfg) -> None:
    from common.datasets import DataVerificationError
    from fpt_plus.pipeline import prepare_data

    root = tmp_path / "data"
    shutil.copytree(ci_root / "data", root)
    bad = sorted((root / "test").rglob("*.png"))[3]
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(DataVerificationError, match=bad.name):
        prepare_data(make_cfg(tmp_path))
    assert prepare_data(make_cfg(tmp_path, "data.verify='off'")).num_classes == 5  # the check is what finds it
