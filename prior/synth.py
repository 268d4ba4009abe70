"""Synthetic chest radiographs with grounded reports, written in the published layouts of the six datasets PRIOR
uses (MIMIC-CXR-JPG + reports, CheXpert-v1.0-small, RSNA Pneumonia, SIIM-ACR Pneumothorax, COVIDx, Object-CXR).

Every study is drawn by one seeded generator: lungs, mediastinum, a heart on the image right (patient left), ribs,
noise and intensity jitter; findings sit in a zone (patient right = image left; R/L x upper/mid/lower) with exact
masks and boxes. Each present finding gets one report sentence naming its size and location (paraphrase
templates, never the zero-shot prompt "... is observed"), absent ones an optional negation, plus fillers and an
impression. Small low-contrast lesions appear beside large cues (cardiomegaly, effusion) that alone tell a batch's
pairs apart: only local alignment is pushed to find the small ones.

    python synth.py --out data/synthetic/prior [key=value ...]   (keys of data.synth)
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from common.config import apply_overrides, from_dict, to_dict
from common.datasets import ensure_dataset
from prior.settings import SynthConfig

__all__ = ["Finding", "Study", "FINDING_KINDS", "CHEXPERT_LABELS", "FIVE_CLASSES", "render_study", "write_all",
           "write_dicom", "rle_encode", "ensure_synthetic", "main"]

CHEXPERT_LABELS = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
                   "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
                   "Fracture", "Support Devices")
FIVE_CLASSES = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
FINDING_KINDS = ("consolidation", "atelectasis", "effusion", "cardiomegaly", "edema", "pneumothorax", "tube")
_LABEL_OF = {"consolidation": "Consolidation", "atelectasis": "Atelectasis", "effusion": "Pleural Effusion",
             "cardiomegaly": "Cardiomegaly", "edema": "Edema", "pneumothorax": "Pneumothorax",
             "tube": "Support Devices"}
_ZONES = ("upper", "mid", "lower")

_TEMPLATES = {
    "consolidation": ["There is a {size} {side} {zone} lobe consolidation.",
                      "{Size} consolidation is seen in the {side} {zone} zone.",
                      "Focal {size} opacity in the {side} {zone} lung, concerning for pneumonia.",
                      "The {side} {zone} lung shows a {size} area of consolidation."],
    "atelectasis": ["{Size} {side} {zone} zone atelectasis.",
                    "There is {size} linear atelectasis in the {side} {zone} lung.",
                    "Streaky opacity in the {side} {zone} zone likely represents atelectasis."],
    "effusion": ["{Size} {side} pleural effusion.",
                 "There is a {size} {side} pleural effusion at the costophrenic angle.",
                 "Blunting of the {side} costophrenic angle from a {size} effusion."],
    "cardiomegaly": ["{Size} cardiomegaly.", "The cardiac silhouette is {size}ly enlarged.",
                     "The heart size is {size}ly enlarged."],
    "edema": ["{Size} pulmonary edema with perihilar haziness.", "There is {size} bilateral interstitial edema.",
              "{Size} perihilar edema in both lungs."],
    "pneumothorax": ["{Size} {side} apical pneumothorax.", "There is a {size} {side} pneumothorax at the apex.",
                     "A {size} {side} apical pneumothorax is seen with a visible pleural line."],
    "tube": ["Endotracheal tube terminates above the carina.", "A nasogastric tube courses into the stomach."],
}
_NEGATIONS = {"consolidation": "No focal consolidation.", "atelectasis": "No atelectasis.",
              "effusion": "No pleural effusion.", "cardiomegaly": "Heart size is normal.",
              "edema": "No pulmonary edema.", "pneumothorax": "No pneumothorax."}
_FILLERS = ["The mediastinal contours are normal.", "Bony structures are intact.", "Soft tissues are unremarkable.",
            "The hilar contours are within normal limits.", "The lungs are well expanded."]


@dataclass
class Finding:
    """One finding: ``kind``, patient ``side`` (right = image left), ``zone``, ``size`` word, exact ``mask`` and
    ``box`` (x0, y0, x1, y1) in image pixels, the report ``sentence`` and whether it is ``uncertain``."""

    kind: str
    side: str
    zone: str
    size: str
    mask: np.ndarray
    box: tuple[int, int, int, int]
    sentence: str = ""
    uncertain: bool = False


@dataclass
class Study:
    image: np.ndarray
    findings: list[Finding]
    findings_text: list[str]
    impression: list[str]
    extras: list[dict] = field(default_factory=list)


# --------------------------------------------------------------------------------------------- image
def _lung_geometry(size: int) -> dict[str, tuple[float, float, float, float]]:
    """Lung ellipses (cy, cx, ay, ax) by patient side; patient right is on the image left."""
    return {"right": (0.52 * size, 0.31 * size, 0.33 * size, 0.15 * size),
            "left": (0.52 * size, 0.69 * size, 0.33 * size, 0.15 * size)}


def _ellipse(shape: tuple[int, int], cy: float, cx: float, ay: float, ax: float, angle: float = 0.0) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.ellipse(mask, (int(round(cx)), int(round(cy))), (max(int(round(ax)), 1), max(int(round(ay)), 1)), angle, 0,
                360, 1, -1)
    return mask.astype(bool)


def _base_image(rng: np.random.Generator, size: int, heart_scale: float) -> tuple[np.ndarray, dict]:
    shape = (size, size)
    img = np.full(shape, 0.55, np.float32) + rng.normal(0, 0.02)
    lungs = _lung_geometry(size)
    jitter = rng.normal(0, 0.01 * size, 2)
    lung_masks = {}
    for side, (cy, cx, ay, ax) in lungs.items():
        m = _ellipse(shape, cy + jitter[0], cx + jitter[1], ay, ax)
        lung_masks[side] = m
        img[m] = 0.25
    img[:, int(0.46 * size) : int(0.54 * size)] = 0.75  # mediastinum / spine
    hw = 0.11 * size * heart_scale
    heart = _ellipse(shape, 0.68 * size + jitter[0], 0.56 * size + jitter[1], 0.13 * size, hw, 10)
    img[heart] = 0.7
    for k in range(6):  # faint rib arcs
        y = int((0.25 + 0.1 * k) * size)
        for sign in (-1, 1):
            cx = int(size / 2 + sign * 0.2 * size)
            cv2.ellipse(img, (cx, y), (int(0.18 * size), int(0.05 * size)), 0, 180 if sign < 0 else 0,
                        360 if sign < 0 else 180, 0.36, max(1, size // 128))
    return img, {"lungs": lung_masks, "heart": heart}


def _zone_center(rng: np.random.Generator, size: int, side: str, zone: str) -> tuple[float, float]:
    cy, cx, ay, ax = _lung_geometry(size)[side]
    row = {"upper": cy - 0.55 * ay, "mid": cy, "lower": cy + 0.5 * ay}[zone]
    return row + rng.uniform(-0.08, 0.08) * ay, cx + rng.uniform(-0.3, 0.3) * ax


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _draw_finding(img: np.ndarray, kind: str, rng: np.random.Generator, contrast: float, anatomy: dict,
                  side: str, zone: str, atelectasis_height: float = 0.012) -> Finding:
    size = img.shape[0]
    shape = img.shape
    if kind == "consolidation":
        radius = rng.uniform(6, 12) * size / 128
        cy, cx = _zone_center(rng, size, side, zone)
        mask = _ellipse(shape, cy, cx, radius * rng.uniform(0.8, 1.2), radius * rng.uniform(0.8, 1.2))
        texture = rng.uniform(0.6, 1.0, shape).astype(np.float32)
        img[mask] += contrast * texture[mask]
        word = "small" if radius < 9 * size / 128 else "large"
    elif kind == "atelectasis":
        cy, cx = _zone_center(rng, size, side, zone)
        mask = _ellipse(shape, cy, cx, atelectasis_height * size, 0.1 * size, rng.uniform(-15, 15))
        img[mask] += 0.9 * contrast
        word = "mild"
    elif kind == "effusion":
        cy, cx, ay, ax = _lung_geometry(size)[side]
        height = rng.uniform(0.15, 0.3) * ay
        mask = anatomy["lungs"][side] & (np.arange(size)[:, None] > cy + ay - 2 * height)
        img[mask] = 0.62
        word, zone = ("small" if height < 0.22 * ay else "large"), "lower"
    elif kind == "cardiomegaly":
        mask = anatomy["heart"]
        word, side, zone = "moderate", "central", "lower"
    elif kind == "edema":
        mask = np.zeros(shape, bool)
        for s in ("right", "left"):
            cy, cx, ay, ax = _lung_geometry(size)[s]
            mask |= _ellipse(shape, cy - 0.1 * ay, cx + (0.35 if s == "right" else -0.35) * ax, 0.45 * ay, 0.55 * ax)
        mask &= anatomy["lungs"]["right"] | anatomy["lungs"]["left"]
        img[mask] += 0.6 * contrast * rng.uniform(0.7, 1.0, shape).astype(np.float32)[mask]
        word, side, zone = "mild", "bilateral", "mid"
    elif kind == "pneumothorax":
        cy, cx, ay, ax = _lung_geometry(size)[side]
        mask = anatomy["lungs"][side] & (np.arange(size)[:, None] < cy - 0.45 * ay)
        img[mask] = 0.08
        word, zone = "small", "upper"
    else:  # tube
        mask = np.zeros(shape, np.uint8)
        x = int(0.5 * size + rng.uniform(-0.02, 0.02) * size)
        cv2.line(mask, (x, 0), (x + int(rng.uniform(-0.03, 0.03) * size), int(0.45 * size)), 1, max(1, size // 100))
        mask = mask.astype(bool)
        img[mask] = 0.95
        word, side, zone = "", "midline", "upper"
    return Finding(kind, side, zone, word, mask, _box(mask))


def _sentence(finding: Finding, rng: np.random.Generator) -> str:
    template = _TEMPLATES[finding.kind][rng.integers(len(_TEMPLATES[finding.kind]))]
    text = template.format(size=finding.size, Size=finding.size.capitalize(), side=finding.side, zone=finding.zone)
    return " ".join(text.split())


def render_study(rng: np.random.Generator, size: int = 256, *, kinds: Sequence[str] | None = None,
                 n_findings: tuple[int, int] = (2, 4), contrast: float = 0.22, uncertain_p: float = 0.1,
                 atelectasis_height: float = 0.012) -> Study:
    """One radiograph and its report. ``kinds`` fixes the findings (else 2-4 drawn; cardiomegaly/effusion often
    present as large cues); an uncertain consolidation ("Possible ...") has a fainter lesion and label -1.
    ``atelectasis_height``: half-height of the atelectasis band as a fraction of the image side."""
    if kinds is None:
        n = int(rng.integers(n_findings[0], n_findings[1] + 1))
        p = np.array([0.3, 0.12, 0.18, 0.16, 0.08, 0.08, 0.08])
        kinds = [str(k) for k in rng.choice(FINDING_KINDS, size=min(n, len(FINDING_KINDS)), replace=False, p=p)]
        if rng.random() < 0.25:
            kinds = [k for k in kinds if k != "tube"] + ["consolidation"]
    img, anatomy = _base_image(rng, size, 1.45 if "cardiomegaly" in kinds else rng.uniform(0.9, 1.05))
    findings, used = [], set()
    for kind in kinds:
        for _ in range(10):
            side, zone = str(rng.choice(["right", "left"])), str(rng.choice(_ZONES))
            if kind != "consolidation" or (side, zone) not in used:
                break
        used.add((side, zone))
        uncertain = kind == "consolidation" and rng.random() < uncertain_p
        f = _draw_finding(img, kind, rng, contrast * (0.5 if uncertain else 1.0), anatomy, side, zone,
                          atelectasis_height)
        f.uncertain = uncertain
        f.sentence = (f"Possible {f.side} {f.zone} zone consolidation." if uncertain else _sentence(f, rng))
        findings.append(f)
    present = {f.kind for f in findings}
    negs = [s for k, s in _NEGATIONS.items() if k not in present and rng.random() < 0.5]
    fillers = [str(x) for x in rng.choice(_FILLERS, size=int(rng.integers(1, 3)), replace=False)]
    sentences = [f.sentence for f in findings] + negs + fillers
    sentences = [sentences[i] for i in rng.permutation(len(sentences))]
    names = [f"{f.side} {f.kind}" if f.side in ("right", "left") else f.kind for f in findings if not f.uncertain]
    impression = [f"{', '.join(names).capitalize()}." if names else "No acute cardiopulmonary process."]
    img = cv2.GaussianBlur(img, (0, 0), 0.6 * size / 128)
    img = img * rng.uniform(0.9, 1.1) + rng.uniform(-0.05, 0.05) + rng.normal(0, 0.03, img.shape)
    return Study(np.clip(img * 255, 0, 255).astype(np.uint8), findings, sentences, impression)


def labels_of(findings: Sequence[Finding]) -> dict[str, float]:
    """CheXpert-style labels (1, -1 uncertain; absent labels are 0 for negated ones, blank otherwise)."""
    out: dict[str, float] = {}
    for f in findings:
        name = _LABEL_OF[f.kind]
        out[name] = max(out.get(name, -1.0), -1.0 if f.uncertain else 1.0)
        if f.kind in ("consolidation", "atelectasis", "edema"):
            out["Lung Opacity"] = max(out.get("Lung Opacity", -1.0), -1.0 if f.uncertain else 1.0)
    if not any(v == 1.0 for k, v in out.items() if k != "Support Devices"):
        out["No Finding"] = 1.0
    return out


# --------------------------------------------------------------------------------------------- writers
def _write_jpg(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 95]):
        raise OSError(f"could not write {path}")


def write_dicom(path: Path, image: np.ndarray, patient_id: str, sop_uid: str | None = None) -> None:
    """A minimal MONOCHROME2 8-bit DICOM file (pydicom) holding ``image``."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.Modality, ds.ViewPosition = patient_id, "CR", "PA"
    ds.Rows, ds.Columns = image.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.ascontiguousarray(image, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def rle_encode(mask: np.ndarray) -> str:
    """SIIM-ACR run-length encoding: column-major pixel order, pairs of (start relative to the end of the previous
    run, length); ``-1`` for an empty mask."""
    flat = mask.T.flatten().astype(np.uint8)
    if not flat.any():
        return "-1"
    padded = np.concatenate([[0], flat, [0]])
    edges = np.nonzero(np.diff(padded))[0]
    starts, ends = edges[::2], edges[1::2]
    out, prev = [], 0
    for s, e in zip(starts, ends):
        out += [int(s - prev), int(e - s)]
        prev = e
    return " ".join(map(str, out))


def _gz_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence]) -> None:
    with gzip.open(path, "wt", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _report_text(study: Study) -> str:
    return ("                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n\n INDICATION:  "
            "Cough.\n\n FINDINGS: \n\n " + " ".join(study.findings_text) + "\n\n IMPRESSION: \n\n "
            + " ".join(study.impression) + "\n")


def _style(cfg: SynthConfig) -> dict:
    return {"contrast": cfg.lesion_contrast, "atelectasis_height": cfg.atelectasis_height}


def write_mimic(root: Path, cfg: SynthConfig, rng: np.random.Generator) -> None:
    """MIMIC-CXR-JPG 2.0.0 + reports: ``files/p1X/p1XXXXXXX/sXXXXXXXX/<dicom_id>.jpg``, ``sXXXXXXXX.txt``, the
    metadata / split / chexpert CSVs (gzip), plus ``synthetic-findings.csv`` (boxes of every finding sentence)."""
    meta, split, chex, boxes = [], [], [], []
    n = cfg.n_studies
    for i in range(n):
        subject, study_id = 10000000 + i // 2, 50000000 + i
        folder = root / "files" / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study_id}"
        short = i % 25 == 7  # a report with too few sentences, excluded by the reader
        study = render_study(rng, cfg.size, n_findings=tuple(cfg.findings_per_study),
                             **_style(cfg))
        if short:
            study.findings_text, study.impression = study.findings_text[:1], study.impression
        part = "test" if i % 10 == 0 else ("validate" if i % 10 == 1 else "train")
        views = [("PA" if i % 2 else "AP", study.image)]
        if i % 4 == 0:
            views.append(("LATERAL", np.ascontiguousarray(study.image.T)))
        if i % 9 == 0:
            views.append(("PA", study.image))  # a second frontal of the same study
        for v, (view, image) in enumerate(views):
            dicom_id = f"{study_id:08d}-{v:02d}{i:04d}"
            _write_jpg(folder / f"{dicom_id}.jpg", image)
            meta.append([dicom_id, subject, study_id, "", view, image.shape[0], image.shape[1]])
            split.append([dicom_id, study_id, subject, part])
            if v == 0:
                for f in study.findings:
                    boxes.append([dicom_id, study_id, f.kind, f.side, f.zone, f.sentence, *f.box])
        (folder.parent / f"s{study_id}.txt").write_text(_report_text(study))
        labels = labels_of(study.findings)
        chex.append([subject, study_id, *[_fmt_label(labels.get(c)) for c in CHEXPERT_LABELS]])
    _gz_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", ["dicom_id", "subject_id", "study_id",
            "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns"], meta)
    _gz_csv(root / "mimic-cxr-2.0.0-split.csv.gz", ["dicom_id", "study_id", "subject_id", "split"], split)
    _gz_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", ["subject_id", "study_id", *CHEXPERT_LABELS], chex)
    with (root / "synthetic-findings.csv").open("w", newline="") as handle:
        w = csv.writer(handle)
        w.writerow(["dicom_id", "study_id", "finding", "side", "zone", "sentence", "x0", "y0", "x1", "y1"])
        w.writerows(boxes)


