"""Readers on synth.py output, the RLE round trip, the flip word swap, and each bad input's error."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from common.datasets import DatasetFolderError
from prior.data import (
    DataError,
    PretrainDataset,
    build_5x200,
    mimic_data_json,
    read_5x200,
    read_chexpert,
    read_covidx,
    read_dicom,
    read_mimic,
    read_object_cxr,
    read_rsna,
    read_siim,
    rle_decode,
)
from prior.models.text_encoder import builtin_tokenizer
from prior.reports import extract_sections, split_sentences, swap_left_right
from prior.settings import SynthConfig
from prior.synth import DATASET_DIRS, ensure_synthetic, rle_encode

SMALL = SynthConfig(n_studies=30, n_chexpert=40, n_5x200_per_class=4, n_rsna=8, n_siim=6, n_covidx=9,
                    n_object_cxr=6, size=64)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    return ensure_synthetic(tmp_path_factory.mktemp("prior") / "synthetic", SMALL)


def _copy(root: Path, name: str, tmp_path: Path) -> Path:
    dst = tmp_path / name
    shutil.copytree(root / DATASET_DIRS[name], dst)
    return dst


def test_mimic_reader_on_synthetic(synth_root: Path):
    root = synth_root / DATASET_DIRS["mimic"]
    studies = read_mimic(root, ("train",))
    assert 10 <= len(studies) < SMALL.n_studies
    for s in studies:
        assert len(s.sentences) >= 4 and s.images and all(p.suffix == ".jpg" for p in s.images)
        assert s.labels.shape == (14,)
    assert any(len(s.images) == 2 for s in studies)  # second frontals kept; laterals never
    data = mimic_data_json(studies)
    first = next(iter(data.values()))
    assert set(first) == {"image_path", "p_index", "patient_id", "text_info", "total_sentences", "sentence_number",
                          "label"}
    tokenizer = builtin_tokenizer()
    for s in studies:
        for sentence in s.sentences:
            assert tokenizer.unk_token_id not in tokenizer(sentence)["input_ids"]


def test_pretrain_dataset_flip_swaps_words(synth_root: Path):
    studies = read_mimic(synth_root / DATASET_DIRS["mimic"], ("train",))
    ds = PretrainDataset(studies, 32, 0.5, 0.3, hflip="swap", hflip_p=1.0, degrees=0.0, shuffle_sentences=False)
    plain = PretrainDataset(studies, 32, 0.5, 0.3, augment=False)
    item, ref = ds[0], plain[0]
    assert item["flipped"] and item["image"].shape == (1, 32, 32)
    assert item["sentences"] == [swap_left_right(s) for s in ref["sentences"]]
    np.testing.assert_allclose(item["image"].numpy(), ref["image"].numpy()[..., ::-1], atol=1e-5)
    official = PretrainDataset(studies, 32, 0.5, 0.3, hflip="official", hflip_p=1.0, degrees=0.0,
                               shuffle_sentences=False)
    assert official[0]["sentences"] == ref["sentences"]


def test_report_text_processing():
    text = ("EXAMINATION: chest\nFINDINGS: Right lower lobe opacity, approx. 1.5 cm. Left is clear.\n"
            "IMPRESSIONS: Pneumonia.")
    sections = extract_sections(text)
    assert sections["findings"].startswith("Right") and sections["impression"] == "Pneumonia."
    assert split_sentences(sections["findings"]) == ["Right lower lobe opacity, approx. 1.5 cm.", "Left is clear."]
    assert swap_left_right("Left effusion, right apex; LEFT.") == "Right effusion, left apex; RIGHT."


def test_chexpert_5x200_rsna_siim_covidx_object_cxr(synth_root: Path):
    chex = synth_root / DATASET_DIRS["chexpert"]
    paths, labels, valid = read_chexpert(chex, "train", policy="ignore")
    assert len(paths) == labels.shape[0] and labels.shape[1] == 14 and all(p.is_file() for p in paths)
    items = build_5x200(chex, seed=114514, per_class=SMALL.n_5x200_per_class)
    assert len(items) == 5 * SMALL.n_5x200_per_class
    json_path = chex / "chexpert_5x200.json"
    json_path.write_text(json.dumps(items))
    zpaths, zlabels = read_5x200(json_path, chex)
    assert np.bincount(zlabels).tolist() == [SMALL.n_5x200_per_class] * 5 and all(p.is_file() for p in zpaths)
    rsna = read_rsna(synth_root / DATASET_DIRS["rsna"])
    assert len(rsna) == SMALL.n_rsna and sum(bool(b) for b in rsna.values()) >= SMALL.n_rsna // 2
    siim = read_siim(synth_root / DATASET_DIRS["siim"])
    uid, (dcm, rles) = next(iter(siim.items()))
    image = read_dicom(dcm)
    assert image.shape == (64, 64) and rle_decode(rles[0], image.shape).any()
    cpaths, clabels = read_covidx(synth_root / DATASET_DIRS["covidx"], "train")
    assert set(clabels.tolist()) == {0, 1, 2} and all(p.is_file() for p in cpaths)
    objects = read_object_cxr(synth_root / DATASET_DIRS["object_cxr"], "train")
    assert any(boxes for _, boxes in objects) and all(p.is_file() for p, _ in objects)


def test_rle_round_trip():
    rng = np.random.default_rng(0)
    mask = rng.random((7, 5)) > 0.6
    np.testing.assert_array_equal(rle_decode(rle_encode(mask), mask.shape), mask)
    assert rle_encode(np.zeros((3, 3), bool)) == "-1" and not rle_decode("-1", (3, 3)).any()
    with pytest.raises(DataError, match="past the end"):
        rle_decode("30 10", (5, 5))


def test_generator_refuses_foreign_folder(tmp_path: Path):
    foreign = tmp_path / "real"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep")
    with pytest.raises(DatasetFolderError):
        ensure_synthetic(foreign, SMALL)
    assert (foreign / "mine.txt").read_text() == "keep" and len(list(foreign.iterdir())) == 1


def _rewrite_gz(path: Path, edit) -> None:
    with gzip.open(path, "rt") as h:
        text = h.read()
    with gzip.open(path, "wt") as h:
        h.write(edit(text))


def test_mimic_bad_inputs(synth_root: Path, tmp_path: Path):
    root = _copy(synth_root, "mimic", tmp_path)
    studies = read_mimic(root)
    studies[0].images[0].unlink()
    with pytest.raises(DataError, match=studies[0].images[0].name):
        read_mimic(root)
    root2 = _copy(synth_root, "mimic", tmp_path / "b")
    studies[1].report.relative_to(root)
    (root2 / studies[1].report.relative_to(root)).unlink()
    with pytest.raises(DataError, match="report"):
        read_mimic(root2)
    root3 = _copy(synth_root, "mimic", tmp_path / "c")
    _rewrite_gz(root3 / "mimic-cxr-2.0.0-metadata.csv.gz", lambda t: t.replace("ViewPosition", "View"))
    with pytest.raises(DataError, match="ViewPosition"):
        read_mimic(root3)


def test_chexpert_bad_inputs(synth_root: Path, tmp_path: Path):
    root = _copy(synth_root, "chexpert", tmp_path)
    csv = root / "train.csv"
    lines = csv.read_text().splitlines()
    cells = lines[3].split(",")
    cells[-1] = "2.0"
    lines[3] = ",".join(cells)
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="row 4"):
        read_chexpert(root)
    bad = root / "bad_5x200.json"
    bad.write_text(json.dumps({"7": {"image_path": "x.jpg", "label": [1, 1, 0, 0, 0]}}))
    with pytest.raises(DataError, match="'7'"):
        read_5x200(bad, root)


def test_rsna_siim_object_bad_inputs(synth_root: Path, tmp_path: Path):
    rsna = _copy(synth_root, "rsna", tmp_path)
    labels = rsna / "stage_2_train_labels.csv"
    lines = labels.read_text().splitlines()
    row = next(i for i, line in enumerate(lines) if line.endswith(",1"))
    pid, x, y, w, h, t = lines[row].split(",")
    lines[row] = ",".join([pid, "60", y, "30", h, t])
    labels.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="outside"):
        read_rsna(rsna)
    dcm = next((rsna / "stage_2_train_images").glob("*.dcm"))
    dcm.write_bytes(b"not a dicom")
    with pytest.raises(DataError, match="cannot read DICOM"):
        read_dicom(dcm)
    obj = _copy(synth_root, "object_cxr", tmp_path)
    (obj / "train.csv").write_text("image_name,annotation\n00001.jpg,7 1 2 3 4\n")
    with pytest.raises(DataError, match="unknown shape"):
        read_object_cxr(obj)


def test_atelectasis_height_option():
    """``data.synth.atelectasis_height`` sets the band's half-height (fraction of the side); the default is the
    value of sets written before the option existed, so their stamps stay valid."""
    from prior.synth import render_study

    heights = {}
    for h in (0.012, 0.03):
        study = render_study(np.random.default_rng(5), 256, kinds=["atelectasis"], uncertain_p=0.0,
                             atelectasis_height=h)
        heights[h] = int(study.findings[0].mask.sum())  # area of the band, proportional to its height
    assert heights[0.03] > 2 * heights[0.012]
    assert SynthConfig().atelectasis_height == 0.012


def test_reports_name_the_lesion_site_and_the_cell_probe(synth_root: Path):
    """Every zone-specific finding sentence of the generator names the side and zone its box lies in
    (``prior.grounding.location_agreement`` [ours]); the cell probe separates separable cells (AUC 1) and gives
    about 0.5 on noise."""
    import pandas as pd

    from prior.grounding import location_agreement, probe_cells, zone_of_point

    assert zone_of_point(10, 20, 64) == ("right", "upper") and zone_of_point(50, 50, 64) == ("left", "lower")
    rows = pd.read_csv(synth_root / DATASET_DIRS["mimic"] / "synthetic-findings.csv")
    out = location_agreement(rows, SMALL.size)
    assert out["location_n"] > 0 and out["location_side_agree"] == 1 and out["location_zone_agree"] == 1
    flipped = rows.assign(sentence=rows["sentence"].map(swap_left_right))
    assert location_agreement(flipped, SMALL.size)["location_side_agree"] == 0
    rng = np.random.default_rng(0)
    labels = rng.random((40, 16)) < 0.2
    assert probe_cells(labels[..., None] + 0.01 * rng.normal(size=(40, 16, 1)), labels) == 1.0
    assert abs(probe_cells(rng.normal(size=(40, 16, 3)), labels) - 0.5) < 0.15
