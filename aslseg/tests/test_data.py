"""Readers (LiTS, MSD) on files written by synth.py, reorientation, ROI / paste-back, split, and bad inputs."""

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from aslseg.data import (
    DataFormatError,
    LabelAccessError,
    UnlabelledSlices,
    extract_slices,
    labelled_subset,
    list_cases,
    load_or_make_split,
    load_volume,
    make_split,
    paste_back,
    window,
)
from aslseg.settings import SynthConfig
from aslseg.synth import ensure_synthetic, synth_volume, write_synthetic
from common.datasets import DatasetFolderError
from common.readers import ImageReadError

SMALL = SynthConfig(n_volumes=3, size=64, min_slices=10, max_slices=12, seed=3)


@pytest.fixture(scope="module")
def lits_root(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("lits"), SMALL)


def test_lits_reader_pairs_by_n_and_reorients_the_flipped_case(lits_root):
    cases = list_cases("lits", lits_root)
    assert [c.case_id for c in cases] == ["0", "1", "2"]
    for c in cases:
        assert c.image.name == f"volume-{c.case_id}.nii" and c.label.name == f"segmentation-{c.case_id}.nii"
        assert c.image.parent.name == "Training Batch 1"
    raw = nib.load(str(cases[1].image))
    assert raw.affine[0, 0] < 0  # stored flipped
    vol = load_volume(cases[1])
    image, labels, affine = synth_volume(1, SMALL)
    np.testing.assert_array_equal(vol.image, image.astype(np.float32))
    np.testing.assert_array_equal(vol.label, labels)
    assert vol.spacing == pytest.approx(tuple(np.diag(affine)[:3]))
    assert set(np.unique(vol.label)) <= {0, 1, 2}


def test_msd_layout_reads_the_same_cases_and_counts_junk(tmp_path, capsys):
    cfg = SynthConfig(**{**SMALL.__dict__, "layout": "msd"})
    root = write_synthetic(tmp_path, cfg)
    cases = list_cases("msd", root)
    assert "skipped 1 macOS resource file" in capsys.readouterr().out
    assert [c.case_id for c in cases] == ["0", "1", "2"]
    vol = load_volume(cases[2])
    image, labels, _ = synth_volume(2, SMALL)
    np.testing.assert_array_equal(vol.label, labels)


def test_roi_holds_every_liver_voxel_and_paste_back_round_trips(lits_root):
    vol = load_volume(list_cases("lits", lits_root)[0])
    s = extract_slices(vol, 64, (-200, 250), "gt_liver", 10, 2)
    meta = s.meta["0"]
    x0, x1, y0, y1 = meta["box"]
    z0, z1 = meta["z"]
    inside = np.zeros(vol.label.shape, bool)
    inside[x0:x1, y0:y1, z0:z1] = True
    assert not ((vol.label >= 1) & ~inside).any()
    liver_z = np.nonzero((vol.label >= 1).any((0, 1)))[0]
    assert z0 == max(liver_z.min() - 2, 0) and z1 == min(liver_z.max() + 3, vol.label.shape[2])
    assert s.images.shape == (z1 - z0, 64, 64) and s.images.min() >= 0 and s.images.max() <= 1
    back = paste_back(s.liver.astype(np.float32), meta)
    truth = vol.label >= 1
    dice = 2 * (back & truth).sum() / (back.sum() + truth.sum())
    assert dice > 0.95
    assert window(np.array([-300.0, -200.0, 25.0, 250.0, 400.0]), -200, 250).tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    full = extract_slices(vol, 64, (-200, 250), "none", 10, 2)
    assert full.meta["0"]["box"] == (0, 64, 0, 64) and len(full) == vol.image.shape[2]


def test_split_is_deterministic_disjoint_and_checked(tmp_path):
    ids = [str(i) for i in range(40)]
    a, b = make_split(ids, 10, 0), make_split(ids, 10, 0)
    assert a == b and len(a["test"]) == 10 and not set(a["train"]) & set(a["test"])
    assert set(a["train"]) | set(a["test"]) == set(ids)
    assert make_split(ids, 10, 1) != a
    lab = labelled_subset(a["train"], 0.1, 0)
    assert len(lab) == 3 and lab == labelled_subset(a["train"], 0.1, 0) and set(lab) <= set(a["train"])
    path = tmp_path / "split.json"
    assert load_or_make_split(path, ids, 10, 0)["test"] == a["test"]
    with pytest.raises(DataFormatError, match="not in the dataset"):
        load_or_make_split(path, ids[:20], 10, 0)


