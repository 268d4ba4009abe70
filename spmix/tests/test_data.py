"""ISIC 2018 Task 3 reader, splits, samplers and paired augmentation."""

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from spmix.data import (
    CLASSES,
    DatasetFormatError,
    ISICDataset,
    class_balanced_weights,
    load_split,
    make_split,
    make_train_sampler,
    read_part,
    train_transforms,
)
from spmix.settings import AugmentConfig
from spmix.synthetic_set import long_tailed_counts

GT = "ISIC2018_Task3_Training_GroundTruth/ISIC2018_Task3_Training_GroundTruth.csv"


def test_reader_on_synthetic_set(synth_root):
    train = read_part(synth_root, "train")
    counts = np.bincount(train["label"], minlength=7)
    assert counts.tolist() == long_tailed_counts(120)
    assert counts[CLASSES.index("NV")] == counts.max()
    csv = pd.read_csv(synth_root / GT)
    assert list(csv.columns) == ["image", *CLASSES]
    first = csv.iloc[0]
    assert train["label"].iloc[0] == int(np.argmax(first[list(CLASSES)].to_numpy()))
    assert all(name.startswith("ISIC_") for name in train["image"])


def _copy(synth_root, tmp_path):
    root = tmp_path / "isic"
    shutil.copytree(synth_root, root, ignore=shutil.ignore_patterns("splits", "saliency"))
    return root


def test_missing_class_column_is_named(synth_root, tmp_path):
    root = _copy(synth_root, tmp_path)
    pd.read_csv(root / GT).drop(columns=["DF"]).to_csv(root / GT, index=False)
    with pytest.raises(Exception, match="DF"):
        read_part(root, "train")


def test_row_with_two_positives(synth_root, tmp_path):
    root = _copy(synth_root, tmp_path)
    frame = pd.read_csv(root / GT)
    frame.loc[3, ["MEL", "NV"]] = 1.0
    frame.to_csv(root / GT, index=False)
    with pytest.raises(DatasetFormatError, match=r"row 5 .* 2 positive classes"):
        read_part(root, "train")


def test_listed_image_absent(synth_root, tmp_path):
    root = _copy(synth_root, tmp_path)
    victim = sorted((root / "ISIC2018_Task3_Training_Input").glob("*.jpg"))[7]
    victim.unlink()
    with pytest.raises(DatasetFormatError, match=victim.stem):
        read_part(root, "train")


def test_missing_ground_truth_names_the_fix(tmp_path):
    with pytest.raises(DatasetFormatError, match="spmix.synth"):
        read_part(tmp_path, "train")


def test_splits(synth_root, tmp_path):
    root = _copy(synth_root, tmp_path)
    official = make_split(root, "official")
    assert set(official["subset"]) == {"train", "val", "test"}
    repo = make_split(root, "pooled_holdout", seed=0, holdout_per_class=3)
    test = repo[repo["subset"] == "test"]
    assert np.bincount(test["label"], minlength=7).tolist() == [3] * 7  # every class has >= 6 images here
    assert not set(test["image"]) & set(repo[repo["subset"] == "train"]["image"])
    lesion = make_split(root, "lesion_disjoint", seed=0, holdout_per_class=3)
    groups = pd.read_csv(root / "ISIC2018_Task3_Training_LesionGroupings.csv").set_index("image")["lesion_id"]
    by_subset = {s: set(groups.reindex(lesion[lesion["subset"] == s]["image"]).dropna()) for s in ("train", "test")}
    assert by_subset["test"] and not by_subset["train"] & by_subset["test"]
    written = load_split(root, "pooled_holdout", seed=0, holdout_per_class=3)
    assert (root / "splits" / "pooled_holdout_seed0_holdout3.csv").is_file()
    again = load_split(root, "pooled_holdout", seed=0, holdout_per_class=3)
    assert again["image"].tolist() == written["image"].tolist()
    elsewhere = load_split(root, "pooled_holdout", seed=1, holdout_per_class=3, path=tmp_path / "s.csv")
    assert (tmp_path / "s.csv").is_file() and elsewhere["image"].tolist() != written["image"].tolist()
    with pytest.raises(ValueError, match="split"):
        make_split(root, "random")


def test_class_balanced_sampler_near_uniform():
    counts = (1113, 6705, 514, 327, 1099, 115, 142)
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    w = class_balanced_weights(labels)
    assert abs(float(w.sum()) - 7) < 1e-6
    sampler = make_train_sampler(labels, "class_balanced", seed=0, num_samples=70_000)
    freq = np.bincount(labels[np.fromiter(iter(sampler), dtype=np.int64)], minlength=7) / 70_000
    assert np.all(np.abs(freq - 1 / 7) < 0.01)
    assert make_train_sampler(labels, "instance", seed=0) is None