def _fmt_label(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def write_chexpert(root: Path, cfg: SynthConfig, rng: np.random.Generator) -> None:
    """CheXpert-v1.0-small ``train.csv``/``valid.csv`` + ``train/patientXXXXX/studyN/view1_frontal.jpg``; the
    first ``5 x n_5x200_per_class`` training studies carry exactly one of the five zero-shot classes."""
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS]
    five_kinds = ["atelectasis", "cardiomegaly", "consolidation", "edema", "effusion"]
    rows = {"train": [], "valid": []}
    for i in range(cfg.n_chexpert):
        part = "valid" if i % 10 == 9 else "train"
        if i < 5 * cfg.n_5x200_per_class:
            kinds = [five_kinds[i % 5]] + (["tube"] if rng.random() < 0.3 else [])
            study = render_study(rng, cfg.size, kinds=kinds, **_style(cfg), uncertain_p=0.0)
            part = "train"
        else:
            study = render_study(rng, cfg.size, n_findings=(0, 3), **_style(cfg))
        rel = f"CheXpert-v1.0-small/{part}/patient{i + 1:05d}/study1/view1_frontal.jpg"
        _write_jpg(root / rel.split("/", 1)[1], study.image)
        labels = labels_of(study.findings)
        rows[part].append([rel, "Female" if i % 2 else "Male", 40 + i % 40, "Frontal", "PA",
                           *[_fmt_label(labels.get(c)) for c in CHEXPERT_LABELS]])
    for part, table in rows.items():
        with (root / f"{part}.csv").open("w", newline="") as handle:
            w = csv.writer(handle)
            w.writerow(header)
            w.writerows(table)


