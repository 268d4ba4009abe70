"""Readers of the datasets PRIOR pre-trains and is evaluated on, in their published layouts, and the torch
``Dataset``s built on them. Every bad input raises :class:`DataError` naming the file (and row) and the fix.

- MIMIC-CXR-JPG 2.0.0 + MIMIC-CXR reports (official builder ``codes/prior/data/pretrain/mimiccxr.py``): frontal
  (PA/AP) images only, findings + impression sentences, at least ``min_sentences`` per study, one frontal image per
  study drawn per epoch; exclusions are counted and printed.
- CheXpert-v1.0-small ``train.csv``/``valid.csv`` (14 labels in {1, 0, -1, blank}) and the CheXpert 5x200 zero-shot
  json (official ``datasets/zero_shot_classification/chexpert_5x200.json``) with its seeded builder.
- RSNA Pneumonia (DICOM + a row per box), SIIM-ACR (DICOM tree + relative column-major RLE), COVIDx (txt lists),
  Object-CXR (csv of box / ellipse / polygon annotations).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from common.readers import read_image
from prior.reports import report_sentences, swap_left_right

__all__ = ["DataError", "MimicStudy", "read_mimic", "mimic_data_json", "read_table", "read_chexpert",
           "build_5x200", "read_5x200", "read_dicom", "read_rsna", "rle_decode", "read_siim", "read_covidx",
           "read_object_cxr", "load_gray", "PretrainDataset", "ImageDataset", "collate_pretrain", "CHEXPERT_LABELS",
           "FIVE_CLASSES", "UNCERTAINTY_POLICIES", "dataset_dir"]

CHEXPERT_LABELS = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
                   "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
                   "Fracture", "Support Devices")
FIVE_CLASSES = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
UNCERTAINTY_POLICIES = ("zeros", "ones", "ignore")
COVIDX_LABELS = {"covid-19": 0, "positive": 0, "pneumonia": 1, "normal": 2, "negative": 2}


class DataError(ValueError):
    """A dataset file that cannot be used; the message names the file, the row where it applies, and the fix."""


def dataset_dir(root: str | Path, sub: str) -> Path:
    """``data.<name>_dir`` resolved against ``data.root`` (absolute paths stay)."""
    sub_path = Path(sub).expanduser()
    return sub_path if sub_path.is_absolute() else Path(root) / sub_path


def read_table(folder: Path, name: str, columns: Sequence[str]) -> pd.DataFrame:
    """``<folder>/<name>`` or ``<name>.gz``, checked for ``columns``."""
    for path in (folder / name, folder / f"{name}.gz"):
        if path.is_file():
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
            missing = [c for c in columns if c not in frame.columns]
            if missing:
                raise DataError(f"{path} lacks column(s) {missing} (found {list(frame.columns)}); use the "
                                f"dataset's published CSV, unmodified")
            return frame
    raise DataError(f"{folder / name}[.gz] not found: the folder must hold the dataset's published CSV files")


# --------------------------------------------------------------------------------------------- MIMIC-CXR
@dataclass
class MimicStudy:
    """One study: frontal image paths, report sentences (impression then findings), split, CheXpert labels
    (14 values, NaN blank) and the report file."""

    study_id: str
    subject_id: str
    images: list[Path]
    sentences: list[str]
    split: str
    labels: np.ndarray
    report: Path
    dicom_ids: list[str] = field(default_factory=list)


def _mimic_paths(root: Path, subject: str, study: str) -> tuple[Path, Path]:
    folder = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
    return folder, folder.parent / f"s{study}.txt"


def read_mimic(root: str | Path, splits: Sequence[str] = ("train",), min_sentences: int = 4,
               sections: tuple[str, ...] = ("impression", "findings"), verbose: bool = True) -> list[MimicStudy]:
    """MIMIC-CXR-JPG studies of ``splits`` with at least ``min_sentences`` sentences and one PA/AP image."""
    root = Path(root)
    meta = read_table(root, "mimic-cxr-2.0.0-metadata.csv", ["dicom_id", "subject_id", "study_id"])
    if "ViewPosition" not in meta.columns:
        raise DataError(f"{root}/mimic-cxr-2.0.0-metadata.csv has no ViewPosition column: frontal images cannot be "
                        f"selected; use the metadata file of MIMIC-CXR-JPG 2.0.0")
    split = read_table(root, "mimic-cxr-2.0.0-split.csv", ["dicom_id", "split"])
    chex = read_table(root, "mimic-cxr-2.0.0-chexpert.csv", ["subject_id", "study_id", *CHEXPERT_LABELS])
    labels = {r["study_id"]: _parse_labels(r, str(root / "mimic-cxr-2.0.0-chexpert.csv"), i)
              for i, r in enumerate(chex.to_dict("records"))}
    frame = meta.merge(split[["dicom_id", "split"]], on="dicom_id", how="left")
    counts = {"lateral_only": 0, "short_report": 0, "no_report_sections": 0}
    studies = []
    for (subject, study), group in frame[frame["split"].isin(splits)].groupby(["subject_id", "study_id"], sort=True):
        frontal = group[group["ViewPosition"].isin(["PA", "AP"])]
        if frontal.empty:
            counts["lateral_only"] += 1
            continue
        folder, report = _mimic_paths(root, subject, study)
        if not report.is_file():
            raise DataError(f"report {report} of study {study} (metadata row of dicom {frontal.iloc[0].dicom_id}) "
                            f"not found: copy the MIMIC-CXR reports (files/pXX/pXXXXXXXX/sXXXXXXXX.txt) into {root}")
        sentences = report_sentences(report.read_text(errors="replace"), sections)
        if not sentences:
            counts["no_report_sections"] += 1
            continue
        if len(sentences) < min_sentences:
            counts["short_report"] += 1
            continue
        images = [folder / f"{d}.jpg" for d in frontal["dicom_id"]]
        for path, dicom in zip(images, frontal["dicom_id"]):
            if not path.is_file():
                raise DataError(f"image {path} (metadata row of dicom_id {dicom}) not found: the MIMIC-CXR-JPG "
                                f"files/ tree is incomplete")
        studies.append(MimicStudy(study, subject, images, sentences, str(frontal.iloc[0]["split"]),
                                  labels.get(study, np.full(len(CHEXPERT_LABELS), np.nan)), report,
                                  list(frontal["dicom_id"])))
    if verbose:
        print(f"MIMIC-CXR {root} {'/'.join(splits)}: {len(studies)} studies; excluded {counts}")
    return studies


def mimic_data_json(studies: Sequence[MimicStudy]) -> dict[str, dict]:
    """The official builder's ``data.json`` (keys image_path, p_index, patient_id, text_info, total_sentences,
    sentence_number) plus the ``label`` its dataset reads but its builder never writes (CheXpert 14, blank -> 0)."""
    out = {}
    for s in studies:
        text = " ".join(s.sentences)
        out[f"s{s.study_id}"] = {
            "image_path": sorted(str(p) for p in s.images), "p_index": f"p{s.subject_id[:2]}",
            "patient_id": f"p{s.subject_id}", "text_info": {"report": [text, s.sentences, len(text.split())]},
            "total_sentences": str(len(s.sentences)), "sentence_number": len(s.sentences),
            "label": [int(v) if np.isfinite(v) else 0 for v in s.labels]}
    return out


# --------------------------------------------------------------------------------------------- CheXpert
def _parse_labels(row: dict, source: str, index: int) -> np.ndarray:
    values = []
    for name in CHEXPERT_LABELS:
        raw = str(row[name]).strip()
        if raw == "":
            values.append(np.nan)
            continue
        try:
            v = float(raw)
        except ValueError:
            v = None
        if v not in (1.0, 0.0, -1.0):
            raise DataError(f"{source} row {index + 2}: column {name!r} = {raw!r}; CheXpert labels must be 1, 0, -1 "
                            f"or blank")
        values.append(v)
    return np.asarray(values, dtype=np.float32)


def read_chexpert(root: str | Path, part: str = "train", policy: str = "zeros") -> tuple[list[Path], np.ndarray,
                                                                                       np.ndarray]:
    """CheXpert-v1.0-small ``<part>.csv`` -> (image paths, labels ``(N, 14)`` after the uncertainty policy,
    ``valid`` mask ``(N, 14)``: False where ``ignore`` drops an uncertain label). Blank -> 0."""
    if policy not in UNCERTAINTY_POLICIES:
        raise DataError(f"uncertainty policy {policy!r}: use one of {UNCERTAINTY_POLICIES}")
    root = Path(root)
    csv_path = root / f"{part}.csv"
    if not csv_path.is_file():
        raise DataError(f"{csv_path} not found: point data.chexpert_dir at the CheXpert-v1.0-small folder")
    frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    missing = [c for c in ("Path", *CHEXPERT_LABELS) if c not in frame.columns]
    if missing:
        raise DataError(f"{csv_path} lacks column(s) {missing}")
    rows = frame.to_dict("records")
    raw = np.stack([_parse_labels(r, str(csv_path), i) for i, r in enumerate(rows)]) if rows else np.zeros((0, 14))
    paths = [_chexpert_path(root, r["Path"]) for r in rows]
    uncertain = raw == -1
    labels = np.nan_to_num(raw, nan=0.0)
    labels[uncertain] = 1.0 if policy == "ones" else 0.0
    return paths, labels.astype(np.float32), ~(uncertain & (policy == "ignore"))


def _chexpert_path(root: Path, rel: str) -> Path:
    parts = Path(rel).parts
    return root.joinpath(*parts[1:]) if parts and parts[0].startswith("CheXpert-v1.0") else root / rel


def build_5x200(root: str | Path, seed: int = 114514, per_class: int = 200) -> dict[str, dict]:
    """The CheXpert 5x200 zero-shot set: ``per_class`` training images positive for exactly one of
    :data:`FIVE_CLASSES`, drawn with ``seed`` (the authors sampled with seeds 114514-114518). Keys are row indices
    of ``train.csv``; values ``{"image_path": <Path column>, "label": one-hot over the 5 classes}``."""
    root = Path(root)
    frame = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
    five = np.stack([frame[c].map(lambda v: v.strip() == "1.0" or v.strip() == "1").to_numpy() for c in FIVE_CLASSES],
                    axis=1)
    rng = np.random.default_rng(seed)
    out: dict[str, dict] = {}
    for k in range(5):
        candidates = np.nonzero(five[:, k] & (five.sum(1) == 1))[0]
        if len(candidates) < per_class:
            raise DataError(f"{root / 'train.csv'} has only {len(candidates)} images positive for exactly "
                            f"{FIVE_CLASSES[k]!r} among the five classes; need {per_class}")
        for idx in sorted(rng.choice(candidates, per_class, replace=False)):
            out[str(idx)] = {"image_path": frame.iloc[idx]["Path"], "label": [int(j == k) for j in range(5)]}
    return out


def read_5x200(json_path: str | Path, root: str | Path) -> tuple[list[Path], np.ndarray]:
    """The 5x200 json -> (image paths under the CheXpert root, class index ``(N,)``); a label that is not one-hot
    over 5 classes is an error naming its key."""
    json_path = Path(json_path)
    if not json_path.is_file():
        raise DataError(f"{json_path} not found: build it with prior.data.build_5x200 or use the official json")
    items = json.loads(json_path.read_text())
    paths, labels = [], []
    for key, item in items.items():
        label = np.asarray(item.get("label", []))
        if label.shape != (5,) or label.sum() != 1 or not np.isin(label, (0, 1)).all():
            raise DataError(f"{json_path} entry {key!r}: label {item.get('label')} must be one-hot over "
                            f"{list(FIVE_CLASSES)} (exactly one positive)")
        paths.append(_chexpert_path(Path(root), item["image_path"]))
        labels.append(int(label.argmax()))
    return paths, np.asarray(labels)


# --------------------------------------------------------------------------------------------- DICOM / RSNA / SIIM
def read_dicom(path: str | Path) -> np.ndarray:
    """DICOM -> ``(H, W)`` uint8 (min-max scaled when deeper than 8 bit, MONOCHROME1 inverted)."""
    import pydicom

    path = Path(path)
    if not path.is_file():
        raise DataError(f"DICOM file {path} not found")
    try:
        ds = pydicom.dcmread(path)
        arr = ds.pixel_array.astype(np.float32)
    except Exception as exc:  # pydicom raises many types for broken files
        raise DataError(f"cannot read DICOM {path} ({type(exc).__name__}: {exc}); the file is corrupt or "
                        f"truncated: re-download it") from exc
    if getattr(ds, "PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        arr = arr.max() - arr
    if arr.max() > 255 or ds.BitsStored > 8:
        arr = (arr - arr.min()) / max(float(arr.max() - arr.min()), 1e-6) * 255
    return arr.astype(np.uint8)


def _dicom_size(path: Path) -> tuple[int, int]:
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return int(ds.Rows), int(ds.Columns)
    except Exception as exc:
        raise DataError(f"cannot read DICOM header of {path} ({type(exc).__name__}: {exc}); re-download it") from exc


def read_rsna(root: str | Path) -> dict[str, list[tuple[float, float, float, float]]]:
    """``stage_2_train_labels.csv`` -> ``{patientId: [(x0, y0, x1, y1), ...]}`` ([] for Target 0); each box
    checked against its DICOM's size."""
    root = Path(root)
    frame = read_table(root, "stage_2_train_labels.csv", ["patientId", "x", "y", "width", "height", "Target"])
    out: dict[str, list] = {}
    sizes: dict[str, tuple[int, int]] = {}
    for i, r in enumerate(frame.itertuples(index=False)):
        pid = r.patientId
        out.setdefault(pid, [])
        if r.Target.strip() not in ("0", "1"):
            raise DataError(f"{root}/stage_2_train_labels.csv row {i + 2}: Target {r.Target!r} must be 0 or 1")
        if r.Target.strip() == "0":
            continue
        path = root / "stage_2_train_images" / f"{pid}.dcm"
        h, w = sizes.setdefault(pid, _dicom_size(path) if path.is_file() else (0, 0))
        if h == 0:
            raise DataError(f"image {path} of {root}/stage_2_train_labels.csv row {i + 2} not found")
        x, y, bw, bh = (float(v) for v in (r.x, r.y, r.width, r.height))
        if x < 0 or y < 0 or bw <= 0 or bh <= 0 or x + bw > w or y + bh > h:
            raise DataError(f"{root}/stage_2_train_labels.csv row {i + 2}: box x={x} y={y} w={bw} h={bh} lies "
                            f"outside its {w}x{h} image {path.name}")
        out[pid].append((x, y, x + bw, y + bh))
    for pid in out:
        if not (root / "stage_2_train_images" / f"{pid}.dcm").is_file():
            raise DataError(f"image {root / 'stage_2_train_images' / (pid + '.dcm')} listed in "
                            f"stage_2_train_labels.csv not found")
    return out