def test_paired_augmentation_moves_saliency_with_image(synth_root):
    frame = read_part(synth_root, "train").iloc[:4]
    aug = AugmentConfig(crop_scale=(0.3, 1.0), randaug_magnitude=10)
    q, k = train_transforms(64, aug)

    class GreySaliency(ISICDataset):  # saliency = a copy of the red channel, so geometry must match exactly
        def _load(self, i):
            from common.readers import read_image

            image = read_image(self.paths[i], mode="RGB")
            return image, image[..., 0].copy()

    ds = GreySaliency(frame, [q, k], cache=False)
    import albumentations as A

    geometric = A.Compose([t for t in q.transforms if not isinstance(t, (A.ColorJitter, A.SomeOf, A.Normalize))
                           and t.__class__.__name__ != "ToTensorV2"], additional_targets={"sal": "mask"})
    image, sal = ds._load(0)
    out = geometric(image=image, sal=sal.astype(np.float32))
    assert np.allclose(out["image"][..., 0].astype(np.float32), out["sal"], atol=1.0)
    item = ds[1]
    assert item["image"].shape == (3, 64, 64) and item["sal"].shape == (1, 64, 64)
    assert item["image_k"].shape == (3, 64, 64) and item["sal_k"].shape == (1, 64, 64)
    assert torch.is_tensor(item["label"])


def _cached(synth_root, tmp_path):
    """A copy of the set with a cached pooled_holdout split file; returns (root, split path, split frame)."""
    root = _copy(synth_root, tmp_path)
    frame = load_split(root, "pooled_holdout", seed=0, holdout_per_class=3)
    return root, root / "splits" / "pooled_holdout_seed0_holdout3.csv", frame


def test_cached_split_stores_the_ground_truth_hash(synth_root, tmp_path):
    import hashlib

    root, path, frame = _cached(synth_root, tmp_path)
    stored = pd.read_csv(path)
    assert list(stored.columns) == ["image", "label", "part", "subset", "gt_sha256"]
    train = stored[stored["part"] == "train"]
    assert set(train["gt_sha256"]) == {hashlib.sha256((root / GT).read_bytes()).hexdigest()}
    assert set(stored["part"]) == {"train", "val"}  # pooled_holdout pools the released train and validation parts
    assert load_split(root, "pooled_holdout", seed=0, holdout_per_class=3)["label"].tolist() == frame["label"].tolist()


def test_edited_ground_truth_after_caching_is_refused(synth_root, tmp_path):
    root, path, _ = _cached(synth_root, tmp_path)
    gt = pd.read_csv(root / GT)
    row = gt.index[gt["NV"] == 1.0][0]
    gt.loc[row, ["NV", "DF"]] = [0.0, 1.0]  # a relabelled image, still a valid one-hot CSV
    gt.to_csv(root / GT, index=False)
    with pytest.raises(DatasetFormatError, match=r"changed since the split .* Delete"):
        load_split(root, "pooled_holdout", seed=0, holdout_per_class=3)


def test_ground_truth_losing_a_column_after_caching_is_named(synth_root, tmp_path):
    root, _, _ = _cached(synth_root, tmp_path)
    pd.read_csv(root / GT).drop(columns=["VASC"]).to_csv(root / GT, index=False)
    with pytest.raises(ValueError, match="VASC"):
        load_split(root, "pooled_holdout", seed=0, holdout_per_class=3)


@pytest.mark.parametrize("label", [9, -1, "MEL"])
def test_cached_split_with_a_wrong_label_is_refused(synth_root, tmp_path, label):
    root, path, _ = _cached(synth_root, tmp_path)
    stored = pd.read_csv(path)
    stored["label"] = stored["label"].astype(object)
    stored.loc[4, "label"] = label
    stored.to_csv(path, index=False)
    with pytest.raises(DatasetFormatError, match=rf"{stored['image'].iloc[4]} has label .*{path.name}"):
        load_split(root, "pooled_holdout", seed=0, holdout_per_class=3)


def test_cached_split_with_an_unknown_image_or_no_hash_is_refused(synth_root, tmp_path):
    root, path, _ = _cached(synth_root, tmp_path)
    stored = pd.read_csv(path)
    stored.loc[0, "image"] = "ISIC_9999999"
    stored.to_csv(path, index=False)
    with pytest.raises(DatasetFormatError, match="ISIC_9999999"):
        load_split(root, "pooled_holdout", seed=0, holdout_per_class=3)
    stored.drop(columns=["gt_sha256"]).to_csv(path, index=False)
    with pytest.raises(ValueError, match="gt_sha256"):
        load_split(root, "pooled_holdout", seed=0, holdout_per_class=3)


def test_cached_split_with_a_deleted_image_is_refused(synth_root, tmp_path):
    root, _, frame = _cached(synth_root, tmp_path)
    victim = root / "ISIC2018_Task3_Training_Input" / f"{frame['image'].iloc[2]}.jpg"
    victim.unlink()
    with pytest.raises(DatasetFormatError, match=victim.stem):
        load_split(root, "pooled_holdout", seed=0, holdout_per_class=3)


def test_cached_split_with_an_unknown_subset_is_refused(synth_root, tmp_path):
    root, path, _ = _cached(synth_root, tmp_path)
    stored = pd.read_csv(path)
    stored.loc[1, "subset"] = "holdout"
    stored.to_csv(path, index=False)
    with pytest.raises(DatasetFormatError, match="holdout"):
        load_split(root, "pooled_holdout", seed=0, holdout_per_class=3)