def write_rsna(root: Path, cfg: SynthConfig, rng: np.random.Generator) -> None:
    """RSNA Pneumonia: ``stage_2_train_images/<patientId>.dcm``, ``stage_2_train_labels.csv`` (a row per box;
    Target 0 with empty box for normals) and ``stage_2_detailed_class_info.csv``."""
    labels, classes = [], []
    for i in range(cfg.n_rsna):
        pid = f"{i:08x}-rsna-{i:04d}"
        lesion = i % 2 == 0
        kinds = ["consolidation"] * (1 + int(rng.random() < 0.3)) if lesion else []
        if rng.random() < 0.4:
            kinds.append(str(rng.choice(["cardiomegaly", "effusion", "tube"])))
        study = render_study(rng, cfg.size, kinds=kinds, **_style(cfg), uncertain_p=0.0)
        write_dicom(root / "stage_2_train_images" / f"{pid}.dcm", study.image, pid)
        boxes = [f.box for f in study.findings if f.kind == "consolidation"]
        for x0, y0, x1, y1 in boxes:
            labels.append([pid, x0, y0, x1 - x0, y1 - y0, 1])
        if not boxes:
            labels.append([pid, "", "", "", "", 0])
        classes.append([pid, "Lung Opacity" if boxes else "Normal"])
    _csv(root / "stage_2_train_labels.csv", ["patientId", "x", "y", "width", "height", "Target"], labels)
    _csv(root / "stage_2_detailed_class_info.csv", ["patientId", "class"], classes)