def rle_decode(rle: str, shape: tuple[int, int], source: str = "RLE") -> np.ndarray:
    """SIIM-ACR relative, column-major RLE -> boolean ``(H, W)`` mask; ``-1`` is empty; a run past the end of the
    image is an error."""
    rle = rle.strip()
    mask = np.zeros(shape[0] * shape[1], dtype=bool)
    if rle in ("-1", ""):
        return mask.reshape(shape[1], shape[0]).T
    try:
        nums = [int(v) for v in rle.split()]
    except ValueError as exc:
        raise DataError(f"{source}: EncodedPixels {rle[:40]!r}... is not a list of integers") from exc
    if len(nums) % 2:
        raise DataError(f"{source}: EncodedPixels has an odd number of values (start/length pairs expected)")
    pos = 0
    for start, length in zip(nums[::2], nums[1::2]):
        pos += start
        if pos + length > mask.size or start < 0 or length < 0:
            raise DataError(f"{source}: a run ends at pixel {pos + length}, past the end of the "
                            f"{shape[1]}x{shape[0]} image ({mask.size} pixels)")
        mask[pos : pos + length] = True
        pos += length
    return mask.reshape(shape[1], shape[0]).T


def read_siim(root: str | Path) -> dict[str, tuple[Path, list[str]]]:
    """``train-rle.csv`` -> ``{ImageId: (dicom path, [rle, ...])}`` (one RLE per instance; ``-1`` = none)."""
    root = Path(root)
    frame = read_table(root, "train-rle.csv", ["ImageId"])
    column = next((c for c in frame.columns if c.strip() == "EncodedPixels"), None)
    if column is None:
        raise DataError(f"{root}/train-rle.csv lacks the ' EncodedPixels' column")
    files = {p.stem: p for p in (root / "dicom-images-train").rglob("*.dcm")}
    out: dict[str, tuple[Path, list[str]]] = {}
    for i, r in enumerate(frame.to_dict("records")):
        uid = r["ImageId"].strip()
        if uid not in files:
            raise DataError(f"{root}/train-rle.csv row {i + 2}: no dicom-images-train/<study>/<series>/{uid}.dcm")
        out.setdefault(uid, (files[uid], []))[1].append(r[column])
    return out