def test_unlabelled_labels_are_hidden(lits_root):
    vol = load_volume(list_cases("lits", lits_root)[0])
    unl = UnlabelledSlices(extract_slices(vol, 64, (-200, 250), "gt_liver", 10, 2))
    assert unl.images.shape[0] == len(unl)
    with pytest.raises(LabelAccessError):
        _ = unl.tumour
    assert unl.reveal_for_report() is not None


def _copy(root, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(root, dst)
    return dst / "Training Batch 1"


def test_bad_inputs_raise_clear_errors(lits_root, tmp_path):
    batch = _copy(lits_root, tmp_path)
    (batch / "segmentation-2.nii").unlink()
    with pytest.raises(DataFormatError, match="unpaired.*segmentation-2"):
        list_cases("lits", batch.parent)
    img = nib.load(str(batch / "volume-0.nii"))
    arr = img.get_fdata().astype(np.int16)
    nib.save(nib.Nifti1Image(np.zeros(arr.shape[:2] + (3,), np.uint8), img.affine), str(batch / "segmentation-2.nii"))
    with pytest.raises(DataFormatError, match="shape"):
        load_volume(list_cases("lits", batch.parent)[2])
    seg0 = nib.load(str(batch / "segmentation-0.nii"))
    lab = np.asarray(seg0.get_fdata(), np.uint8)
    nib.save(nib.Nifti1Image(lab, np.diag([2.0, 2.0, 2.0, 1.0])), str(batch / "segmentation-0.nii"))
    with pytest.raises(DataFormatError, match="different affines"):
        load_volume(list_cases("lits", batch.parent)[0])
    bad = lab.copy()
    bad[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(bad, seg0.affine), str(batch / "segmentation-0.nii"))
    with pytest.raises(DataFormatError, match=r"label value\(s\) \[7\]"):
        load_volume(list_cases("lits", batch.parent)[0])
    nib.save(nib.Nifti1Image(np.zeros_like(lab), seg0.affine), str(batch / "segmentation-0.nii"))
    vol = load_volume(list_cases("lits", batch.parent)[0])
    with pytest.raises(DataFormatError, match="no liver"):
        extract_slices(vol, 64, (-200, 250), "gt_liver", 10, 2)
    data = (batch / "volume-1.nii").read_bytes()
    (batch / "volume-1.nii").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="volume-1.nii"):
        load_volume(list_cases("lits", batch.parent)[1])


def test_bad_dataset_json_entry(tmp_path):
    root = write_synthetic(tmp_path, SynthConfig(**{**SMALL.__dict__, "layout": "msd", "n_volumes": 2}))
    meta_path = root / "Task03_Liver" / "dataset.json"
    meta = json.loads(meta_path.read_text())
    meta["training"][1] = {"image": "./imagesTr/liver_9.nii.gz", "label": "./labelsTr/liver_9.nii.gz"}
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DataFormatError, match="entry 1 names .*liver_9"):
        list_cases("msd", root)
    meta["training"][1] = {"img": "x"}
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DataFormatError, match="needs `image` and `label`"):
        list_cases("msd", root)


def test_generator_refuses_a_foreign_folder_and_leaves_it_untouched(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "volume-0.nii").write_bytes(b"real data")
    with pytest.raises(DatasetFolderError, match="not empty"):
        ensure_synthetic(real, SMALL)
    assert (real / "volume-0.nii").read_bytes() == b"real data" and len(list(real.iterdir())) == 1


def test_tumour_contrast_follows_the_config_and_bad_ranges_are_refused():
    from aslseg.synth import SITES

    def volume(hypo):
        return synth_volume(0, SynthConfig(**{**SMALL.__dict__, "hyper_hu": (30.0, 30.0), "hypo_hu": (hypo, hypo)}))

    (dark, labels, affine), (faint, labels_b, _) = volume(80.0), volume(20.0)
    assert np.diag(affine)[0] == SITES[0]["pixel_mm"]
    np.testing.assert_array_equal(labels, labels_b)  # same geometry, only the hypodense offset differs
    tumour, outside = labels == 2, labels == 0
    assert tumour.any()
    np.testing.assert_array_equal(dark[outside & (np.abs(dark.astype(int) - faint) > 0)], [])
    assert float(dark[tumour].mean()) < float(faint[tumour].mean()) - 10.0
    with pytest.raises(ValueError, match="data.synth.tumour_cnr"):
        SynthConfig(tumour_cnr=(3.0, 1.0))