def write_siim(root: Path, cfg: SynthConfig, rng: np.random.Generator) -> None:
    """SIIM-ACR: ``dicom-images-train/<study>/<series>/<uid>.dcm`` and ``train-rle.csv`` (one row per instance)."""
    rows = []
    for i in range(cfg.n_siim):
        uid = f"1.2.276.0.7230010.3.1.4.{8323329 + i}.1517875{i:06d}"
        kinds = ["pneumothorax"] if i % 2 == 0 else []
        study = render_study(rng, cfg.size, kinds=kinds + (["tube"] if rng.random() < 0.3 else []),
                             **_style(cfg), uncertain_p=0.0)
        write_dicom(root / "dicom-images-train" / f"{uid}.2" / f"{uid}.3" / f"{uid}.dcm", study.image, f"p{i}", uid)
        masks = [f.mask for f in study.findings if f.kind == "pneumothorax"]
        rows += [[uid, " " + rle_encode(m)] for m in masks] or [[uid, " -1"]]
    _csv(root / "train-rle.csv", ["ImageId", " EncodedPixels"], rows)


def write_covidx(root: Path, cfg: SynthConfig, rng: np.random.Generator) -> None:
    """COVIDx: ``train.txt``/``test.txt`` lines "patient_id filename label source" and images in ``train/``,
    ``test/``; COVID-19 = bilateral peripheral opacities, pneumonia = one consolidation, normal."""
    lines = {"train": [], "test": []}
    for i in range(cfg.n_covidx):
        part = "test" if i % 5 == 0 else "train"
        label = ("COVID-19", "pneumonia", "normal")[i % 3]
        kinds = {"COVID-19": ["edema", "consolidation"], "pneumonia": ["consolidation"], "normal": []}[label]
        study = render_study(rng, cfg.size, kinds=kinds, **_style(cfg), uncertain_p=0.0)
        name = f"synth-{i:05d}.png"
        path = root / part / name
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), study.image)
        lines[part].append(f"{i} {name} {label} synthetic")
    for part, rows in lines.items():
        (root / f"{part}.txt").write_text("\n".join(rows) + "\n")


