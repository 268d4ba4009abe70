"""Converters from each FPT+ dataset's native download layout to a split file ``(image, label, split)`` that
``data.format=csv`` reads (the papers' own splits are not published, so where a dataset ships no
official split a stratified split seeded by ``--seed`` is drawn: 70/10/20 train/val/test by default).

    python convert.py messidor2 --src /data/messidor2 [--out split.csv] [--seed 0]

The split file goes to ``data/splits/fpt_plus/<src name>-<hash of src>/split.csv`` by default (where
``data.format: csv`` with ``data.split_file: null`` finds it): nothing is ever written into the download.

Supported native layouts (paths relative to ``--src``; see README for trees):

- ``messidor2``: ``IMAGES/<image_id>`` + ``messidor_data.csv`` (Kaggle google-brain/messidor2-dr-grades: columns
  ``image_id, adjudicated_dr_grade, adjudicated_dme, adjudicated_gradable``); ungradable images dropped; seeded split.
- ``ddr``: ``DR_grading/{train,valid,test}/*.jpg`` + ``DR_grading/{train,valid,test}.txt`` (``<file> <grade>``);
  grade 5 (ungradable) dropped; official split.
- ``isic2016``: ``ISBI2016_ISIC_Part3_{Training,Test}_Data/*.jpg`` + ``ISBI2016_ISIC_Part3_Training_GroundTruth.csv``
  (no header: ``id, benign|malignant``) and ``ISBI2016_ISIC_Part3_Test_GroundTruth.csv`` (no header: ``id, 0|1``);
  official train/test, val drawn from train.
- ``isic2018``: ``ISIC2018_Task3_{Training,Validation,Test}_Input/*.jpg`` + one-hot ground-truth CSVs
  ``ISIC2018_Task3_{...}_GroundTruth.csv`` (``image, MEL, NV, BCC, AKIEC, BKL, DF, VASC``; the training one may sit in
  ``ISIC2018_Task3_Training_GroundTruth/``); official splits for those present, the rest drawn from training.
- ``ddsm`` (Mini-DDSM): ``<Benign|Cancer|Normal>/<case>/*`` images (``*Mask*`` files skipped); split by case.
- ``chncxr``: ``CXR_png/CHNCXR_<id>_<0|1>.png`` (last digit: 0 normal, 1 tuberculosis); seeded split.
- ``covid``, ``cmmd`` and anything else: ``class_folders`` (``<class>/**/<image>``) or an existing
  ``(image, label[, split])`` CSV via ``--labels`` (CMMD is distributed as DICOM + clinical spreadsheet; convert the
  DICOMs to PNG first and list them with their ``classification`` in such a CSV).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from common.datasets import split_path
from common.readers import require_columns
from fpt_plus.data import IMAGE_SUFFIXES, DatasetError

__all__ = ["CONVERTERS", "stratified_split", "convert", "main"]

ISIC2018_CLASSES = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]


def stratified_split(labels: Sequence[str], seed: int, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
                     groups: Sequence[str] | None = None) -> list[str]:
    """Seeded per-class split into train/val/test (whole ``groups``, e.g. patients or cases, stay together)."""
    rng = np.random.default_rng(seed)
    labels = list(labels)
    groups = list(groups) if groups is not None else [str(i) for i in range(len(labels))]
    out = [""] * len(labels)
    for label in sorted(set(labels)):
        members = sorted({g for g, y in zip(groups, labels) if y == label})
        rng.shuffle(members)
        n = len(members)
        n_test = int(round(fractions[2] * n))
        n_val = int(round(fractions[1] * n))
        assign = {g: "test" for g in members[:n_test]}
        assign.update({g: "val" for g in members[n_test:n_test + n_val]})
        assign.update({g: "train" for g in members[n_test + n_val:]})
        for i, (g, y) in enumerate(zip(groups, labels)):
            if y == label and not out[i]:
                out[i] = assign[g]
    return out


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise DatasetError(f"{path} not found: expected {what} (see convert.py --help for the native layout)")
    return path


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _frame(src: Path, paths: Sequence[Path], labels: Sequence[str], splits: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({"image": [p.relative_to(src).as_posix() for p in paths], "label": list(labels),
                         "split": list(splits)})


def convert_messidor2(src: Path, seed: int) -> pd.DataFrame:
    table_path = _need(src / "messidor_data.csv", "the Kaggle messidor2-dr-grades label file")
    table = pd.read_csv(table_path)
    require_columns(table, ["image_id", "adjudicated_dr_grade", "adjudicated_gradable"], table_path)
    table = table[table["adjudicated_gradable"] == 1].dropna(subset=["adjudicated_dr_grade"])
    folder = _need(src / "IMAGES", "the Messidor-2 image folder IMAGES/")
    paths = [folder / name for name in table["image_id"]]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} image(s) listed in {table_path} are missing, e.g. {missing[:3]}")
    labels = [str(int(g)) for g in table["adjudicated_dr_grade"]]
    # the two eyes of an exam share a prefix (e.g. 20051020_43808_0100_PP / IM00xxx pairs): group by exam when known
    return _frame(src, paths, labels, stratified_split(labels, seed))


def convert_ddr(src: Path, seed: int) -> pd.DataFrame:
    base = src / "DR_grading" if (src / "DR_grading").is_dir() else src
    rows = []
    for split, native in (("train", "train"), ("val", "valid"), ("test", "test")):
        listing = _need(base / f"{native}.txt", f"DDR's {native}.txt (lines `<file> <grade>`)")
        for line in listing.read_text().split("\n"):
            if not line.strip():
                continue
            name, grade = line.split()[:2]
            if int(grade) == 5:  # ungradable
                continue
            path = base / native / name
            if not path.is_file():
                raise DatasetError(f"{listing} lists {name} but {path} does not exist")
            rows.append((path.relative_to(src).as_posix(), str(int(grade)), split))
    return pd.DataFrame(rows, columns=["image", "label", "split"])


def convert_isic2016(src: Path, seed: int) -> pd.DataFrame:
    train_gt = _need(src / "ISBI2016_ISIC_Part3_Training_GroundTruth.csv", "the ISIC 2016 training ground truth")
    test_gt = _need(src / "ISBI2016_ISIC_Part3_Test_GroundTruth.csv", "the ISIC 2016 test ground truth")
    train = pd.read_csv(train_gt, header=None, names=["id", "label"])
    test = pd.read_csv(test_gt, header=None, names=["id", "label"])
    to_name = {"benign": "benign", "malignant": "malignant", "0": "benign", "1": "malignant", "0.0": "benign",
               "1.0": "malignant"}
    frames = []
    for table, folder, gt in ((train, "ISBI2016_ISIC_Part3_Training_Data", train_gt),
                              (test, "ISBI2016_ISIC_Part3_Test_Data", test_gt)):
        labels = []
        for value in table["label"].astype(str):
            if value not in to_name:
                raise DatasetError(f"{gt}: label {value!r} is not benign/malignant/0/1")
            labels.append(to_name[value])
        paths = [_need(src / folder, f"folder {folder}/") / f"{i}.jpg" for i in table["id"]]
        frames.append((paths, labels))
    (tr_paths, tr_labels), (te_paths, te_labels) = frames
    tr_split = stratified_split(tr_labels, seed, fractions=(0.9, 0.1, 0.0))
    return pd.concat([_frame(src, tr_paths, tr_labels, tr_split),
                      _frame(src, te_paths, te_labels, ["test"] * len(te_paths))], ignore_index=True)


def convert_isic2018(src: Path, seed: int) -> pd.DataFrame:
    frames = {}
    for native in ("Training", "Validation", "Test"):
        candidates = [src / f"ISIC2018_Task3_{native}_GroundTruth.csv",
                      src / f"ISIC2018_Task3_{native}_GroundTruth" / f"ISIC2018_Task3_{native}_GroundTruth.csv"]
        gt = next((c for c in candidates if c.is_file()), None)
        if gt is None:
            if native == "Training":
                raise DatasetError(f"none of {candidates} exists: ISIC 2018 Task 3 needs the training ground truth")
            continue
        table = pd.read_csv(gt)
        require_columns(table, ["image", *ISIC2018_CLASSES], gt)
        onehot = table[ISIC2018_CLASSES].to_numpy()
        if not np.allclose(onehot.sum(1), 1):
            raise DatasetError(f"{gt}: every row must have exactly one of {ISIC2018_CLASSES} set to 1")
        labels = [ISIC2018_CLASSES[i] for i in onehot.argmax(1)]
        folder = _need(src / f"ISIC2018_Task3_{native}_Input", f"ISIC2018_Task3_{native}_Input/")
        frames[native] = ([folder / f"{i}.jpg" for i in table["image"]], labels)
    paths, labels = frames["Training"]
    if "Validation" in frames and "Test" in frames:
        splits = ["train"] * len(paths)
    elif "Validation" in frames:
        splits = stratified_split(labels, seed, fractions=(0.8, 0.0, 0.2))
    else:
        splits = stratified_split(labels, seed)
    out = [_frame(src, paths, labels, splits)]
    for native, split in (("Validation", "val"), ("Test", "test")):
        if native in frames:
            out.append(_frame(src, frames[native][0], frames[native][1], [split] * len(frames[native][0])))
    return pd.concat(out, ignore_index=True)


def convert_ddsm(src: Path, seed: int) -> pd.DataFrame:
    paths, labels, groups = [], [], []
    for label in ("Benign", "Cancer", "Normal"):
        folder = _need(src / label, f"Mini-DDSM class folder {label}/")
        for p in _images(folder):
            if "mask" in p.name.lower():
                continue
            paths.append(p)
            labels.append(label)
            groups.append(p.parent.relative_to(src).as_posix())
    return _frame(src, paths, labels, stratified_split(labels, seed, groups=groups))


def convert_chncxr(src: Path, seed: int) -> pd.DataFrame:
    folder = src / "CXR_png" if (src / "CXR_png").is_dir() else src
    paths = sorted(folder.glob("CHNCXR_*_[01].png"))
    if not paths:
        raise DatasetError(f"no CHNCXR_<id>_<0|1>.png files under {folder}")
    labels = ["tuberculosis" if p.stem.endswith("_1") else "normal" for p in paths]
    return _frame(src, paths, labels, stratified_split(labels, seed))


def convert_class_folders(src: Path, seed: int) -> pd.DataFrame:
    classes = sorted(p.name for p in src.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DatasetError(f"{src} holds no class folders (<class>/<image>)")
    paths, labels = [], []
    for name in classes:
        found = _images(src / name)
        paths += found
        labels += [name] * len(found)
    return _frame(src, paths, labels, stratified_split(labels, seed))


def convert_labels_csv(src: Path, labels_csv: Path, seed: int) -> pd.DataFrame:
    table = pd.read_csv(labels_csv, dtype=str, keep_default_na=False)
    require_columns(table, ["image", "label"], labels_csv)
    missing = [i for i in table["image"] if not (src / i).is_file()]
    if missing:
        raise DatasetError(f"{labels_csv} lists {len(missing)} image(s) missing under {src}, e.g. {missing[:3]}")
    if "split" not in table.columns:
        table["split"] = stratified_split(list(table["label"]), seed)
    return table[["image", "label", "split"]]


CONVERTERS = {"messidor2": convert_messidor2, "ddr": convert_ddr, "isic2016": convert_isic2016,
              "isic2018": convert_isic2018, "ddsm": convert_ddsm, "chncxr": convert_chncxr,
              "covid": convert_class_folders, "cmmd": convert_class_folders, "class_folders": convert_class_folders}


def convert(dataset: str, src: str | Path, out: str | Path | None = None, seed: int = 0,
            labels_csv: str | Path | None = None) -> Path:
    """Write the split file of ``dataset`` (default ``data/splits/fpt_plus/<src>/split.csv``); returns its path."""
    src = Path(src)
    if not src.is_dir():
        raise DatasetError(f"--src {src} is not a folder")
    if labels_csv is not None:
        frame = convert_labels_csv(src, Path(labels_csv), seed)
    elif dataset in CONVERTERS:
        frame = CONVERTERS[dataset](src, seed)
    else:
        raise DatasetError(f"unknown dataset {dataset!r}; choose one of {sorted(CONVERTERS)} or pass --labels CSV")
    out = split_path("fpt_plus", src, "split.csv", out)
    if out.resolve().is_relative_to(src.resolve()):
        raise DatasetError(f"--out {out} lies inside the download {src}; derived files never go into a data root")
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False)
    counts = frame.groupby(["split", "label"]).size().unstack(fill_value=0)
    print(f"{out}: {len(frame)} images\n{counts}")
    return out


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description="Native dataset layout -> split CSV (image, label, split).")
    parser.add_argument("dataset", help=f"one of {sorted(CONVERTERS)}")
    parser.add_argument("--src", required=True, help="folder of the native download")
    parser.add_argument("--out", default=None,
                        help="split CSV to write (default data/splits/fpt_plus/<src name>-<hash>/split.csv)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--labels", default=None, help="generic CSV (image, label[, split]) relative to --src")
    args = parser.parse_args(argv)
    return convert(args.dataset, args.src, args.out, args.seed, args.labels)


if __name__ == "__main__":
    main()
