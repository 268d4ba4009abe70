"""Data: the h5 reader on synth.py output, weak labels (correct, deterministic), augmentation fill, PNG -> h5,
and each kind of bad input with its error."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from common.datasets import DatasetFolderError
from common.synthetic import ellipse_mask
from fedlppa.data import DataError, augment_pair, read_sites
from fedlppa.prepare import PNGMapError, convert_release
from fedlppa.settings import SynthConfig
from fedlppa.synth import ensure_synthetic, write_dataset
from fedlppa.weak_labels import WEAK_TYPES, all_weak_labels


def _sites(root: Path, **kw):
    args = dict(domains=[1, 2, 3], sup_types=["scribble", "keypoint", "box"], num_classes=2, in_channels=1)
    args.update(kw)
    return read_sites(root, **args)


def test_reader_on_synthetic_release(ci_data):
    sites = _sites(ci_data / "data")
    assert [len(s.train) for s in sites] == [4, 3, 5] and all(len(s.test) == 2 for s in sites)
    case = sites[1].train[0]
    assert case.image.shape == (1, 32, 32) and case.image.dtype == np.float32
    assert case.image.min() >= 0 and case.image.max() <= 1
    assert case.label.dtype == np.uint8 and set(np.unique(case.label)) <= {0, 1, 2}
    assert (case.label == 2).mean() > 0.9  # keypoints: almost everything unlabelled
    with h5py.File(next((ci_data / "data" / "Domain1" / "train").glob("*.h5"))) as handle:
        assert sorted(handle) == sorted(["image", "mask", *WEAK_TYPES])


def test_weak_labels_correct_and_deterministic():
    mask = np.zeros((64, 64), np.uint8)
    mask[ellipse_mask((64, 64), (32, 30), (18, 14), 20)] = 2
    mask[ellipse_mask((64, 64), (32, 30), (8, 7), 20)] = 1
    a, b = all_weak_labels(mask, 3, seed=5), all_weak_labels(mask, 3, seed=5)
    assert all(a[k].tobytes() == b[k].tobytes() for k in a)
    assert any(a[k].tobytes() != all_weak_labels(mask, 3, seed=6)[k].tobytes() for k in a)
    for kind, label in a.items():
        wrong = sum(int(((label == c) & (mask != c)).sum()) for c in range(3))
        assert (wrong > 0) == (kind == "scribble_noisy"), kind
        assert all((label == c).any() for c in range(3)), kind
    slanted = ellipse_mask((64, 64), (32, 32), (22, 7), 35).astype(np.uint8)
    boxes = [all_weak_labels(slanted, 2, seed=5, rotated_box=r, kinds=("box",))["box"] for r in (False, True)]
    assert (boxes[1] == 0).sum() > (boxes[0] == 0).sum()  # the rotated box leaves less background unlabelled


def test_sparse_weak_labels_correct_and_sparser():
    mask = np.zeros((64, 64), np.uint8)
    mask[ellipse_mask((64, 64), (32, 30), (10, 8), 20)] = 1
    dense, sparse = all_weak_labels(mask, 2, seed=5), all_weak_labels(mask, 2, seed=5, sparsity="sparse")
    for kind, label in sparse.items():
        wrong = int(((label != 2) & (label != mask)).sum())
        assert (wrong > 0) == (kind == "scribble_noisy"), kind
        assert (label == 0).any() and (label == 1).any(), kind
        if kind not in ("keypoint", "scribble_noisy"):  # the keypoint "+" keeps its size; the noisy one moves
            assert (label != 2).sum() < (dense[kind] != 2).sum(), kind
    with pytest.raises(ValueError, match="sparsity"):
        all_weak_labels(mask, 2, seed=5, sparsity="dense")


def test_wide_styles_change_images_not_masks():
    from fedlppa.synth import render_case

    for site in range(5):
        (img_d, mask_d), (img_w, mask_w) = (render_case("faz", 32, site, 0, 0, s) for s in ("default", "wide"))
        assert np.array_equal(mask_d, mask_w) and img_w.dtype == np.float32
        assert (site == 0) == np.array_equal(img_d, img_w)  # site a keeps its style
    img_b, mask_b = render_case("faz", 32, 1, 0, 0, "wide")  # b: inverted, the zone brighter than its surround
    assert img_b[0][mask_b == 1].mean() > img_b[0][mask_b == 0].mean()


def test_moderate_styles_keep_contrast_polarity():
    from fedlppa.synth import render_case

    for site in range(5):
        (img_w, mask_w), (img_m, mask_m) = (render_case("faz", 32, site, 0, 0, s) for s in ("wide", "moderate"))
        assert np.array_equal(mask_w, mask_m) and img_m.dtype == np.float32
        assert (site in (1, 3)) != np.array_equal(img_w, img_m)  # only the shared b/d style differs from wide
        assert img_m[0][mask_m == 1].mean() < img_m[0][mask_m == 0].mean()  # the zone stays darker everywhere


def test_augmentation_fills_rotated_corners_with_ignore():
    image = np.ones((1, 32, 32), np.float32) * 0.3
    labels = np.zeros((2, 32, 32), np.uint8)
    seen = False
    for seed in range(40):
        img, lab = augment_pair(image, labels, np.random.default_rng(seed), 0.8, 2)
        if (lab == 2).any():
            seen = True
            assert np.allclose(img[0][lab[0] == 2], 0.8) and lab.dtype == np.uint8
    assert seen


def test_generator_refuses_foreign_folder(tmp_path):
    foreign = tmp_path / "real"
    foreign.mkdir()
    (foreign / "patient.h5").write_bytes(b"real data")
    with pytest.raises(DatasetFolderError, match="not empty"):
        ensure_synthetic(foreign, SynthConfig(size=32, train_counts=[1, 1, 1], test_count=1))
    assert (foreign / "patient.h5").read_bytes() == b"real data" and len(list(foreign.iterdir())) == 1


@pytest.fixture()
def small_copy(ci_data, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(ci_data / "data", root)
    return root


def test_missing_domain_and_site_count(small_copy):
    with pytest.raises(DataError, match="Domain folders"):
        _sites(small_copy, domains=[1, 2], sup_types=["scribble", "keypoint"])
    shutil.rmtree(small_copy / "Domain3")
    (small_copy / "Domain7").mkdir()
    with pytest.raises(DataError, match="missing folder Domain3"):
        _sites(small_copy)


def test_missing_key_names_keys_present(small_copy):
    path = next((small_copy / "Domain2" / "train").glob("*.h5"))
    with h5py.File(path, "a") as handle:
        del handle["keypoint"]
    with pytest.raises(DataError, match=r"no key `keypoint` \(keys present: \['block', 'box'"):
        _sites(small_copy)


def test_bad_label_values_and_shape_and_empty_split(small_copy):
    path = next((small_copy / "Domain1" / "train").glob("*.h5"))
    with h5py.File(path, "a") as handle:
        data = handle["scribble"][()]
        data[0, 0] = 7
        del handle["scribble"]
        handle["scribble"] = data
    with pytest.raises(DataError, match=r"values .*7.* outside 0..2"):
        _sites(small_copy)
    with h5py.File(path, "a") as handle:
        del handle["scribble"]
        handle["scribble"] = np.zeros((16, 16), np.uint8)
    with pytest.raises(DataError, match="same size"):
        _sites(small_copy)
    for f in (small_copy / "Domain2" / "test").glob("*.h5"):
        f.unlink()
    with pytest.raises(DataError, match="no .h5 files in the test split"):
        _sites(small_copy, domains=[2, 3, 1], sup_types=["keypoint", "box", "block"])


def test_png_release_converts_and_rejects_unknown_values(tmp_path):
    cfg = SynthConfig(size=32, train_counts=[2, 1], test_count=1, png=True)
    write_dataset(tmp_path / "set", cfg)
    out = convert_release(tmp_path / "set" / "png", tmp_path / "h5", "faz")
    sites = read_sites(out, [1, 2], ["scribble", "box"], 2, 1)
    ref = read_sites(tmp_path / "set", [1, 2], ["scribble", "box"], 2, 1)
    assert np.array_equal(sites[0].train[0].label, ref[0].train[0].label)
    assert np.abs(sites[0].train[0].image - ref[0].train[0].image).max() <= 1 / 255 + 1e-6
    import cv2

    bad = next((tmp_path / "set" / "png" / "Domain1" / "train" / "scr").glob("*.png"))
    arr = cv2.imread(str(bad), cv2.IMREAD_GRAYSCALE)
    arr[0, 0] = 99
    cv2.imwrite(str(bad), arr)
    with pytest.raises(PNGMapError, match=rf"{bad.name}.*99"):
        convert_release(tmp_path / "set" / "png", tmp_path / "h5b", "faz")


def test_config_rejects_mismatched_sites(tmp_path, make_cfg):
    from common.config import ConfigError

    with pytest.raises(ConfigError, match="one entry per site"):
        make_cfg(tmp_path, "data.sup_types=[scribble]")


@pytest.mark.parametrize("name,sites,size", [("faz", 5, 256), ("odoc", 5, 384), ("polyp", 4, 384),
                                             ("prostate", 6, 384), ("default", 5, 32), ("cpu_small", 5, 32),
                                             ("cpu64", 5, 64), ("dev_small", 5, 32)])
def test_every_config_loads(name, sites, size):
    from common.config import load_config
    from fedlppa.settings import Config

    cfg = load_config(Config, Path(__file__).resolve().parent.parent / "configs" / f"{name}.yaml")
    assert cfg.data.num_sites == sites and cfg.data.image_size == size


@pytest.mark.parametrize("kind,channels,labels", [("odoc", 3, {0, 1, 2}), ("polyp", 3, {0, 1})])
def test_other_synthetic_kinds(kind, channels, labels):
    from fedlppa.synth import render_case

    image, mask = render_case(kind, 64, 2, 0, 0)
    assert image.shape == (channels, 64, 64) and set(np.unique(mask)) == labels
