"""Dataset readers in the published on-disk layouts (``datasets/README.md`` of llmir/YoloCurvSeg) and batch sampling.

Every reader returns :class:`Case` records (paths) for a split; :func:`load_case` decodes one case into a grey float
image in [0, 1], a {0, 1} label, a FOV mask and an optional noisy skeleton. Layouts (see README for trees):

- ``drive``: ``{training,test}/images/NN_{training,test}.tif``, ``1st_manual/NN_manual1.gif``,
  ``mask/NN_{training,test}_mask.gif``; official split (test 01-20, training 21-40); green channel; FOV from the mask.
- ``chasedb1``: flat folder ``Image_NNX.jpg`` + ``Image_NNX_1stHO.png``; split: children 01-10 train (20 images),
  11-14 test (8 images) (the common protocol); green channel; FOV = red channel > 15, holes filled.
- ``dca1``: ``img/<n>.png``, ``gt/<n>.png`` (release zip ``gt (fully supervised labels)``), ``skeleton/<n>.png``
  (release zip ``Noisy Skeleton Annotations``), n = 1..134; split 1-100 train, 101-134 test (Cervantes-Sanchez).
- ``octa500``: ``OCTA_6M|OCTA_3M/Projection Maps/OCTA(ILM_OPL)/<id>.bmp`` and ``.../GT_LargeVessel/<id>.bmp``
  (label folder configurable); IPN-V2 split (6M: 10001-10180 train, 10181-10200 val, 10201-10300 test;
  3M: 10301-10440 / 10441-10450 / 10451-10500).
- ``corn``: ``{train,test}/images/<name>.(png|jpg|tif)`` + ``{train,test}/labels/<name>.png`` (the release's cleaned
  partition; layout OURS, the archive was not inspected).
- ``h5``: release preprocessed files ``<root>/<split>/<case>.h5`` with ``image`` (float [0, 1]), ``label``
  (integers) and optional ``scribble`` (0 bg, 1 fg, 2 unlabelled); needs ``h5py``.

An optional skeleton for any layout is ``<root>/skeleton/<case_id>.png`` (foreground-only noisy skeleton).
Masks must hold only {0, 255} (or {0, 1}); anything else is an error that names the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from common.datasets import partition_by_suffix
from common.readers import ImageReadError, read_image
from yolocurvseg.skeleton import read_noisy_skeleton

__all__ = ["DatasetError", "Case", "LoadedCase", "DATASETS", "list_cases", "load_case", "load_cases",
           "read_binary_mask", "read_grey", "case_files", "PairSampler", "MixedSampler",
           "standardize"]


class DatasetError(ValueError):
    """A dataset folder that does not match its published layout; the message names the path and the fix."""


@dataclass(frozen=True)
class DatasetInfo:
    """Appearance facts the pipeline may use: vessel polarity, which channel is read, the SCA preset."""

    polarity: str  # dark | bright
    channel: str   # green | gray
    preset: str


DATASETS: dict[str, DatasetInfo] = {
    "drive": DatasetInfo("dark", "green", "drive"),
    "chasedb1": DatasetInfo("dark", "green", "chasedb1"),
    "dca1": DatasetInfo("dark", "gray", "dca1"),
    "octa500": DatasetInfo("bright", "gray", "octa500"),
    "corn": DatasetInfo("bright", "gray", "corn"),
    "h5": DatasetInfo("dark", "gray", "drive"),
}


@dataclass(frozen=True)
class Case:
    """Paths of one case; ``label``/``fov``/``skeleton`` may be None (unlabelled image, no FOV, no skeleton)."""

    case_id: str
    image: Path
    label: Path | None = None
    fov: Path | None = None
    skeleton: Path | None = None
    h5_key: bool = False


@dataclass
class LoadedCase:
    """``image`` (H, W) float32 in [0, 1]; ``label`` (H, W) uint8 {0, 1} or None; ``fov`` (H, W) bool;
    ``skeleton`` (H, W) bool or None."""

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    fov: np.ndarray
    skeleton: np.ndarray | None = None


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{what}: folder {path} not found; check data.root and the dataset layout in "
                           f"yolocurvseg/README.md (or run `python synth.py` for the synthetic stand-in)")
    return path


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DatasetError(f"{what}: file {path} not found; every image needs its label in the published layout")
    return path


def _skeleton_for(root: Path, case_id: str) -> Path | None:
    p = root / "skeleton" / f"{case_id}.png"
    return p if p.is_file() else None


def _note_ignored(files: list[Path], where: Path, expected: str) -> None:
    """Name the files a reader does not use (never dropped silently)."""
    if files:
        names = ", ".join(p.name for p in files[:10]) + (" ..." if len(files) > 10 else "")
        print(f"note: ignored {len(files)} file(s) in {where} not named like {expected}: {names}")


def _drive(root: Path, split: str) -> list[Case]:
    folder = {"train": "training", "test": "test"}.get(split)
    if folder is None:
        raise DatasetError(f"DRIVE has splits train and test, got {split!r}")
    base = _require_dir(root / folder, "DRIVE")
    tifs, _ = partition_by_suffix(sorted(_require_dir(base / "images", "DRIVE").iterdir()), [".tif"],
                                  where=str(base / "images"))
    images = [p for p in tifs if p.name.endswith(f"_{folder}.tif")]
    _note_ignored([p for p in tifs if p not in images], base / "images", f"NN_{folder}.tif")
    if not images:
        raise DatasetError(f"DRIVE: no *_{folder}.tif in {base / 'images'}")
    cases = []
    for img in images:
        num = img.name.split("_")[0]
        label = _require_file(base / "1st_manual" / f"{num}_manual1.gif", "DRIVE")
        fov = _require_file(base / "mask" / f"{num}_{folder}_mask.gif", "DRIVE")
        cases.append(Case(num, img, label, fov, _skeleton_for(root, num)))
    return cases


_CHASE = re.compile(r"Image_(\d\d)([LR])\.jpg$")


def _chasedb1(root: Path, split: str) -> list[Case]:
    _require_dir(root, "CHASEDB1")
    cases = []
    for img in sorted(root.glob("Image_*.jpg")):
        m = _CHASE.search(img.name)
        if m is None:
            continue
        child = int(m.group(1))
        if (split == "train") != (child <= 10):
            continue
        cid = img.stem
        cases.append(Case(cid, img, _require_file(root / f"{cid}_1stHO.png", "CHASEDB1"), None,
                          _skeleton_for(root, cid)))
    if split not in ("train", "test"):
        raise DatasetError(f"CHASEDB1 has splits train and test, got {split!r}")
    if not cases:
        raise DatasetError(f"CHASEDB1: no Image_NNL.jpg files for split {split} in {root}")
    return cases


def _dca1(root: Path, split: str) -> list[Case]:
    rng = {"train": range(1, 101), "test": range(101, 135)}.get(split)
    if rng is None:
        raise DatasetError(f"DCA1 has splits train and test, got {split!r}")
    imgs, gts = _require_dir(root / "img", "DCA1"), _require_dir(root / "gt", "DCA1")
    cases = []
    for n in rng:
        img = imgs / f"{n}.png"
        if not img.is_file():
            continue
        cases.append(Case(str(n), img, _require_file(gts / f"{n}.png", "DCA1"), None, _skeleton_for(root, str(n))))
    if not cases:
        raise DatasetError(f"DCA1: no images of split {split} in {imgs} (expected 1.png ... 134.png)")
    return cases


_OCTA_SPLITS = {
    "OCTA_6M": {"train": (10001, 10180), "val": (10181, 10200), "test": (10201, 10300)},
    "OCTA_3M": {"train": (10301, 10440), "val": (10441, 10450), "test": (10451, 10500)},
}


def _octa500(root: Path, split: str, subset: str = "OCTA_6M", label_dir: str = "GT_LargeVessel",
             projection: str = "OCTA(ILM_OPL)") -> list[Case]:
    if subset not in _OCTA_SPLITS or split not in _OCTA_SPLITS[subset]:
        raise DatasetError(f"OCTA500 subset {subset!r} / split {split!r}; subsets {list(_OCTA_SPLITS)}, "
                           f"splits train/val/test")
    base = _require_dir(root / subset, "OCTA500")
    proj = _require_dir(base / "Projection Maps" / projection, "OCTA500")
    labels = _require_dir(base / label_dir, "OCTA500")
    lo, hi = _OCTA_SPLITS[subset][split]
    cases = [Case(str(i), proj / f"{i}.bmp", _require_file(labels / f"{i}.bmp", "OCTA500"), None,
                  _skeleton_for(root, str(i))) for i in range(lo, hi + 1) if (proj / f"{i}.bmp").is_file()]
    if not cases:
        raise DatasetError(f"OCTA500: no <id>.bmp for ids {lo}-{hi} in {proj}")
    return cases


def _corn(root: Path, split: str) -> list[Case]:
    base = _require_dir(root / split, "CORN")
    imgs, _ = partition_by_suffix(sorted(_require_dir(base / "images", "CORN").iterdir()),
                                  (".png", ".jpg", ".tif", ".bmp"), where=str(base / "images"))
    if not imgs:
        raise DatasetError(f"CORN: no images in {base / 'images'}")
    return [Case(p.stem, p, _require_file(base / "labels" / f"{p.stem}.png", "CORN"), None,
                 _skeleton_for(root, p.stem)) for p in imgs]


def _h5(root: Path, split: str) -> list[Case]:
    files = sorted(_require_dir(root / split, "h5").glob("*.h5"))
    if not files:
        raise DatasetError(f"h5: no *.h5 files in {root / split}")
    return [Case(p.stem, p, p, None, _skeleton_for(root, p.stem), h5_key=True) for p in files]


def list_cases(dataset: str, root: str | Path, split: str, **kwargs: str) -> list[Case]:
    """Cases of ``split`` (``train``/``test``; OCTA500 also ``val``) of ``dataset`` under ``root``."""
    readers = {"drive": _drive, "chasedb1": _chasedb1, "dca1": _dca1, "octa500": _octa500, "corn": _corn,
               "h5": _h5}
    if dataset not in readers:
        raise DatasetError(f"unknown dataset {dataset!r}; choose one of {sorted(readers)}")
    return readers[dataset](Path(root), split, **kwargs)


def case_files(cases: list[Case]) -> list[Path]:
    """Every file the cases list (image, label, FOV mask, skeleton), for the check before any work."""
    files = []
    for case in cases:
        files += [p for p in (case.image, case.label, case.fov, case.skeleton) if p is not None]
    return list(dict.fromkeys(files))


def read_binary_mask(path: str | Path) -> np.ndarray:
    """A {0, 255} (or {0, 1}) mask -> uint8 {0, 1} ``(H, W)``; any other value raises naming the file."""
    arr = read_image(path, mode="L")  # palette GIFs (DRIVE) -> their grey values, not palette indices
    values = set(np.unique(arr).tolist())
    if not (values <= {0, 255} or values <= {0, 1}):
        raise ImageReadError(f"mask {path} holds values {sorted(values)[:8]} outside {{0, 255}}; re-export it as a "
                             f"binary mask (0 background, 255 vessel), without anti-aliasing or JPEG compression")
    return (arr > 0).astype(np.uint8)


def read_grey(path: str | Path, channel: str) -> np.ndarray:
    """A grey float32 ``(H, W)`` image in [0, 1]: the ``green`` channel of RGB files, or the channel mean."""
    arr = read_image(path)
    if arr.ndim == 3:
        arr = arr[..., 1] if channel == "green" else arr[..., :3].mean(axis=-1)
    arr = arr.astype(np.float32)
    scale = 65535.0 if arr.max() > 255 else 255.0
    return np.clip(arr / scale, 0, 1).astype(np.float32)


def _fov_from_red(path: Path) -> np.ndarray:
    arr = read_image(path)
    red = arr[..., 0] if arr.ndim == 3 else arr
    return ndimage.binary_fill_holes(ndimage.binary_opening(red > 15, iterations=2))


def _load_h5(case: Case) -> LoadedCase:
    try:
        import h5py
    except ImportError as exc:
        raise DatasetError("reading the release's .h5 files needs h5py: pip install h5py") from exc
    with h5py.File(case.image, "r") as f:
        for key in ("image", "label"):
            if key not in f:
                raise DatasetError(f"{case.image} lacks the key {key!r} (found {list(f.keys())})")
        image = np.asarray(f["image"], np.float32)
        label = (np.asarray(f["label"]) > 0).astype(np.uint8)
        skeleton = (np.asarray(f["scribble"]) == 1) if "scribble" in f else None
    if image.ndim == 3:
        image = image.mean(axis=-1) if image.shape[-1] in (3, 4) else image[0]
    return LoadedCase(case.case_id, image, label, np.ones(image.shape, bool), skeleton)


def load_case(case: Case, dataset: str, with_label: bool = True) -> LoadedCase:
    """Decode one case (see module docstring); checks that image, label, FOV and skeleton sizes agree."""
    if case.h5_key:
        return _load_h5(case)
    info = DATASETS[dataset]
    image = read_grey(case.image, info.channel)
    label = None
    if with_label and case.label is not None:
        label = read_binary_mask(case.label)
        if label.shape != image.shape:
            raise DatasetError(f"label {case.label} has size {label.shape}, image {case.image} has {image.shape}")
    if case.fov is not None:
        fov = read_binary_mask(case.fov).astype(bool)
    elif dataset == "chasedb1":
        fov = _fov_from_red(case.image)
    else:
        fov = np.ones(image.shape, bool)
    if fov.shape != image.shape:
        raise DatasetError(f"FOV mask {case.fov} has size {fov.shape}, image {case.image} has {image.shape}")
    skeleton = read_noisy_skeleton(case.skeleton, image.shape) if case.skeleton is not None else None
    return LoadedCase(case.case_id, image, label, fov, skeleton)


def load_cases(cases: list[Case], dataset: str, with_label: bool = True) -> list[LoadedCase]:
    return [load_case(c, dataset, with_label) for c in cases]


# --------------------------------------------------------------------------------------------- sampling
def standardize(image: np.ndarray, fov: np.ndarray | None = None) -> np.ndarray:
    """Zero mean, unit variance over the ``fov`` pixels (all pixels when None) of a ``(H, W)`` image: the segmenter
    input of every stage and of inference, so training crops and whole test images share one statistic (the
    statistics of the whole image inside its FOV; the dark surround of a fundus image never enters)."""
    img = np.asarray(image, np.float32)
    values = img[np.asarray(fov, bool)] if fov is not None else img
    if values.size == 0:
        raise ValueError("standardize: the FOV mask is empty")
    return ((img - values.mean()) / (values.std() + 1e-6)).astype(np.float32)


class PairSampler:
    """Random crops + flips/rot90 + gamma jitter from in-memory ``(H, W)`` images and integer labels.

    ``labels`` use 0 bg, 1 fg and ``ignore_index`` (2) for unlabelled pixels. ``fovs``: one FOV mask per image, or
    one for all, or None (whole image). ``batch`` returns images ``(B, 1, c, c)`` float32 standardized with the
    statistics of the whole (gamma-jittered) image inside its FOV (:func:`standardize`, as at inference) and labels
    ``(B, c, c)`` int64; images smaller than the crop are reflect-padded (labels padded with ``ignore_index``).
    """

    def __init__(self, images: list[np.ndarray], labels: list[np.ndarray], crop: int, ignore_index: int = 2,
                 gamma: float = 0.25, fovs: list[np.ndarray] | np.ndarray | None = None):
        if len(images) != len(labels) or not images:
            raise ValueError(f"PairSampler needs matching non-empty lists, got {len(images)} images, "
                             f"{len(labels)} labels")
        if fovs is not None and not isinstance(fovs, list):
            fovs = [fovs] * len(images)
        if fovs is not None and len(fovs) != len(images):
            raise ValueError(f"PairSampler got {len(fovs)} FOV masks for {len(images)} images")
        self.images, self.labels, self.fovs = images, labels, fovs
        self.crop, self.ignore_index, self.gamma = int(crop), ignore_index, gamma

    def __len__(self) -> int:
        return len(self.images)

    def crop_pair(self, img: np.ndarray, lab: np.ndarray, rng: np.random.Generator,
                  fov: np.ndarray | None = None, standardized: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """One random ``(c, c)`` crop of an image and its label (reflect / ignore padding), flip, rot90, gamma;
        ``standardized``: in the statistics of the whole gamma-jittered image inside ``fov``."""
        c = self.crop
        img = np.clip(img, 0, 1) ** np.exp(rng.uniform(-self.gamma, self.gamma))
        if standardized:
            img = standardize(img, fov)
        h, w = img.shape
        if h < c or w < c:
            ph, pw = max(c - h, 0), max(c - w, 0)
            img = np.pad(img, ((0, ph), (0, pw)), mode="reflect")
            lab = np.pad(lab, ((0, ph), (0, pw)), constant_values=self.ignore_index)
            h, w = img.shape
        y, x = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
        img, lab = img[y: y + c, x: x + c], lab[y: y + c, x: x + c]
        if rng.random() < 0.5:
            img, lab = img[:, ::-1], lab[:, ::-1]
        k = int(rng.integers(4))
        return np.rot90(img, k), np.rot90(lab, k)

    def image_crops(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` random image crops ``(size, c, c)`` float (labels discarded; unstandardized, in [0, 1])."""
        idx = rng.integers(0, len(self.images), size=size)
        return np.stack([self.crop_pair(self.images[i], self.labels[i], rng)[0] for i in idx])

    def batch(self, rng: np.random.Generator, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = rng.integers(0, len(self.images), size=size)
        pairs = [self.crop_pair(self.images[i], self.labels[i], rng, None if self.fovs is None else self.fovs[i],
                                standardized=True) for i in idx]
        x = torch.from_numpy(np.stack([p[0] for p in pairs]).astype(np.float32))[:, None]
        y = torch.from_numpy(np.stack([p[1] for p in pairs]).astype(np.int64))
        return x, y


class MixedSampler:
    """Batches of ``round(size * real_fraction)`` crops from ``real`` and the rest from ``synthetic`` (fine stage)."""

    def __init__(self, real: PairSampler, synthetic: PairSampler, real_fraction: float):
        self.real, self.synthetic, self.real_fraction = real, synthetic, real_fraction

    def batch(self, rng: np.random.Generator, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        n_real = int(round(size * self.real_fraction))
        parts = [s.batch(rng, n) for s, n in ((self.real, n_real), (self.synthetic, size - n_real)) if n > 0]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