def read_covidx(root: str | Path, part: str = "train") -> tuple[list[Path], np.ndarray]:
    """COVIDx ``<part>.txt`` ("patient_id filename label source") -> (paths under ``<part>/``, class index:
    0 COVID-19/positive, 1 pneumonia, 2 normal/negative)."""
    root = Path(root)
    path = root / f"{part}.txt"
    if not path.is_file():
        raise DataError(f"{path} not found: the COVIDx folder holds train.txt/test.txt and train/, test/")
    paths, labels = [], []
    for i, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) < 4 or fields[2].lower() not in COVIDX_LABELS:
            raise DataError(f"{path} line {i + 1}: {line!r} must read 'patient_id filename label source' with a label "
                            f"in {sorted(COVIDX_LABELS)}")
        paths.append(root / part / fields[1])
        labels.append(COVIDX_LABELS[fields[2].lower()])
    return paths, np.asarray(labels)


def read_object_cxr(root: str | Path, part: str = "train") -> list[tuple[Path, list[tuple[float, ...]]]]:
    """Object-CXR ``<part>.csv`` -> ``[(image path, [(x0, y0, x1, y1), ...])]``; ellipses and polygons become
    their bounding boxes; an unknown shape type is an error naming the row."""
    root = Path(root)
    frame = read_table(root, f"{part}.csv", ["image_name", "annotation"])
    out = []
    for i, r in enumerate(frame.itertuples(index=False)):
        boxes = []
        for item in filter(None, (a.strip() for a in str(r.annotation).split(";"))):
            nums = [float(v) for v in re.split(r"\s+", item)]
            kind, coords = int(nums[0]), nums[1:]
            if kind not in (0, 1, 2) or (kind in (0, 1) and len(coords) != 4) or (kind == 2 and len(coords) < 6):
                raise DataError(f"{root / (part + '.csv')} row {i + 2}: annotation {item!r} has unknown shape type "
                                f"{kind} or wrong coordinates (0 box / 1 ellipse: x1 y1 x2 y2; 2 polygon: x y ...)")
            xs, ys = coords[0::2], coords[1::2]
            boxes.append((min(xs), min(ys), max(xs), max(ys)))
        out.append((root / part / r.image_name, boxes))
    return out


