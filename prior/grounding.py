"""Why does the local alignment not ground lesion sentences? [ours, a diagnostic, not part of the paper]

Measurements on the test studies of a synthetic draw (``synthetic-findings.csv``: one row per finding sentence with
its box) and a pre-trained PRIOR, each answering one question:

- ``location_agreement``: does the report name the lesion's location? The share of the zone-specific findings
  (consolidation, atelectasis) whose sentence names the side and zone in which the box centre lies (patient right
  = image left; zones split halfway between the generator's zone rows).
- ``cells_per_box`` / ``box_cell_cover`` and ``pixel_cell_auc``: is the lesion visible at the token grid? The mean
  number of grid cells a consolidation box overlaps, the mean share of an overlapped cell the box covers, and the
  held-out AUC of a logistic regression telling lesion cells from the other lung cells from the cell's raw pixels
  (the best a token could do from its own cell; images split in halves).
- ``token_cell_auc``: do the trained patch tokens carry the lesion? The same probe on the projected patch tokens.
- ``att_cell_auc`` / ``pg_argmin``: does the sentence->patch attention rank the lesion cells high (AUC of the
  map's values, lesion cells vs the rest, mean over sentences; 0.5 = no information, < 0.5 = it avoids them), and
  does its minimum fall on the lesion?
- ``att_image_corr``: does the map depend on the image? Mean correlation between a sentence's map on its own
  image and on another test image (1 = a fixed spatial pattern per sentence, the image is ignored).
- ``local_text_matched`` / ``local_text_shuffled`` (``shuffled_local_losses``): does the intra-report sentence
  loss need the image? The sentence-side local loss (and ``local_image_*`` the patch-side one) of the test studies
  with their own images and with the images rolled by one study (a loss as low with a wrong image is solved
  without reading it).
- ``loc_code_share`` / ``loc_code_nmi`` / ``side_decode_acc`` / ``cos_*``: can the text side tell the lesion's
  location? Among consolidation sentences: the share of pairs at different sites that get the same SPB code, the
  NMI of code vs site, the 4-fold accuracy of a logistic regression (C 10) reading the side (chance 0.5) and the
  site (chance 1/6) from the projected, unquantised sentence embedding and (``*_encoder``) from the text encoder's
  features before the projection, and the mean cosine of the projected embeddings for pairs of the same finding
  at the same site, at a different site, and of a different finding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import normalized_mutual_info_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_score

from prior.downstream import box_cells
from prior.models.prior import PRIOR

__all__ = ["shuffled_local_losses", "zone_of_point", "LesionCases", "location_agreement", "cell_visibility",
           "probe_cells", "attention_lesion_stats", "text_location_stats", "lesion_grounding"]

ZONED = ("consolidation", "atelectasis")


def zone_of_point(x: float, y: float, size: int) -> tuple[str, str]:
    """Patient side and lung zone of image point ``(x, y)`` (pixels of a ``size`` generator image): patient right =
    image left; zones split halfway between the rows the generator draws them at (both lungs centred at 0.52 x
    size with half-height 0.33 x size; zone rows at -0.55, 0 and +0.5 half-heights, ``synth.py``)."""
    side = "right" if x < size / 2 else "left"
    cy, ay = 0.52 * size, 0.33 * size
    zone = "upper" if y < cy - 0.275 * ay else ("mid" if y < cy + 0.25 * ay else "lower")
    return side, zone


@dataclass
class LesionCases:
    """Finding rows of the test images: ``images`` ``(N, 1, S, S)`` (one per row), ``rows`` the frame (``finding``,
    ``side``, ``zone``, ``sentence``, ``dicom_id``), ``boxes`` in input pixels, ``synth_size`` the generator's
    image side."""

    images: torch.Tensor
    rows: pd.DataFrame
    boxes: list[tuple[float, ...]]
    synth_size: int


def location_agreement(rows: pd.DataFrame, synth_size: int) -> dict[str, float]:
    """Share of zone-specific findings whose sentence names the side and zone of the box centre (pixels of the
    generator's images)."""
    zoned = rows[rows["finding"].isin(ZONED) & ~rows["sentence"].str.startswith("Possible")]
    if not len(zoned):
        return {}
    hits_side, hits_zone = [], []
    for r in zoned.itertuples(index=False):
        side, zone = zone_of_point(0.5 * (r.x0 + r.x1), 0.5 * (r.y0 + r.y1), synth_size)
        words = set(re.findall(r"[a-z]+", r.sentence.lower()))
        hits_side.append(side in words and ({"right", "left"} - {side}).isdisjoint(words))
        hits_zone.append(zone in words)
    return {"location_side_agree": float(np.mean(hits_side)), "location_zone_agree": float(np.mean(hits_zone)),
            "location_n": float(len(zoned))}


def _lesion_labels(cases: LesionCases, grid: int, image_size: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Per unique image of ``kind``: index of its first row and ``(grid*grid,)`` labels = union of its boxes."""
    sel = cases.rows.reset_index(drop=True)
    cells = box_cells(cases.boxes, grid, image_size)
    first, labels = [], []
    for _, group in sel[sel["finding"] == kind].groupby("dicom_id", sort=True):
        first.append(group.index[0])
        labels.append(cells[group.index].any(0))
    return np.asarray(first, dtype=int), np.asarray(labels)


def probe_cells(features: np.ndarray, labels: np.ndarray) -> float:
    """Held-out AUC of a logistic regression on per-cell ``features`` ``(N, P, F)`` for ``labels`` ``(N, P)``;
    the first half of the images trains, the second tests."""
    n = features.shape[0]
    half = n // 2
    if half < 2:
        return float("nan")
    x = features.reshape(n * features.shape[1], -1)
    y = labels.reshape(-1)
    split = half * features.shape[1]
    if y[:split].all() or not y[:split].any() or y[split:].all() or not y[split:].any():
        return float("nan")
    clf = LogisticRegression(max_iter=2000, C=1.0).fit(x[:split], y[:split])
    return float(roc_auc_score(y[split:], clf.decision_function(x[split:])))


def cell_visibility(cases: LesionCases, grid: int, image_size: int, kind: str = "consolidation") -> dict[str, float]:
    """Box size in grid cells and the pixel-cell probe of ``kind``."""
    first, labels = _lesion_labels(cases, grid, image_size, kind)
    if not len(first):
        return {}
    cell = image_size / grid
    covers, counts = [], []
    for k in np.flatnonzero(cases.rows["finding"].to_numpy() == kind):
        x0, y0, x1, y1 = cases.boxes[k]
        row = box_cells([cases.boxes[k]], grid, image_size)[0]
        counts.append(row.sum())
        for idx in np.flatnonzero(row):
            r, c = divmod(int(idx), grid)
            w = min(x1, (c + 1) * cell) - max(x0, c * cell)
            h = min(y1, (r + 1) * cell) - max(y0, r * cell)
            covers.append(max(w, 0) * max(h, 0) / cell**2)
    pix = cases.images[first, 0].numpy()
    n = pix.shape[0]
    step = image_size // grid
    blocks = pix.reshape(n, grid, step, grid, step).transpose(0, 1, 3, 2, 4).reshape(n, grid * grid, step * step)
    return {"cells_per_box": float(np.mean(counts)), "box_cell_cover": float(np.mean(covers)),
            "pixel_cell_auc": probe_cells(blocks, labels)}


def _auc_rows(values: np.ndarray, cells: np.ndarray) -> float:
    aucs = [roc_auc_score(c, v) for v, c in zip(values, cells) if 0 < c.sum() < c.size]
    return float(np.mean(aucs)) if aucs else float("nan")


@torch.no_grad()
def attention_lesion_stats(model: PRIOR, cases: LesionCases, image_size: int, device: torch.device,
                           quantize: bool = True, kind: str = "consolidation") -> dict[str, float]:
    """Token probe, attention AUC / argmin pointing game / image dependence of the sentence->patch maps."""
    model.eval()
    grid = model.grid[0]
    emb = model.encode_image(cases.images.to(device))
    text, mask = model.encode_sentences([[s] for s in cases.rows["sentence"]])
    if model.losses["spb"] and quantize:
        text, _ = model.quantize(text, mask)
    att = model.local_cross_attention(emb.tokens, text, mask).sentence_attention[:, 0].float().cpu().numpy()
    cells = box_cells(cases.boxes, grid, image_size)
    first, labels = _lesion_labels(cases, grid, image_size, kind)
    tokens = emb.tokens.float().cpu().numpy()
    other = np.roll(np.arange(len(cases.boxes)), 7)
    shuffled = model.local_cross_attention(emb.tokens[other], text, mask).sentence_attention[:, 0].float().cpu()
    corr = [np.corrcoef(a, b)[0, 1] for a, b in zip(att, shuffled.numpy())
            if a.std() > 0 and b.std() > 0]
    is_kind = cases.rows["finding"].to_numpy() == kind
    rows = np.arange(len(cases.boxes))
    return {"token_cell_auc": probe_cells(tokens[first], labels) if len(first) else float("nan"),
            "att_cell_auc": _auc_rows(att, cells), f"att_cell_auc_{kind}": _auc_rows(att[is_kind], cells[is_kind]),
            "pg_argmax": float(cells[rows, att.argmax(1)].mean()),
            "pg_argmin": float(cells[rows, att.argmin(1)].mean()),
            "att_image_corr": float(np.mean(corr)) if corr else float("nan")}


def _pair_means(emb: np.ndarray, kinds: np.ndarray, sites: np.ndarray) -> dict[str, float]:
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True).clip(1e-12)
    sim = x @ x.T
    off = ~np.eye(len(x), dtype=bool)
    same_kind = kinds[:, None] == kinds[None, :]
    same_site = sites[:, None] == sites[None, :]
    out = {}
    for name, sel in (("cos_same_site", same_kind & same_site & off), ("cos_other_site", same_kind & ~same_site),
                      ("cos_other_finding", ~same_kind)):
        out[name] = float(sim[sel].mean()) if sel.any() else float("nan")
    return out


def _decode(x: np.ndarray, y: np.ndarray) -> float:
    """4-fold accuracy of a weakly regularised logistic regression reading ``y`` from ``x``."""
    folds = StratifiedKFold(4, shuffle=True, random_state=0)
    return float(cross_val_score(LogisticRegression(max_iter=5000, C=10.0), x, y, cv=folds).mean())


@torch.no_grad()
def text_location_stats(model: PRIOR, rows: pd.DataFrame, kind: str = "consolidation") -> dict[str, float]:
    """Can the (projected, optionally quantised) sentence embeddings tell the site of a ``kind`` finding?"""
    model.eval()
    certain = ~rows["sentence"].str.startswith("Possible")
    sel = rows[rows["finding"].isin(ZONED + ("effusion", "pneumothorax")) & certain].drop_duplicates("sentence")
    emb, mask = model.encode_sentences([[s] for s in sel["sentence"]])
    raw = emb[mask].float().cpu().numpy()
    kinds = sel["finding"].to_numpy()
    sites = (sel["side"] + " " + sel["zone"]).to_numpy()
    out = _pair_means(raw, kinds, sites)
    is_kind = kinds == kind
    sides = sel["side"].to_numpy()[is_kind]
    if is_kind.sum() >= 8 and len(set(sides)) == 2:
        feats, fmask = model.text_encoder([[s] for s in sel["sentence"]])
        for name, x in (("", raw[is_kind]), ("_encoder", feats[fmask].float().cpu().numpy()[is_kind])):
            out[f"side_decode_acc{name}"] = _decode(x, sides)
            out[f"site_decode_acc{name}"] = _decode(x, sites[is_kind])
    if model.losses["spb"]:
        codes = model.sentence_bank(emb[mask]).index.cpu().numpy()[is_kind]
        site_k = sites[is_kind]
        pairs = site_k[:, None] != site_k[None, :]
        out["loc_code_share"] = float((codes[:, None] == codes[None, :])[pairs].mean()) if pairs.any() else float("nan")
        out["loc_code_nmi"] = float(normalized_mutual_info_score(site_k, codes))
        out["loc_codes_used"] = float(len(np.unique(codes)))
        out["loc_sites"] = float(len(np.unique(site_k)))
    return out


@torch.no_grad()
def shuffled_local_losses(model: PRIOR, images: torch.Tensor, reports: list[list[str]], device: torch.device,
                          quantize: bool = True, chunk: int = 32) -> dict[str, float]:
    """Local losses of ``images`` ``(N, 1, S, S)`` with their own ``reports`` and with the images rolled by one."""
    model.eval()
    sums = {"local_text_matched": 0.0, "local_text_shuffled": 0.0, "local_image_matched": 0.0,
            "local_image_shuffled": 0.0}
    n = 0
    for start in range(0, len(reports), chunk):
        batch = images[start : start + chunk].to(device)
        if batch.shape[0] < 2:
            continue
        text = model.encode_text(reports[start : start + chunk], model.losses["spb"] and quantize)
        for name, imgs in (("matched", batch), ("shuffled", batch.roll(1, 0))):
            emb = model.encode_image(imgs)
            terms = model.local_losses(emb, text, model.local_attention(emb, text))
            sums[f"local_text_{name}"] += float(terms["local_text"]) * batch.shape[0]
            sums[f"local_image_{name}"] += float(terms["local_image"]) * batch.shape[0]
        n += batch.shape[0]
    return {k: v / max(n, 1) for k, v in sums.items()}


def lesion_grounding(model: PRIOR, cases: LesionCases, image_size: int, device: torch.device) -> dict[str, float]:
    """The image-side measurements of the module docstring (``location_agreement`` and ``text_location_stats``
    take every split's sentences); ``raw_*``
    repeats the attention ones with unquantised sentences for a model with an SPB."""
    out = cell_visibility(cases, model.grid[0], image_size)
    out |= attention_lesion_stats(model, cases, image_size, device)
    if model.losses["spb"]:
        raw = attention_lesion_stats(model, cases, image_size, device, quantize=False)
        out |= {f"raw_{k}": v for k, v in raw.items() if k != "token_cell_auc"}
    return out
