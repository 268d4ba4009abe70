"""Evaluation of a pre-trained PRIOR on the zero-shot tasks: CheXpert 5x200 zero-shot classification, image ->
MIMIC test report retrieval, and (where the data carries lesion boxes, as the synthetic set does) the pointing
game of sentence->patch attention and prototype statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from prior.data import FIVE_CLASSES, ImageDataset
from prior.downstream import (
    located_prompts,
    pointing_game,
    prototype_stats,
    report_reconstruction_f1,
    retrieval,
    retrieval_metrics,
    retrieval_scores,
    zeroshot,
)
from prior.figures import attention_overlays, prototype_usage, reconstructions, retrieval_examples
from prior.models.prior import PRIOR
from prior.pipeline import PretrainData, retrieval_reports, retrieval_studies, zeroshot_set
from prior.settings import Config

__all__ = ["evaluate_pretrained", "grounding_cases", "test_findings", "grounding_metrics", "test_images",
           "report_metrics", "LOCALIZED"]

LOCALIZED = ("consolidation", "atelectasis", "effusion", "pneumothorax")


def _loader(cfg: Config, paths, labels) -> DataLoader:
    ds = ImageDataset(paths, list(labels), cfg.data.image_size, cfg.data.mean, cfg.data.std)
    return DataLoader(ds, batch_size=32, shuffle=False, num_workers=cfg.data.num_workers)


def _stacked_images(cfg: Config, paths) -> torch.Tensor:
    """``(N, 1, S, S)``: the images at ``paths``, preprocessed as for evaluation."""
    ds = ImageDataset(list(paths), [0] * len(paths), cfg.data.image_size, cfg.data.mean, cfg.data.std)
    return torch.stack([ds[i][0] for i in range(len(ds))])


def test_findings(data: PretrainData) -> pd.DataFrame | None:
    """Rows of ``synthetic-findings.csv`` (absent for real MIMIC-CXR: None) of the test studies' first images."""
    table = data.root / "synthetic-findings.csv"
    if not table.is_file():
        return None
    frame = pd.read_csv(table, dtype={"dicom_id": str, "study_id": str})
    test_ids = {d for s in data.test for d in s.dicom_ids[:1]}
    return frame[frame["dicom_id"].isin(test_ids)]


def grounding_cases(cfg: Config, data: PretrainData, limit: int = 200, findings: pd.DataFrame | None = None
                    ) -> tuple[torch.Tensor, list[str], list[tuple[float, ...]]] | None:
    """The pointing-game cases of the test studies (``synthetic-findings.csv``, or its test rows ``findings``
    already read; None without it or without localised findings): images ``(N, 1, H, W)``, finding sentences,
    boxes in pixels of the input size."""
    findings = test_findings(data) if findings is None else findings
    if findings is None:
        return None
    rows = findings[findings["finding"].isin(LOCALIZED)].head(limit)
    if not len(rows):
        return None
    by_id = {d: p for s in data.test for d, p in zip(s.dicom_ids, s.images)}
    scale = cfg.data.image_size / cfg.data.synth.size
    images = _stacked_images(cfg, [by_id[d] for d in rows["dicom_id"]])
    boxes = [tuple(v * scale for v in (r.x0, r.y0, r.x1, r.y1)) for r in rows.itertuples(index=False)]
    return images, list(rows["sentence"]), boxes


def grounding_metrics(cfg: Config, model: PRIOR, data: PretrainData, device: torch.device,
                      limit: int = 200, quantize: bool = True, other: str | None = None,
                      figures: Path | None = None) -> dict[str, float]:
    """Pointing game and prototype statistics from ``synthetic-findings.csv`` (absent for real MIMIC-CXR);
    ``quantize``: sentences through the SPB (official); ``other`` (a name): also the pointing game with the
    opposite choice, as ``pointing_game_<other>``; with ``figures`` (a folder) also the attention overlays of the
    same cases."""
    findings = test_findings(data)
    if findings is None:
        return {}
    out: dict[str, float] = {}
    grounding = grounding_cases(cfg, data, limit, findings)
    if grounding is not None:
        stacked, sentences, boxes = grounding
        out["pointing_game"] = pointing_game(model, stacked, sentences, boxes, cfg.data.image_size, device,
                                             quantize)
        if other is not None:
            out[f"pointing_game_{other}"] = pointing_game(model, stacked, sentences, boxes, cfg.data.image_size,
                                                          device, not quantize)
        if figures is not None and model.losses["local"]:
            attention_overlays(model, stacked, sentences, boxes, cfg.data.image_size, device,
                               figures / "attention_overlays.png", quantize=quantize)
    all_rows = findings.head(4 * limit)
    if model.losses["spb"] and len(all_rows):
        ids = pd.factorize(all_rows["finding"])[0]
        out |= prototype_stats(model, list(all_rows["sentence"]), ids)
    return out


