"""ISIC 2018 Task 3 reader, splits, paired image/saliency augmentation and the two samplers (paper Sec. II-A/III;
released ``dataset/isic_mix_2.py`` for the two views).

On-disk layout (the official challenge archives; the ground-truth CSV may sit in its folder or next to it)::

    <root>/
      ISIC2018_Task3_Training_Input/ISIC_0024306.jpg ...
      ISIC2018_Task3_Training_GroundTruth/ISIC2018_Task3_Training_GroundTruth.csv  image,MEL,...,VASC
      ISIC2018_Task3_Training_LesionGroupings.csv      image,lesion_id,diagnosis_confirm_type
      ISIC2018_Task3_Validation_Input/ + ..._Validation_GroundTruth(.csv)
      ISIC2018_Task3_Test_Input/       + ..._Test_GroundTruth(.csv)

Nothing is ever written under a real ``<root>``: split files (``image,label,part,subset,gt_sha256``) go to
``data/splits/spmix/<root>-<hash>/`` (or ``data.split_file``) and saliency maps to ``data/saliency/spmix/...``
(see ``pipeline.py``); only a synthetic root made by ``synthetic_set.py`` holds its own ``splits/`` and ``saliency/``.

Splits (``data.split``): ``official`` (train / validation / test sets as released), ``pooled_holdout`` (the released
code's protocol: train ∪ validation pooled, a held-out set of ``holdout_per_class`` = 46 images per class used for
evaluation and model selection; the held-out images are drawn with ``seed``, they are *not* the released
``ISIC_val.txt`` list, which this project could not obtain), ``lesion_disjoint`` (the same 46/class test set
but drawn by ``lesion_id`` so no lesion is in two subsets, plus a separate lesion-disjoint validation set).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler, WeightedRandomSampler

from spmix.settings import CLASSES, AugmentConfig

PARTS = {"train": "Training", "val": "Validation", "test": "Test"}
SPLITS = ("official", "pooled_holdout", "lesion_disjoint")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
ISIC_MEAN = (0.765, 0.545, 0.569)
ISIC_STD = (0.140, 0.151, 0.169)
RANDAUG_FILL = (0.7893, 0.5683, 0.5930)


class DatasetFormatError(ValueError):
    """The dataset on disk does not follow the ISIC 2018 Task 3 layout; the message names the file and fix."""


def input_dir(root: Path, part: str) -> Path:
    return root / f"ISIC2018_Task3_{PARTS[part]}_Input"


def ground_truth_csv(root: Path, part: str) -> Path:
    """The GT CSV of a part, inside ``..._GroundTruth/`` or directly under ``root``."""
    name = f"ISIC2018_Task3_{PARTS[part]}_GroundTruth"
    for candidate in (root / name / f"{name}.csv", root / f"{name}.csv"):
        if candidate.is_file():
            return candidate
    raise DatasetFormatError(f"ground truth for the {PARTS[part]} set not found: expected "
                             f"{root / name / (name + '.csv')}"
                             f" (or {root / (name + '.csv')}). Unzip the official ISIC 2018 Task 3 archives there "
                             f"or generate a synthetic set elsewhere with `python -m spmix.synth`")


def read_ground_truth(csv_path: Path, image_dir: Path, check_files: bool = True) -> pd.DataFrame:
    """Parse an ISIC Task 3 one-hot CSV -> DataFrame(image, label, path); label = index in :data:`CLASSES`."""
    from common.readers import require_columns

    frame = pd.read_csv(csv_path)
    require_columns(frame, ["image", *CLASSES], csv_path)
    extra = [c for c in frame.columns if c not in ("image", *CLASSES)]
    if extra:
        raise DatasetFormatError(f"{csv_path}: unknown column(s) {extra}; ISIC 2018 Task 3 has exactly image,"
                                 f"{','.join(CLASSES)}")
    onehot = frame[list(CLASSES)].to_numpy(dtype=np.float64)
    if not np.isin(onehot, (0.0, 1.0)).all():
        raise DatasetFormatError(f"{csv_path}: class columns must hold 0/1 (or 0.0/1.0) values")
    positives = onehot.sum(axis=1)
    bad = np.flatnonzero(positives != 1)
    if bad.size:
        row = bad[0]
        raise DatasetFormatError(f"{csv_path}: row {row + 2} (image {frame['image'].iloc[row]}) has "
                                 f"{int(positives[row])} positive classes; every image needs exactly one")
    out = pd.DataFrame({"image": frame["image"].astype(str), "label": onehot.argmax(axis=1).astype(int)})
    out["path"] = [str(image_dir / f"{name}.jpg") for name in out["image"]]
    if check_files:
        missing = [p for p in out["path"] if not Path(p).is_file()]
        if missing:
            raise DatasetFormatError(f"{csv_path} lists {len(missing)} image(s) absent from {image_dir}, e.g. "
                                     f"{missing[0]}. Re-extract the images or remove the rows")
    return out


def file_sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_part(root: str | Path, part: str, check_files: bool = True) -> pd.DataFrame:
    """One released part (``train``/``val``/``test``) -> DataFrame(image, label, path, part, gt_sha256), the last
    column the SHA-256 of the ground-truth CSV the labels were read from."""
    root = Path(root)
    csv_path = ground_truth_csv(root, part)
    frame = read_ground_truth(csv_path, input_dir(root, part), check_files)
    frame["part"] = part
    frame["gt_sha256"] = file_sha256(csv_path)
    return frame


def read_lesion_groups(root: Path) -> pd.DataFrame:
    from common.readers import require_columns

    path = root / "ISIC2018_Task3_Training_LesionGroupings.csv"
    if not path.is_file():
        raise DatasetFormatError(f"split lesion_disjoint needs {path} (HAM10000 metadata: image,lesion_id,...)")
    frame = pd.read_csv(path)
    require_columns(frame, ["image", "lesion_id"], path)
    return frame[["image", "lesion_id"]]


def _holdout(frame: pd.DataFrame, per_class: int, rng: np.random.Generator, group: str | None) -> np.ndarray:
    """Boolean mask of a held-out set with ``per_class`` images per class (fewer where a class is smaller);
    with ``group`` whole groups (lesions) are taken until the class quota is reached."""
    chosen = np.zeros(len(frame), dtype=bool)
    for c in range(len(CLASSES)):
        idx = np.flatnonzero(frame["label"].to_numpy() == c)
        if idx.size == 0:
            continue
        quota = min(per_class, idx.size // 2)
        if group is None:
            chosen[rng.choice(idx, size=quota, replace=False)] = True
            continue
        groups = frame[group].to_numpy()[idx]
        taken = 0
        for g in rng.permutation(np.unique(groups)):
            if taken >= quota:
                break
            members = idx[groups == g]
            chosen[members] = True
            taken += members.size
    return chosen


def make_split(root: str | Path, split: str, seed: int = 0, holdout_per_class: int = 46) -> pd.DataFrame:
    """DataFrame(image, label, path, part, subset) with subset in train/val/test for ``split``."""
    root = Path(root)
    if split not in SPLITS:
        raise ValueError(f"data.split={split!r} is unknown; use one of {SPLITS}")
    train, val = read_part(root, "train"), read_part(root, "val")
    if split == "official":
        test = read_part(root, "test")
        for frame, subset in ((train, "train"), (val, "val"), (test, "test")):
            frame["subset"] = subset
        return pd.concat([train, val, test], ignore_index=True)
    pool = pd.concat([train, val], ignore_index=True)
    rng = np.random.default_rng(seed)
    if split == "pooled_holdout":
        held = _holdout(pool, holdout_per_class, rng, None)
        pool["subset"] = np.where(held, "test", "train")
        extra = pool[held].copy()
        extra["subset"] = "val"  # the released code selects the best epoch on the reported list
        return pd.concat([pool, extra], ignore_index=True)
    groups = read_lesion_groups(root)
    pool = pool.merge(groups, on="image", how="left")
    pool["lesion_id"] = pool["lesion_id"].fillna(pool["image"])  # validation images have no grouping row
    test = _holdout(pool, holdout_per_class, rng, "lesion_id")
    rest = pool[~test]
    val_mask = _holdout(rest, max(holdout_per_class // 4, 1), rng, "lesion_id")
    subset = np.full(len(pool), "train", dtype=object)
    subset[test] = "test"
    subset[np.flatnonzero(~test)[val_mask]] = "val"
    pool["subset"] = subset
    return pool.drop(columns=["lesion_id"])


def split_name(split: str, seed: int = 0, holdout_per_class: int = 46) -> str:
    """File name of a split: everything that decides its content is in the name, so a stale file is never reused."""
    return "official.csv" if split == "official" else f"{split}_seed{seed}_holdout{holdout_per_class}.csv"


SPLIT_COLUMNS = ["image", "label", "part", "subset", "gt_sha256"]


def check_split(frame: pd.DataFrame, root: Path, path: Path) -> pd.DataFrame:
    """A cached split file against the ground truth it was made from: every part's GT CSV is re-read (its
    columns, one-hot rows and listed files checked), its SHA-256 must equal the one stored in the split, and
    every row's image and label must be in it. Returns the split with resolved ``path``s."""
    from common.readers import require_columns

    require_columns(frame, SPLIT_COLUMNS, path)
    unknown = sorted(set(frame["part"]) - set(PARTS))
    bad_subset = sorted(set(frame["subset"]) - set(PARTS))
    if unknown or bad_subset:
        raise DatasetFormatError(f"{path}: unknown part(s)/subset(s) {unknown + bad_subset}; use {list(PARTS)} (or "
                                 f"delete the file to regenerate it)")
    fix = f"Delete {path} to make a new split from the current ground truth"
    for part, rows in frame.groupby("part"):
        gt = read_part(root, part).set_index("image")
        gt_csv = ground_truth_csv(root, part)
        if set(rows["gt_sha256"]) != {gt["gt_sha256"].iloc[0]}:
            raise DatasetFormatError(f"{gt_csv} changed since the split {path} was made from it (SHA-256 "
                                     f"mismatch). {fix}")
        absent = sorted(set(rows["image"]) - set(gt.index))
        if absent:
            raise DatasetFormatError(f"{path} lists {len(absent)} image(s) of the {part} part that {gt_csv} does "
                                     f"not, e.g. {absent[0]}. {fix}")
        labels = pd.to_numeric(rows["label"], errors="coerce")
        wrong = rows[labels.to_numpy() != gt.loc[rows["image"], "label"].to_numpy()]
        if len(wrong):
            raise DatasetFormatError(f"{path}: image {wrong['image'].iloc[0]} has label {wrong['label'].iloc[0]!r} "
                                     f"but {gt_csv} says {int(gt.loc[wrong['image'].iloc[0], 'label'])} "
                                     f"({CLASSES[int(gt.loc[wrong['image'].iloc[0], 'label'])]}); labels are "
                                     f"0..{len(CLASSES) - 1} in the CSV column order. {fix}")
    duplicated = frame[frame.duplicated(["image", "subset"])]
    if len(duplicated):
        raise DatasetFormatError(f"{path}: image {duplicated['image'].iloc[0]} is listed twice in subset "
                                 f"{duplicated['subset'].iloc[0]}. {fix}")
    frame = frame.copy()
    frame["label"] = frame["label"].astype(int)
    frame["path"] = [str(input_dir(root, p) / f"{i}.jpg") for i, p in zip(frame["image"], frame["part"])]
    return frame


