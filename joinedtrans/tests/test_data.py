"""Readers on the synthetic trees and every kind of bad input (each error names the file/key and the fix)."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from common.datasets import DatasetFolderError
from common.readers import ImageReadError
from joinedtrans.data import DataError, gamma_fold_ids, list_cases, load_case, read_table
from joinedtrans.settings import DataConfig
from joinedtrans.synth import ensure_synthetic
from joinedtrans.vessel_data import list_vessel_cases, load_vessel


def _cfg(root: Path, dataset: str = "refuge", **kw) -> DataConfig:
    return DataConfig(root=str(root), synthetic=False, dataset=dataset, **kw)


@pytest.mark.parametrize("dataset,counts", [("refuge", (6, 2, 4)), ("gamma", (8, 2, 2)), ("palm", (4, 1, 2))])
def test_readers_on_synthetic_trees(synth_root: Path, dataset: str, counts) -> None:
    for split, n in zip(("train", "val", "test"), counts):
        cases = list_cases(_cfg(synth_root, dataset), split)
        assert len(cases) == n
        item = load_case(cases[0])
        assert item.image.shape[:2] == item.mask.shape and item.image.dtype == np.uint8
        allowed = {0, 255} if dataset == "palm" else {0, 128, 255}
        assert set(np.unique(item.mask)) <= allowed
    refuge = list_cases(_cfg(synth_root), "test")
    assert any(c.hard for c in refuge)  # hard_cases.csv attached
    palm = list_cases(_cfg(synth_root, "palm"), "train") + list_cases(_cfg(synth_root, "palm"), "val")
    assert any(c.fovea is None for c in palm)  # (0, 0) = not visible


def test_fovea_coordinates_are_column_row(synth_root: Path) -> None:
    case = list_cases(_cfg(synth_root), "train")[0]
    item = load_case(case)
    frame = pd.read_excel(synth_root / "REFUGE" / "Annotation-Training400" / "Fovea_location.xlsx")
    row = frame[frame["ImgName"] == case.image.name].iloc[0]
    assert case.fovea == (row["Fovea_X"], row["Fovea_Y"])
    one = list_cases(_cfg(synth_root, coords_one_based=True), "train")[0]
    assert one.fovea == (case.fovea[0] - 1, case.fovea[1] - 1)
    assert item.image.shape[1] == 160 and item.image.shape[0] == 152  # W x H as written


def test_gamma_folds_are_joined_blocks() -> None:
    seen = []
    for fold in range(1, 6):
        train, val = gamma_fold_ids(fold)
        assert len(val) == 20 and not set(train) & set(val) and len(train) == 80
        seen += val
    assert gamma_fold_ids(1)[1] == list(range(81, 101)) and sorted(seen) == list(range(1, 101))


def test_image_without_mask_and_mask_without_image(tree: Path) -> None:
    masks = tree / "REFUGE" / "REFUGE-Validation400-GT" / "Disc_Cup_Masks"
    moved = masks / "V0001.bmp"
    moved.rename(tree / "spare.bmp")
    with pytest.raises(DataError, match=r"V0001\.jpg has no mask.*Restore the mask"):
        list_cases(_cfg(tree), "val")
    (tree / "spare.bmp").rename(masks / "V0009.bmp")
    (tree / "REFUGE" / "REFUGE-Validation400" / "V0001.jpg").unlink()
    with pytest.raises(DataError, match=r"V0002\.bmp|V0009\.bmp has no image"):
        list_cases(_cfg(tree), "val")


def test_mask_values_outside_the_encoding_and_snap(tree: Path) -> None:
    case = list_cases(_cfg(tree), "val")[0]
    mask = np.array(Image.open(case.mask))
    mask[mask == 128] = 120
    Image.fromarray(mask).save(case.mask)
    with pytest.raises(DataError, match=r"V0001\.bmp holds value\(s\) \[120\].*data\.mask_snap=true"):
        load_case(case)
    snapped = load_case(case, snap=True)
    assert set(np.unique(snapped.mask)) == {0, 128, 255}


def test_mask_image_size_mismatch(tree: Path) -> None:
    case = list_cases(_cfg(tree), "val")[0]
    Image.fromarray(np.full((10, 12), 255, np.uint8)).save(case.mask)
    with pytest.raises(DataError, match=r"12x10 but image .*152x152"):
        load_case(case)


def _table(tree: Path) -> Path:
    return tree / "REFUGE" / "REFUGE-Validation400-GT" / "Fovea_locations.xlsx"


@pytest.mark.parametrize("edit,message", [
    (lambda f: f.drop(columns=["Fovea_Y"]), r"lacks column\(s\) \['Fovea_Y'\]"),
    (lambda f: pd.concat([f, pd.DataFrame([{"ImgName": "V0099.jpg", "Fovea_X": 1.0, "Fovea_Y": 1.0}])]),
     r"row V0099 names no image"),
    (lambda f: f.iloc[1:], r"V0001\.jpg has no row"),
])
def test_fovea_table_defects(tree: Path, edit, message: str) -> None:
    path = _table(tree)
    edit(pd.read_excel(path)).to_excel(path, index=False)
    with pytest.raises(DataError, match=message):
        list_cases(_cfg(tree), "val")


def test_fovea_outside_the_image(tree: Path) -> None:
    path = _table(tree)
    frame = pd.read_excel(path)
    frame.loc[0, "Fovea_X"] = 5000.0
    frame.to_excel(path, index=False)
    case = list_cases(_cfg(tree), "val")[0]
    with pytest.raises(DataError, match=r"lies outside the 152x152 image.*x = column"):
        load_case(case)


def test_xlsx_without_openpyxl(tree: Path, monkeypatch) -> None:
    real_import = builtins.__import__

    def no_openpyxl(name, *args, **kwargs):
        if name == "openpyxl":
            raise ImportError("No module named 'openpyxl'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openpyxl)
    with pytest.raises(DataError, match=r"needs openpyxl.*pip install openpyxl.*data\.fovea_table"):
        read_table(_table(tree), ("ImgName", "Fovea_X", "Fovea_Y"))


def test_truncated_jpeg(tree: Path) -> None:
    case = list_cases(_cfg(tree), "val")[0]
    data = case.image.read_bytes()
    case.image.write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageReadError, match=r"V0001\.jpg.*corrupt or truncated"):
        load_case(case)


def test_vessel_readers_and_non_binary_mask(tree: Path, tiny) -> None:
    train, held = list_vessel_cases(tree, ("drive", "chase_db1", "hrf"))
    assert len(held) == tiny.n_drive // 2 and len(train) == tiny.n_drive // 2 + tiny.n_chase + tiny.n_hrf
    image, mask = load_vessel(train[0])
    assert image.shape[:2] == mask.shape and mask.dtype == bool and mask.any()
    bad = next(c for c in train if c.dataset == "chase_db1")
    arr = np.array(Image.open(bad.vessels))
    arr[0, :5] = 77
    Image.fromarray(arr).save(bad.vessels)
    with pytest.raises(DataError, match=r"1stHO\.png holds values .*expected binary 0/255"):
        load_vessel(bad)


def test_generator_refuses_a_foreign_folder(tmp_path: Path, tiny) -> None:
    foreign = tmp_path / "real"
    foreign.mkdir()
    (foreign / "g0001.jpg").write_bytes(b"not mine")
    with pytest.raises(DatasetFolderError, match="not empty"):
        ensure_synthetic(foreign, tiny)
    assert (foreign / "g0001.jpg").read_bytes() == b"not mine" and len(list(foreign.iterdir())) == 1


def test_generator_reuses_its_own_folder_and_refuses_other_params(synth_root: Path, tiny) -> None:
    stamp = json.loads((synth_root / ".synthetic-stamp.json").read_text())
    assert stamp["n_train"] == tiny.n_train
    assert ensure_synthetic(synth_root, tiny) == synth_root
    with pytest.raises(DatasetFolderError, match="other parameters"):
        ensure_synthetic(synth_root, type(tiny)(**{**tiny.__dict__, "seed": 5}))
