"""Readers for LiTS and MSD Task03_Liver, the volume-level split, and 2D slice extraction / paste-back.

Layouts (labels 0 background, 1 liver, 2 tumour / "cancer"):

- LiTS: ``Training Batch 1/volume-{0..27}.nii`` + ``segmentation-N.nii``, ``Training Batch 2/`` 28-130, or all
  files flat in one folder, ``.nii`` or ``.nii.gz``; volume and segmentation are paired by N.
- MSD: ``Task03_Liver/{imagesTr,labelsTr,imagesTs}/liver_N.nii.gz`` listed by ``dataset.json`` (``training``
  entries with ``image`` and ``label``); macOS ``._*`` files beside them are skipped and counted.

Volumes are read with ``common.readers.read_nifti`` and reoriented to RAS (nibabel orientation transforms), so the
axial slices are ``array[:, :, k]``. Slices: HU clipped to ``hu_window`` and mapped to [0, 1]; the ROI is the
in-plane box of the liver label (all slices) + ``roi_margin`` px (``roi: gt_liver``, the common LiTS protocol, which
uses the ground-truth liver at test time too) or the whole slice (``roi: none``); the liver slices +- ``slice_margin``
are kept and resized to ``size`` x ``size`` (bilinear image, nearest labels). :func:`paste_back` returns a slice
prediction to the original grid for 3D metrics.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common.readers import ImageReadError, read_nifti

__all__ = ["DataFormatError", "LabelAccessError", "Case", "Volume", "SliceSet", "UnlabelledSlices", "list_cases",
           "load_volume", "window", "roi_box", "extract_slices", "concat_slices", "paste_back", "make_split",
           "load_or_make_split", "labelled_subset"]


class DataFormatError(ValueError):
    """A dataset that does not follow its published layout; the message names the file and the fix."""


class LabelAccessError(RuntimeError):
    """Training code tried to read the tumour labels of an unlabelled slice."""


@dataclass(frozen=True)
class Case:
    case_id: str
    image: Path
    label: Path | None


@dataclass
class Volume:
    """A reoriented (RAS) case: HU ``image (X, Y, Z)`` float32, ``label`` uint8 or None, ``spacing`` (mm)."""

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, float, float]
    affine: np.ndarray


# --------------------------------------------------------------------------------------------- listing
_LITS_RE = re.compile(r"^(volume|segmentation)-(\d+)\.nii(\.gz)?$")


def _lits_cases(root: Path) -> list[Case]:
    found: dict[str, dict[int, Path]] = {"volume": {}, "segmentation": {}}
    for path in sorted(root.rglob("*.nii*")):
        m = _LITS_RE.match(path.name)
        if not m:
            continue
        kind, n = m.group(1), int(m.group(2))
        if n in found[kind]:
            raise DataFormatError(f"LiTS {kind}-{n} appears twice: {found[kind][n]} and {path}; keep one copy")
        found[kind][n] = path
    if not found["volume"]:
        raise DataFormatError(f"no LiTS volume-N.nii files under {root}; expected 'Training Batch 1/volume-0.nii' "
                              f"and segmentation-N.nii beside it (or point --data-root at the folder holding them)")
    unpaired = sorted(set(found["volume"]) ^ set(found["segmentation"]))
    if unpaired:
        n = unpaired[0]
        have = found["volume"].get(n) or found["segmentation"].get(n)
        missing = "segmentation" if n in found["volume"] else "volume"
        raise DataFormatError(f"LiTS case {n} is unpaired: {have} has no {missing}-{n}.nii; re-extract the "
                              f"archive ({len(unpaired)} unpaired case(s): {unpaired[:10]})")
    return [Case(str(n), found["volume"][n], found["segmentation"][n]) for n in sorted(found["volume"])]


def _msd_cases(root: Path) -> list[Case]:
    task = root / "Task03_Liver" if (root / "Task03_Liver").is_dir() else root
    meta_path = task / "dataset.json"
    if not meta_path.is_file():
        raise DataFormatError(f"MSD Task03_Liver: {meta_path} not found; point data.root at the folder holding "
                              f"Task03_Liver/ (or at Task03_Liver itself)")
    try:
        meta = json.loads(meta_path.read_text())
        entries = meta["training"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataFormatError(f"{meta_path} is not the MSD dataset.json (needs a `training` list): {exc}") from exc
    junk = sorted(p.name for p in task.rglob("._*"))
    if junk:
        print(f"note: skipped {len(junk)} macOS resource file(s) (._*) in {task}: {', '.join(junk[:5])}")
    cases = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not {"image", "label"} <= set(entry):
            raise DataFormatError(f"{meta_path}: training entry {i} = {entry!r} needs `image` and `label` keys")
        image, label = task / entry["image"], task / entry["label"]
        for path in (image, label):
            if not path.is_file() or path.name.startswith("._"):
                raise DataFormatError(f"{meta_path}: training entry {i} names {path}, which does not exist; "
                                      f"re-extract Task03_Liver.tar")
        cases.append(Case(Path(entry["image"]).name.split(".")[0].replace("liver_", ""), image, label))
    return cases


def list_cases(dataset: str, root: str | Path) -> list[Case]:
    """Every labelled training case of ``dataset`` (``lits`` or ``msd``) under ``root``, sorted by id."""
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(f"data.root {root} is not a folder")
    if dataset == "lits":
        cases = _lits_cases(root)
    elif dataset == "msd":
        cases = _msd_cases(root)
    else:
        raise DataFormatError(f"unknown dataset {dataset!r}; use lits or msd")
    return sorted(cases, key=lambda c: int(c.case_id) if c.case_id.isdigit() else c.case_id)


# --------------------------------------------------------------------------------------------- reading
def _to_ras(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    target = nib.orientations.axcodes2ornt(("R", "A", "S"))
    transform = nib.orientations.ornt_transform(ornt, target)
    out = nib.orientations.apply_orientation(array, transform)
    new_affine = affine @ nib.orientations.inv_ornt_aff(transform, array.shape)
    spacing = tuple(float(s) for s in np.sqrt((new_affine[:3, :3] ** 2).sum(0)))
    return np.ascontiguousarray(out), new_affine, spacing


def load_volume(case: Case) -> Volume:
    """Read, check and reorient one case. Errors name the file: truncated/corrupt, shape or affine mismatch,
    labels outside {0, 1, 2}."""
    img = read_nifti(case.image)
    if img.array.ndim != 3:
        raise ImageReadError(f"{case.image} has {img.array.ndim} dimensions, expected a 3D CT volume")
    image, affine, spacing = _to_ras(img.array.astype(np.float32), img.affine)
    label = None
    if case.label is not None:
        seg = read_nifti(case.label)
        if seg.array.shape != img.array.shape:
            raise DataFormatError(f"{case.label} has shape {seg.array.shape} but its volume {case.image} has "
                                  f"{img.array.shape}; the pair does not belong together")
        if not np.allclose(seg.affine, img.affine, atol=1e-3):
            raise DataFormatError(f"{case.label} and {case.image} have different affines (voxel-to-world "
                                  f"matrices); re-export the segmentation on the volume's grid")
        values = np.unique(seg.array)
        bad = [v for v in values.tolist() if v not in (0, 1, 2)]
        if bad:
            raise DataFormatError(f"{case.label} holds label value(s) {bad[:10]}; LiTS/MSD liver labels are 0 "
                                  f"background, 1 liver, 2 tumour")
        label, _, _ = _to_ras(seg.array.astype(np.uint8), seg.affine)
    return Volume(case.case_id, image, label, spacing, affine)


# --------------------------------------------------------------------------------------------- slices
def window(hu: np.ndarray, low: float, high: float) -> np.ndarray:
    """Clip HU to [low, high] and map linearly to [0, 1] (float32)."""
    return ((np.clip(hu, low, high) - low) / (high - low)).astype(np.float32)


def roi_box(label: np.ndarray | None, shape: tuple[int, int], mode: str, margin: int, case_id: str = ""
            ) -> tuple[int, int, int, int]:
    """In-plane ROI ``(x0, x1, y0, y1)`` (end exclusive): liver box (all slices) + ``margin``, or the whole slice."""
    if mode == "none":
        return 0, shape[0], 0, shape[1]
    if label is None or not (label >= 1).any():
        raise DataFormatError(f"case {case_id}: the segmentation has no liver (label >= 1), so roi=gt_liver "
                              f"cannot crop it; fix the file or use data.roi=none")
    xs, ys = np.nonzero((label >= 1).any(axis=2))
    return (max(int(xs.min()) - margin, 0), min(int(xs.max()) + 1 + margin, shape[0]),
            max(int(ys.min()) - margin, 0), min(int(ys.max()) + 1 + margin, shape[1]))


def _resize(stack: np.ndarray, size: int, mode: str) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(stack, dtype=np.float32))[:, None]
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(t, size=(size, size), mode=mode, **kwargs)[:, 0].numpy()


@dataclass
class SliceSet:
    """Axial slices of several volumes at ``size`` x ``size``: ``images (N, S, S)`` in [0, 1], ``tumour`` and
    ``liver`` ``(N, S, S)`` uint8 (None without labels), ``case_ids``/``slice_index`` per slice and, per volume,
    ``meta[case_id]`` = original shape, ROI box, slice range and spacing (for :func:`paste_back`)."""

    images: np.ndarray
    tumour: np.ndarray | None
    liver: np.ndarray | None
    case_ids: np.ndarray
    slice_index: np.ndarray
    meta: dict[str, dict] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx: np.ndarray) -> SliceSet:
        idx = np.asarray(idx, np.int64)
        def pick(a):
            return (None if a is None else a[idx])
        keep = set(self.case_ids[idx].tolist())
        return SliceSet(self.images[idx], pick(self.tumour), pick(self.liver), self.case_ids[idx],
                        self.slice_index[idx], {k: v for k, v in self.meta.items() if k in keep})


def extract_slices(volume: Volume, size: int, hu_window: tuple[float, float], roi: str, roi_margin: int,
                   slice_margin: int) -> SliceSet:
    """The training/evaluation slices of one volume (see module docstring)."""
    shape = volume.image.shape
    x0, x1, y0, y1 = roi_box(volume.label, shape[:2], roi, roi_margin, volume.case_id)
    if roi == "none" or volume.label is None:
        z0, z1 = 0, shape[2]
    else:
        zs = np.nonzero((volume.label >= 1).any(axis=(0, 1)))[0]
        z0, z1 = max(int(zs.min()) - slice_margin, 0), min(int(zs.max()) + 1 + slice_margin, shape[2])
    crop = np.moveaxis(volume.image[x0:x1, y0:y1, z0:z1], 2, 0)
    images = _resize(window(crop, *hu_window), size, "bilinear").clip(0, 1).astype(np.float32)
    tumour = liver = None
    if volume.label is not None:
        lab = np.moveaxis(volume.label[x0:x1, y0:y1, z0:z1], 2, 0)
        tumour = _resize((lab == 2).astype(np.float32), size, "nearest-exact").astype(np.uint8)
        liver = _resize((lab >= 1).astype(np.float32), size, "nearest-exact").astype(np.uint8)
    n = z1 - z0
    meta = {"shape": tuple(int(s) for s in shape), "box": (x0, x1, y0, y1), "z": (z0, z1),
            "spacing": tuple(volume.spacing)}
    return SliceSet(images, tumour, liver, np.array([volume.case_id] * n), np.arange(z0, z1), {volume.case_id: meta})


def concat_slices(sets: list[SliceSet]) -> SliceSet:
    if not sets:
        raise ValueError("no slices to concatenate")
    def cat(name):
        return (None if getattr(sets[0], name) is None else np.concatenate([getattr(s, name) for s in sets]))
    meta: dict[str, dict] = {}
    for s in sets:
        meta.update(s.meta)
    return SliceSet(cat("images"), cat("tumour"), cat("liver"), cat("case_ids"), cat("slice_index"), meta)


def paste_back(probs: np.ndarray, meta: dict, threshold: float = 0.5) -> np.ndarray:
    """Slice probabilities ``(n, S, S)`` of one volume (in slice order) -> boolean mask on the original grid
    ``(X, Y, Z)``: bilinear resize to the ROI, threshold, zeros outside the ROI and the slice range."""
    x0, x1, y0, y1 = meta["box"]
    z0, z1 = meta["z"]
    if len(probs) != z1 - z0:
        raise ValueError(f"paste_back: {len(probs)} slices for a slice range of {z1 - z0}")
    out = np.zeros(meta["shape"], bool)
    t = torch.from_numpy(np.ascontiguousarray(probs, dtype=np.float32))[:, None]
    resized = F.interpolate(t, size=(x1 - x0, y1 - y0), mode="bilinear", align_corners=False)[:, 0].numpy()
    out[x0:x1, y0:y1, z0:z1] = np.moveaxis(resized > threshold, 0, 2)
    return out


class UnlabelledSlices:
    """Unlabelled training slices: images are free to read, tumour labels are not (:class:`LabelAccessError`);
    only :meth:`reveal_for_report` (the reporting oracle, after selection) returns them."""

    def __init__(self, slices: SliceSet):
        self._slices = slices

    @property
    def images(self) -> np.ndarray:
        return self._slices.images

    @property
    def case_ids(self) -> np.ndarray:
        return self._slices.case_ids

    @property
    def tumour(self) -> np.ndarray:
        raise LabelAccessError("tumour labels of unlabelled slices are hidden from training; prompts and pseudo-"
                               "labels must come from the SSL model (use reveal_for_report only for reporting)")

    @property
    def liver(self) -> np.ndarray | None:
        return self._slices.liver  # the liver ROI is part of the input protocol (roi: gt_liver), not the target

    def __len__(self) -> int:
        return len(self._slices)

    def reveal_for_report(self) -> np.ndarray | None:
        return self._slices.tumour


# --------------------------------------------------------------------------------------------- split
def make_split(case_ids: list[str], n_test: int, seed: int) -> dict[str, list[str]]:
    """Seeded volume-level split ``{"train": [...], "test": [...]}`` (sorted ids)."""
    if n_test >= len(case_ids):
        raise DataFormatError(f"data.n_test={n_test} leaves no training volume out of {len(case_ids)}")
    order = np.random.default_rng(seed).permutation(len(case_ids))
    test = sorted((case_ids[i] for i in order[:n_test]), key=_id_key)
    train = sorted((case_ids[i] for i in order[n_test:]), key=_id_key)
    return {"train": train, "test": test}


def _id_key(case_id: str):
    return (0, int(case_id)) if case_id.isdigit() else (1, case_id)


def load_or_make_split(path: Path, case_ids: list[str], n_test: int, seed: int) -> dict[str, list[str]]:
    """Read the split at ``path`` (checking every named volume exists) or create and write it."""
    if path.is_file():
        split = json.loads(path.read_text())
        missing = [c for part in ("train", "test") for c in split.get(part, []) if c not in set(case_ids)]
        if missing or not {"train", "test"} <= set(split):
            raise DataFormatError(f"split file {path} names volume(s) {missing[:10]} that are not in the dataset "
                                  f"(or lacks train/test); delete it to regenerate, or fix data.root")
        return split
    split = make_split(case_ids, n_test, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**split, "seed": seed}, indent=1))
    return split


def labelled_subset(train_ids: list[str], fraction: float, seed: int) -> list[str]:
    """The ``round(fraction x N)`` (>= 1) training volumes that keep their tumour labels for ``seed``."""
    k = max(1, int(round(fraction * len(train_ids))))
    order = np.random.default_rng([seed, 31]).permutation(len(train_ids))
    return sorted((train_ids[i] for i in order[:k]), key=_id_key)