def load_split(root: str | Path, split: str, seed: int = 0, holdout_per_class: int = 46,
               path: str | Path | None = None) -> pd.DataFrame:
    """Read the split file ``path`` (default ``<root>/splits/<split_name>``) and check it against the ground
    truth (:func:`check_split`), or create and write it; image paths are resolved against ``root``. A real data
    root passes a ``path`` outside it (``pipeline.split_file``)."""
    root = Path(root)
    path = Path(path) if path is not None else root / "splits" / split_name(split, seed, holdout_per_class)
    if path.is_file():
        return check_split(pd.read_csv(path), root, path)
    frame = make_split(root, split, seed, holdout_per_class)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame[SPLIT_COLUMNS].to_csv(path, index=False)
    return frame


def class_counts(labels: Sequence[int], num_classes: int = len(CLASSES)) -> np.ndarray:
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)


# --------------------------------------------------------------------------------------------- samplers
def class_balanced_weights(labels: Sequence[int], power: float = 1.0) -> torch.Tensor:
    """Per-sample weights ``1 / n_c^power`` rescaled to sum to C (released code's ``weighted_alpha`` = 1)."""
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels).astype(np.float64)
    w = 1.0 / np.power(counts[labels], power)
    w = w / w.sum() * np.count_nonzero(counts)
    return torch.as_tensor(w, dtype=torch.double)