def write_object_cxr(root: Path, cfg: SynthConfig, rng: np.random.Generator) -> None:
    """Object-CXR: ``train.csv``/``dev.csv`` (image_name, annotation: ';'-separated "type x1 y1 x2 y2 ..." with
    0 box, 1 ellipse, 2 polygon) and images in ``train/``, ``dev/``."""
    tables = {"train": [], "dev": []}
    for i in range(cfg.n_object_cxr):
        part = "dev" if i % 5 == 0 else "train"
        study = render_study(rng, cfg.size, n_findings=(0, 2), **_style(cfg))
        img, annotations = study.image.copy(), []
        for _ in range(int(rng.integers(1, 3)) if i % 2 == 0 else 0):
            shape = int(rng.integers(3))
            cx, cy, r = (int(v) for v in (rng.uniform(0.2, 0.8) * cfg.size, rng.uniform(0.2, 0.8) * cfg.size,
                                          rng.uniform(0.02, 0.05) * cfg.size))
            if shape == 0:
                cv2.rectangle(img, (cx - r, cy - r), (cx + r, cy + r), 250, -1)
                annotations.append(f"0 {cx - r} {cy - r} {cx + r} {cy + r}")
            elif shape == 1:
                cv2.ellipse(img, (cx, cy), (r, r // 2 + 1), 0, 0, 360, 250, -1)
                annotations.append(f"1 {cx - r} {cy - r // 2 - 1} {cx + r} {cy + r // 2 + 1}")
            else:
                pts = np.array([[cx, cy - r], [cx + r, cy + r], [cx - r, cy + r]])
                cv2.fillPoly(img, [pts], 250)
                annotations.append("2 " + " ".join(str(int(v)) for v in pts.flatten()))
        _write_jpg(root / part / f"{i:05d}.jpg", img)
        tables[part].append([f"{i:05d}.jpg", ";".join(annotations)])
    for part, rows in tables.items():
        _csv(root / f"{part}.csv", ["image_name", "annotation"], rows)


def _csv(path: Path, header: Sequence[str], rows: Sequence[Sequence]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        w = csv.writer(handle)
        w.writerow(header)
        w.writerows(rows)


DATASET_DIRS = {"mimic": "mimic-cxr-jpg", "chexpert": "CheXpert-v1.0-small", "rsna": "rsna-pneumonia",
                "siim": "siim-acr-pneumothorax", "covidx": "covidx", "object_cxr": "object-cxr"}


def write_all(root: Path, cfg: SynthConfig) -> None:
    """All six datasets under ``root`` (one sub-folder each, see :data:`DATASET_DIRS`), one seed per dataset."""
    writers = {"mimic": write_mimic, "chexpert": write_chexpert, "rsna": write_rsna, "siim": write_siim,
               "covidx": write_covidx, "object_cxr": write_object_cxr}
    for k, (name, writer) in enumerate(writers.items()):
        folder = root / DATASET_DIRS[name]
        folder.mkdir(parents=True, exist_ok=True)
        writer(folder, cfg, np.random.default_rng([cfg.seed, k]))
    (root / "README.txt").write_text("Synthetic PRIOR data written by prior/synth.py; parameters in the stamp.\n")


def ensure_synthetic(root: str | Path, cfg: SynthConfig) -> Path:
    """Generate the synthetic set into ``root`` once (``common.datasets.ensure_dataset`` rules)."""
    stamp = to_dict(cfg)
    if stamp.get("atelectasis_height") == 0.012:  # the value of sets written before the option existed
        del stamp["atelectasis_height"]
    return ensure_dataset(root, {"generator": "prior.synth/1", **stamp}, lambda out: write_all(out, cfg),
                          what="synthetic PRIOR dataset")


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description="Write the synthetic PRIOR datasets (six published layouts)")
    parser.add_argument("--out", default="data/synthetic/prior")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="SynthConfig fields, e.g. n_studies=100")
    args = parser.parse_args(argv)
    cfg = from_dict(SynthConfig, apply_overrides({}, args.overrides))
    from common.rundir import resolve_path

    path = ensure_synthetic(resolve_path(args.out), cfg)
    print(f"synthetic PRIOR data in {path}")
    print(json.dumps(to_dict(cfg)))
    return path


if __name__ == "__main__":
    main()