# --------------------------------------------------------------------------------------------- images + datasets
def load_gray(path: str | Path) -> np.ndarray:
    """A grey uint8 ``(H, W)`` image from JPEG/PNG (``common.readers``) or DICOM."""
    path = Path(path)
    return read_dicom(path) if path.suffix.lower() == ".dcm" else read_image(path, mode="L")


def _to_tensor(image: np.ndarray, size: int, mean: float, std: float) -> torch.Tensor:
    if image.shape != (size, size):
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    return (torch.from_numpy(image.astype(np.float32) / 255.0)[None] - mean) / std


def _affine(image: np.ndarray, degrees: float, rng: np.random.Generator) -> np.ndarray:
    if degrees <= 0:
        return image
    h, w = image.shape
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(-degrees, degrees)), 1.0)
    return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)


class PretrainDataset(Dataset):
    """Image-report pairs: one frontal image of the study drawn per (seed, epoch, index), RandomAffine, a
    horizontal flip (``hflip``: ``swap`` exchanges left/right in the sentences, ``official`` flips the image
    only, ``off``), sentences shuffled per sample (official). Items: ``image`` ``(1, S, S)``, ``sentences``,
    ``index``, ``flipped``."""

    def __init__(self, studies: Sequence[MimicStudy], image_size: int, mean: float, std: float, *,
                 augment: bool = True, degrees: float = 5.0, hflip: str = "swap", hflip_p: float = 0.5,
                 shuffle_sentences: bool = True, seed: int = 0):
        self.studies = list(studies)
        self.image_size, self.mean, self.std = image_size, mean, std
        self.augment, self.degrees, self.hflip, self.hflip_p = augment, degrees, hflip, hflip_p
        self.shuffle_sentences = shuffle_sentences
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.studies)

    def __getitem__(self, index: int) -> dict:
        study = self.studies[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        path = study.images[int(rng.integers(len(study.images)))] if self.augment else study.images[0]
        image = load_gray(path)
        sentences = list(study.sentences)
        flipped = False
        if self.augment:
            image = _affine(image, self.degrees, rng)
            if self.hflip != "off" and rng.random() < self.hflip_p:
                image, flipped = np.ascontiguousarray(image[:, ::-1]), True
                if self.hflip == "swap":
                    sentences = [swap_left_right(s) for s in sentences]
        if self.shuffle_sentences and self.augment:
            sentences = [sentences[i] for i in rng.permutation(len(sentences))]
        return {"image": _to_tensor(image, self.image_size, self.mean, self.std), "sentences": sentences,
                "index": index, "flipped": flipped}


def collate_pretrain(items: list[dict]) -> dict:
    return {"image": torch.stack([it["image"] for it in items]), "sentences": [it["sentences"] for it in items],
            "index": torch.tensor([it["index"] for it in items]), "flipped": [it["flipped"] for it in items]}


class ImageDataset(Dataset):
    """Images with a target (class index, label vector, mask or boxes; anything a collate can stack) for the
    downstream tasks; ``(image (1, S, S), target, index)``."""

    def __init__(self, paths: Sequence[Path], targets: Sequence, image_size: int, mean: float, std: float):
        if len(paths) != len(targets):
            raise ValueError(f"{len(paths)} images but {len(targets)} targets")
        self.paths, self.targets = list(paths), list(targets)
        self.image_size, self.mean, self.std = image_size, mean, std

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        image = load_gray(self.paths[index])
        return _to_tensor(image, self.image_size, self.mean, self.std), self.targets[index], index