def make_train_sampler(labels: Sequence[int], kind: str, seed: int, num_samples: int | None = None
                       ) -> Sampler | None:
    """``instance`` -> None (plain shuffling), or under torchrun a DistributedSampler giving each rank a disjoint
    share; ``class_balanced`` -> WeightedRandomSampler with replacement, under torchrun each rank drawing its
    ``1/world_size`` share of the draws from its own generator (the union is one class-balanced draw)."""
    from common.runtime import dist_info

    info = dist_info()
    if kind == "instance":
        if not info.distributed:
            return None
        from torch.utils.data import DistributedSampler

        return DistributedSampler(range(len(labels)), info.world_size, info.rank, shuffle=True, seed=seed,
                                  drop_last=True)
    if kind != "class_balanced":
        raise ValueError(f"sampler {kind!r} is unknown; use instance or class_balanced")
    from common.seed import make_generator

    weights = class_balanced_weights(labels)
    total = num_samples or len(weights)
    return WeightedRandomSampler(weights, -(-total // info.world_size), replacement=True,
                                 generator=make_generator(seed + 1_000_003 * info.rank))


# --------------------------------------------------------------------------------------------- transforms
def _randaugment_ops(m: float, which: str = "all") -> list:
    """RandAugment (n ops of this list at magnitude m/10 of the maximum). Affine ops move image and saliency
    together (mask target); colour ops are image-only transforms in albumentations, so saliency is untouched."""
    import albumentations as A

    f = m / 10.0
    fill = tuple(int(round(v * 255)) for v in RANDAUG_FILL)
    aff = {"fill": fill, "fill_mask": 0, "p": 1.0, "mask_interpolation": 1}
    geometric = [
        A.Affine(rotate=(-30 * f, 30 * f), **aff),
        A.Affine(shear={"x": (-16.7 * f, 16.7 * f), "y": (0, 0)}, **aff),
        A.Affine(shear={"x": (0, 0), "y": (-16.7 * f, 16.7 * f)}, **aff),
        A.Affine(translate_percent={"x": (-0.45 * f, 0.45 * f), "y": (0, 0)}, **aff),
        A.Affine(translate_percent={"x": (0, 0), "y": (-0.45 * f, 0.45 * f)}, **aff),
    ]
    if which == "geometric":
        return geometric
    if which != "all":
        raise ValueError(f"augment.randaug_ops={which!r} is unknown; use all or geometric")
    return geometric + [
        A.AutoContrast(p=1.0),
        A.Equalize(p=1.0),
        A.Posterize(num_bits=max(1, int(round(8 - 4 * f))), p=1.0),
        A.Solarize(threshold_range=(1 - 0.5 * f, 1 - 0.5 * f), p=1.0),
        A.ColorJitter(brightness=0.9 * f, contrast=0.9 * f, saturation=0.9 * f, hue=0, p=1.0),
        A.Sharpen(alpha=(0.1, 0.9 * f), p=1.0),
    ]


def train_transforms(size: int, aug: AugmentConfig) -> tuple:
    """The two training views (released ``ISICImageFolder``): q = crop, flip, jitter, RandAugment; k = crop,
    jitter, grey, blur, flip. Geometry is shared by ``image`` and the ``sal`` target."""
    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    cj = aug.color_jitter
    crop = {"size": (size, size), "scale": tuple(aug.crop_scale), "mask_interpolation": 1}
    tail = [A.Normalize(mean=ISIC_MEAN, std=ISIC_STD), ToTensorV2()]
    ops = _randaugment_ops(aug.randaug_magnitude, aug.randaug_ops)
    randaug = [A.SomeOf(ops, n=aug.randaug_n, p=1.0)] if aug.randaug_n > 0 else []
    q = A.Compose([A.RandomResizedCrop(**crop), A.HorizontalFlip(p=0.5),
                   A.ColorJitter(brightness=cj, contrast=cj, saturation=cj, hue=0, p=1.0),
                   *randaug, *tail],
                  additional_targets={"sal": "mask"})
    k = A.Compose([A.RandomResizedCrop(**crop), A.ColorJitter(brightness=cj, contrast=cj, saturation=cj, hue=0, p=1.0),
                   A.ToGray(p=0.2), A.GaussianBlur(sigma_limit=(0.1, 2.0), p=0.5), A.HorizontalFlip(p=0.5), *tail],
                  additional_targets={"sal": "mask"})
    return q, k


def eval_transform(size: int, aug: AugmentConfig):
    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    resize = int(round(size * aug.eval_resize_ratio))
    return A.Compose([A.Resize(resize, resize), A.CenterCrop(size, size), A.Normalize(mean=ISIC_MEAN, std=ISIC_STD),
                      ToTensorV2()], additional_targets={"sal": "mask"})


# --------------------------------------------------------------------------------------------- datasets
def saliency_file(image_path: str | Path, data_root: Path, saliency_root: Path) -> Path:
    return (saliency_root / Path(image_path).relative_to(data_root)).with_suffix(".png")


class ISICDataset(Dataset):
    """Items: ``image (3,H,W)`` float, ``sal (1,H,W)`` in [0,1], ``label`` int, ``index``; with ``two_views`` also
    ``image_k``/``sal_k``. ``saliency_root=None`` -> no saliency (eval/predict); labels -1 for unlabeled images."""

    def __init__(self, frame: pd.DataFrame, transforms: Sequence, data_root: str | Path | None = None,
                 saliency_root: str | Path | None = None, cache: bool = True):
        self.paths = [str(p) for p in frame["path"]]
        self.labels = [int(v) for v in frame["label"]] if "label" in frame else [-1] * len(frame)
        self.names = [str(v) for v in frame["image"]] if "image" in frame else [Path(p).stem for p in self.paths]
        self.transforms = list(transforms)
        self.data_root = Path(data_root) if data_root is not None else None
        self.saliency_root = Path(saliency_root) if saliency_root is not None else None
        self.cache = cache
        self._images: dict[int, np.ndarray] = {}
        self._sals: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        from common.readers import read_image

        if i in self._images:
            return self._images[i], self._sals.get(i)
        image = read_image(self.paths[i], mode="RGB")
        sal = None
        if self.saliency_root is not None:
            path = saliency_file(self.paths[i], self.data_root, self.saliency_root)
            if not path.is_file():
                raise FileNotFoundError(f"saliency map {path} missing for {self.paths[i]}; run "
                                        f"`python -m spmix.saliency_maps --images {self.data_root} "
                                        f"--out {self.saliency_root}` (train.py does it when saliency.precompute=true)")
            sal = read_image(path, mode="L")
            if sal.shape != image.shape[:2]:
                raise ValueError(f"saliency map {path} is {sal.shape}, image {self.paths[i]} is {image.shape[:2]}")
        if self.cache:
            self._images[i] = image
            if sal is not None:
                self._sals[i] = sal
        return image, sal

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image, sal = self._load(i)
        item: dict[str, torch.Tensor] = {"label": torch.tensor(self.labels[i]), "index": torch.tensor(i)}
        sal_f = (sal.astype(np.float32) / 255.0) if sal is not None else np.zeros(image.shape[:2], np.float32)
        for k, transform in enumerate(self.transforms):
            out = transform(image=image, sal=sal_f)
            suffix = "" if k == 0 else "_k"
            item[f"image{suffix}"] = out["image"]
            item[f"sal{suffix}"] = torch.as_tensor(out["sal"], dtype=torch.float32).unsqueeze(0)
        return item


def list_unlabeled(folder: str | Path) -> pd.DataFrame:
    """Images of a folder (``*.jpg|*.jpeg|*.png``) -> DataFrame(image, path) for predict mode; files with other
    suffixes are counted and named on stdout."""
    from common.datasets import partition_by_suffix

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"predict folder {folder} does not exist")
    paths, _ = partition_by_suffix(sorted(p for p in folder.iterdir() if p.is_file()), IMAGE_SUFFIXES,
                                   where=str(folder))
    if not paths:
        raise FileNotFoundError(f"no .jpg/.png images in {folder}")
    return pd.DataFrame({"image": [p.stem for p in paths], "path": [str(p) for p in paths]})