def test_images(cfg: Config, data: PretrainData, limit: int = 200) -> tuple[torch.Tensor, list[list[str]]]:
    """The first image and the report sentences of up to ``limit`` test studies."""
    studies = data.test[:limit]
    return _stacked_images(cfg, [s.images[0] for s in studies]), [list(s.sentences) for s in studies]


def report_metrics(cfg: Config, model: PRIOR, data: PretrainData, device: torch.device,
                   figures: Path | None = None) -> dict[str, float]:
    """``report_rec_f1`` of a model with the report decoder (:func:`report_reconstruction_f1`, test studies);
    with ``figures`` also the reconstruction figure of a model with the image decoder."""
    out: dict[str, float] = {}
    score = model.losses["report_rec"] and model.losses["spb"]
    draw = figures is not None and model.losses["image_rec"]
    if not data.test or not (score or draw):
        return out
    images, reports = test_images(cfg, data)
    if score:
        out["report_rec_f1"] = report_reconstruction_f1(model, images, reports, device)
    if draw:
        reconstructions(model, images, reports, device, figures / "reconstructions.png")
    return out


def evaluate_pretrained(cfg: Config, model: PRIOR, data: PretrainData, device: torch.device,
                        figures: Path | None = None) -> tuple[dict[str, float], list[dict]]:
    """Zero-shot, retrieval, grounding and report-reconstruction metrics; per-case rows hold each 5x200 image's
    prediction; with ``figures`` (a folder) the figures of ``prior/figures.py``."""
    model.eval()
    paths, labels = zeroshot_set(cfg)
    loader = _loader(cfg, paths, labels)
    quantize = cfg.eval.text_embedding == "prototype"
    other = ("raw" if quantize else "prototype") if cfg.eval.log_both_embeddings and model.losses["spb"] else None
    summary, probs = zeroshot(model, loader, labels, list(FIVE_CLASSES), device, cfg.eval.prompt,
                              cfg.eval.local_weight, quantize=quantize)
    if other is not None:
        alt, _ = zeroshot(model, loader, labels, list(FIVE_CLASSES), device, cfg.eval.prompt, cfg.eval.local_weight,
                          quantize=not quantize)
        summary |= {k.replace("zeroshot_", f"zeroshot_{other}_"): v for k, v in alt.items()}
    if cfg.eval.located_prompts:
        located, _ = zeroshot(model, loader, labels, list(FIVE_CLASSES), device, local_weight=cfg.eval.local_weight,
                              prompt_sets=located_prompts(), quantize=quantize)
        summary |= {f"{k.replace('zeroshot_', 'zeroshot_located_')}": v for k, v in located.items()}
    try:
        reports, report_labels = retrieval_reports(retrieval_studies(cfg, data))
        scores = retrieval_scores(model, loader, reports, device, cfg.eval.local_weight, quantize)
        summary |= retrieval_metrics(scores, labels, report_labels)
        if figures is not None:
            first = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)][:4]
            retrieval_examples(torch.stack([loader.dataset[i][0] for i in first]),
                               [FIVE_CLASSES[int(labels[i])] for i in first], scores[first], reports,
                               [FIVE_CLASSES[int(c)] for c in report_labels], figures / "retrieval_examples.png")
        if other is not None:
            alt = retrieval(model, loader, labels, reports, report_labels, device, cfg.eval.local_weight,
                            not quantize)
            summary |= {k.replace("retrieval_", f"retrieval_{other}_"): v for k, v in alt.items()}
    except ValueError as exc:  # a test split too small to hold single-class reports (tiny configs)
        print(f"retrieval skipped: {exc}")
        summary |= {f"retrieval_p_at_{k}": float("nan") for k in (1, 5, 10)}
    summary |= grounding_metrics(cfg, model, data, device, quantize=quantize, other=other, figures=figures)
    summary |= report_metrics(cfg, model, data, device, figures)
    if figures is not None and model.losses["spb"] and data.test:
        prototype_usage(model, [t for s in data.test for t in s.sentences], figures / "prototype_usage.png")
    per_case = [{"image": str(p), "label": FIVE_CLASSES[int(y)], "prediction": FIVE_CLASSES[int(np.argmax(q))]}
                for p, y, q in zip(paths, labels, probs)]
    return summary, per_case
