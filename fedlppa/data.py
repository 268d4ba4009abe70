"""Readers of the four FedLPPA tasks in their released layout (official ``code_v4/dataloaders/dataset.py``).

::

    <root>/Domain1/train/<stem>.h5   keys image, mask, scribble, scribble_noisy, block, keypoint (+ box: FAZ, polyp)
    <root>/Domain1/test/<stem>.h5    keys image, mask
    ...
    <root>/Domain{K}/...

``image``: float32 in [0, 1], ``(H, W)`` (FAZ, prostate) or ``(3, H, W)`` (fundus, polyp); labels uint8 ``(H, W)``:
binary tasks 0 background, 1 foreground, 2 unlabelled; fundus 0 background, 1 cup, 2 disc rim, 3 unlabelled
(unlabelled = the number of classes = the pCE ignore index). A site reads its Domain's ``train`` files with its own
weak-label key and the ``test`` files with ``mask``.

Augmentation (official ``RandomGenerator``): with p = 0.5 a random rot90 + flip; otherwise with p = 0.5 a rotation by
an integer angle in [-45, 45) (nearest neighbour, no reshape), image corners filled with ``image_fill`` (0.8 grey,
0 RGB) and label corners with the unlabelled value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

__all__ = ["DataError", "Case", "SiteData", "read_h5_case", "list_split", "read_site", "read_sites",
           "augment_pair", "stack_batch", "PNG_MAPS", "PNG_DIRS"]

# The released PNG layout: PNG value -> h5 label (official odocfaz_data_processing.py); the binary tasks of the
# other releases use the FAZ map.
PNG_MAPS = {
    "faz": {"mask": {0: 0, 127: 1}, "weak": {0: 0, 127: 1, 254: 2}},
    "odoc": {"mask": {0: 0, 170: 1, 85: 2}, "weak": {0: 0, 170: 1, 85: 2, 255: 3}},
}
PNG_DIRS = {"image": "imgs", "mask": "mask", "scribble": "scr", "scribble_noisy": "scr_n", "block": "block",
            "box": "box", "keypoint": "keypoint"}


class DataError(ValueError):
    """A dataset problem; the message names the file and the fix."""


@dataclass
class Case:
    """One image: ``image`` float32 ``(C, H, W)``, ``label`` uint8 ``(H, W)``, ``stem``; ``mask``: the full mask of
    a training image when the file holds one (only used to score pseudo labels, never for training)."""

    stem: str
    image: np.ndarray
    label: np.ndarray
    mask: np.ndarray | None = None


@dataclass
class SiteData:
    site: int
    domain: int
    sup_type: str
    train: list[Case]
    test: list[Case]


def read_h5_case(path: Path, key: str, num_classes: int, in_channels: int) -> Case:
    """Read ``image`` and label ``key`` of one h5 file, checking keys, shapes and label values."""
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path}: not a readable HDF5 file ({exc}); re-export it (prepare.py writes this layout)") \
            from exc
    with handle:
        keys = sorted(handle.keys())
        for needed in ("image", key):
            if needed not in handle:
                raise DataError(f"{path}: no key `{needed}` (keys present: {keys}); choose a data.sup_types entry "
                                f"that the files hold, or regenerate them with the weak labels")
        image = np.asarray(handle["image"][()], dtype=np.float32)
        label = np.asarray(handle[key][()])
        mask = np.asarray(handle["mask"][()]).astype(np.uint8) if key != "mask" and "mask" in handle else None
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3 or image.shape[0] != in_channels:
        raise DataError(f"{path}: image has shape {image.shape}, expected ({in_channels}, H, W)"
                        f"{' or (H, W)' if in_channels == 1 else ''}; set data.in_channels to match the dataset")
    if label.shape != image.shape[1:]:
        raise DataError(f"{path}: `{key}` has shape {label.shape} but the image is {image.shape[1:]}; "
                        f"label and image must have the same size")
    values = np.unique(label)
    if values.min() < 0 or values.max() > num_classes:
        raise DataError(f"{path}: `{key}` holds values {values.tolist()}, outside 0..{num_classes} "
                        f"({num_classes} = unlabelled); check data.num_classes or the label encoding")
    if mask is not None and mask.shape != label.shape:
        raise DataError(f"{path}: `mask` has shape {mask.shape} but `{key}` is {label.shape}")
    return Case(path.stem, image, label.astype(np.uint8), mask)


def list_split(root: Path, domain: int, split: str) -> list[Path]:
    folder = root / f"Domain{domain}" / split
    if not (root / f"Domain{domain}").is_dir():
        present = sorted(p.name for p in root.glob("Domain*")) if root.is_dir() else []
        raise DataError(f"{root}: missing folder Domain{domain} (present: {present or 'none'}); the sites listed "
                        f"in data.domains must exist under data.root")
    files = sorted(folder.glob("*.h5"))
    if not files:
        raise DataError(f"{folder}: no .h5 files in the {split} split; every site needs train and test files")
    return files


def read_site(root: str | Path, site: int, domain: int, sup_type: str, num_classes: int, in_channels: int
              ) -> SiteData:
    """All train (weak label ``sup_type``) and test (``mask``) cases of one site."""
    root = Path(root)
    train = [read_h5_case(p, sup_type, num_classes, in_channels) for p in list_split(root, domain, "train")]
    test = [read_h5_case(p, "mask", num_classes - 1, in_channels) for p in list_split(root, domain, "test")]
    sizes = {c.image.shape for c in train + test}
    if len(sizes) > 1:
        raise DataError(f"{root}/Domain{domain}: images of different sizes {sorted(sizes)}; the loader does not "
                        f"resize (the release stores every image pre-resized)")
    return SiteData(site, domain, sup_type, train, test)


def read_sites(root: str | Path, domains: list[int], sup_types: list[str], num_classes: int, in_channels: int
               ) -> list[SiteData]:
    """Every site of a run; the number of Domain folders on disk must equal the number of configured sites."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist; pass --data-root or keep data.synthetic=true")
    on_disk = sorted(p.name for p in root.glob("Domain*") if p.is_dir())
    if len(on_disk) != len(domains):
        raise DataError(f"{root} holds {len(on_disk)} Domain folders ({on_disk}) but data.domains lists "
                        f"{len(domains)} sites; the number of sites must match the release (one Domain per site)")
    return [read_site(root, k, d, s, num_classes, in_channels) for k, (d, s) in enumerate(zip(domains, sup_types))]


def augment_pair(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator, image_fill: float,
                 ignore: int) -> tuple[np.ndarray, np.ndarray]:
    """Official random rot90/flip or rotation; ``image`` (C, H, W), ``labels`` (L, H, W) moved together."""
    if rng.random() > 0.5:
        k = int(rng.integers(0, 4))
        image, labels = np.rot90(image, k, axes=(1, 2)), np.rot90(labels, k, axes=(1, 2))
        axis = int(rng.integers(0, 2)) + 1
        image, labels = np.flip(image, axis=axis), np.flip(labels, axis=axis)
    elif rng.random() > 0.5:
        angle = int(rng.integers(-45, 45))
        image = ndimage.rotate(image, angle, axes=(2, 1), order=0, reshape=False, mode="constant", cval=image_fill)
        labels = ndimage.rotate(labels, angle, axes=(2, 1), order=0, reshape=False, mode="constant", cval=ignore)
    return np.ascontiguousarray(image), np.ascontiguousarray(labels)


def stack_batch(cases: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``[(image (C, H, W), labels (L, H, W))]`` -> images ``(B, C, H, W)`` float32, labels ``(B, L, H, W)``
    long (L = 1 weak label, or 2: weak label and full mask)."""
    images = torch.from_numpy(np.stack([c[0] for c in cases]).astype(np.float32))
    labels = torch.from_numpy(np.stack([c[1] for c in cases]).astype(np.int64))
    return images, labels
