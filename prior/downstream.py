"""Evaluation heads on a pre-trained PRIOR (official ``codes/prior/downstream/zero_classification_model.py``):
zero-shot classification with one prompt per class, image-to-report retrieval by the same scores, the pointing
game of sentence->patch attention, prototype statistics, and cached GAP(layer4) features for linear probing.

Zero-shot score of image i and prompt c: softmax_c(global) + ``local_weight`` x softmax_c(local), with global =
logit_scale x cos(image, prompt) and local = the mean of the two sigmoid attention maps between the image tokens
and the prompt sentence. A model trained without local alignment is scored with the global term only.

Text side: as in the official head (``on_test_start``), a prompt (or report) sentence of a model with an SPB is
replaced by its prototype before the sentence pool and the local attention (``quantize=True``, the default).
``quantize=False`` [ours] scores with the unquantised projected sentence embeddings instead (the sentence pool and
the cross-attention are the trained ones), so that prompts sharing a prototype stay apart.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score, normalized_mutual_info_score
from torch.utils.data import DataLoader

from prior.models.prior import PRIOR

__all__ = ["encode_images", "encode_reports", "pair_scores", "zeroshot", "located_prompts", "retrieval",
           "retrieval_scores", "retrieval_metrics", "precision_at_k", "gap_features", "sentence_maps",
           "pointing_game", "box_cells", "grounding_diagnosis", "prototype_stats", "report_reconstruction_f1"]


@torch.no_grad()
def encode_images(model: PRIOR, loader: DataLoader, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, D)`` global and ``(N, P, D)`` local image embeddings of a loader of ``(image, target, index)``."""
    model.eval()
    g, t = [], []
    for images, _, _ in loader:
        emb = model.encode_image(images.to(device))
        g.append(emb.global_.float().cpu())
        t.append(emb.tokens.float().cpu())
    return torch.cat(g), torch.cat(t)


@torch.no_grad()
def encode_reports(model: PRIOR, reports: list[list[str]], device: torch.device, chunk: int = 64,
                   quantize: bool = True):
    """Global ``(M, D)``, sentences ``(M, S, D)`` and mask of reports, through the SPB when the model has one and
    ``quantize`` (official); ``quantize=False`` [ours]: the unquantised sentence embeddings."""
    model.eval()
    use_spb = model.losses["spb"] and quantize
    glob, sents, masks = [], [], []
    for start in range(0, len(reports), chunk):
        text = model.encode_text(reports[start : start + chunk], use_spb)
        glob.append(text.global_.float().cpu())
        sents.append(text.sentences.float().cpu())
        masks.append(text.mask.cpu())
    s_max = max(s.shape[1] for s in sents)
    pad = [torch.nn.functional.pad(s, (0, 0, 0, s_max - s.shape[1])) for s in sents]
    mpad = [torch.nn.functional.pad(m, (0, s_max - m.shape[1])) for m in masks]
    return torch.cat(glob), torch.cat(pad), torch.cat(mpad)


@torch.no_grad()
def pair_scores(model: PRIOR, img_global, img_tokens, txt_global, txt_sents, txt_mask, device: torch.device,
                chunk: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """``(N, M)`` global logits and local scores between N images and M texts."""
    scale = model.logit_scale.exp().float().cpu()
    g = scale * torch.nn.functional.normalize(img_global, dim=-1) @ torch.nn.functional.normalize(txt_global, dim=-1).T
    local = torch.zeros_like(g)
    att_module = model.local_cross_attention
    m = txt_sents.shape[0]
    for i in range(img_tokens.shape[0]):
        tokens = img_tokens[i : i + 1].to(device)
        for start in range(0, m, chunk):
            sents = txt_sents[start : start + chunk].to(device)
            mask = txt_mask[start : start + chunk].to(device)
            att = att_module(tokens.expand(sents.shape[0], -1, -1), sents, mask)
            w = mask.float()
            a1 = (att.sentence_attention.mean(-1) * w).sum(1) / w.sum(1)  # (chunk,)
            a2 = att.patch_attention.sum(-1).mean(-1) / w.sum(1)
            local[i, start : start + chunk] = (0.5 * (a1 + a2)).cpu()
    return g.numpy(), local.numpy()


def _combine(g: np.ndarray, local: np.ndarray, local_weight: float) -> np.ndarray:
    sg = np.exp(g - g.max(1, keepdims=True))
    sg /= sg.sum(1, keepdims=True)
    if local_weight == 0:
        return sg
    sl = np.exp(local - local.max(1, keepdims=True))
    sl /= sl.sum(1, keepdims=True)
    return sg + local_weight * sl


def located_prompts() -> dict[str, list[str]]:
    """A prompt set per class [ours, after GLoRIA's severity x location x subtype prompts, in the vocabulary of
    the synthetic reports]: every side and zone for the localised findings, two severities each."""
    sites = [(side, zone) for side in ("right", "left") for zone in ("upper", "mid", "lower")]
    return {"Atelectasis": [f"Mild {s} {z} zone atelectasis." for s, z in sites],
            "Cardiomegaly": ["Mild cardiomegaly.", "Moderate cardiomegaly."],
            "Consolidation": [f"{w} {s} {z} lobe consolidation." for w in ("Small", "Large") for s, z in sites],
            "Edema": ["Mild pulmonary edema.", "Moderate pulmonary edema."],
            "Pleural Effusion": [f"{w} {s} pleural effusion." for w in ("Small", "Large") for s in ("right", "left")]}


def zeroshot(model: PRIOR, loader: DataLoader, labels: np.ndarray, class_names: list[str], device: torch.device,
             prompt: str = "{} is observed", local_weight: float = 0.5,
             prompt_sets: dict[str, list[str]] | None = None, quantize: bool = True
             ) -> tuple[dict[str, float], np.ndarray]:
    """Zero-shot accuracy / macro F1 (official scoring; global-only when the model has no local alignment) and
    the global-only scores too. ``prompt_sets`` (class -> prompts) replaces the one ``prompt`` per class; as in
    the official head, a class's global score is the max over its prompts and its local score the mean.
    ``quantize``: prompts through the SPB (official) or not [ours]. Returns ``(metrics, probabilities (N, C))``."""
    ig, it = encode_images(model, loader, device)
    sets = [prompt_sets[c] for c in class_names] if prompt_sets else [[prompt.format(c)] for c in class_names]
    owner = np.concatenate([np.full(len(p), k) for k, p in enumerate(sets)])
    tg, ts, tm = encode_reports(model, [[p] for ps in sets for p in ps], device, quantize=quantize)
    g_all, local_all = pair_scores(model, ig, it, tg, ts, tm, device)
    g = np.stack([g_all[:, owner == k].max(1) for k in range(len(sets))], 1)
    local = np.stack([local_all[:, owner == k].mean(1) for k in range(len(sets))], 1)
    weight = local_weight if model.losses["local"] else 0.0
    probs = _combine(g, local, weight)
    pred, pred_g = probs.argmax(1), g.argmax(1)
    return {"zeroshot_accuracy": float(accuracy_score(labels, pred)),
            "zeroshot_f1": float(f1_score(labels, pred, average="macro", zero_division=0)),
            "zeroshot_accuracy_global": float(accuracy_score(labels, pred_g)),
            "zeroshot_f1_global": float(f1_score(labels, pred_g, average="macro", zero_division=0))}, probs


def precision_at_k(scores: np.ndarray, query_labels: np.ndarray, item_labels: np.ndarray, k: int) -> float:
    """Mean over queries of the fraction of the top-k items that share the query's class."""
    top = np.argsort(-scores, axis=1)[:, :k]
    return float((item_labels[top] == query_labels[:, None]).mean())


def retrieval_scores(model: PRIOR, loader: DataLoader, reports: list[list[str]], device: torch.device,
                     local_weight: float = 0.5, quantize: bool = True) -> np.ndarray:
    """``(N images, M reports)`` image -> report scores, computed like zero-shot with the reports as prompts
    (``quantize`` as there)."""
    ig, it = encode_images(model, loader, device)
    tg, ts, tm = encode_reports(model, reports, device, quantize=quantize)
    g, local = pair_scores(model, ig, it, tg, ts, tm, device)
    return _combine(g, local, local_weight if model.losses["local"] else 0.0)


def retrieval_metrics(scores: np.ndarray, labels: np.ndarray, report_labels: np.ndarray) -> dict[str, float]:
    return {f"retrieval_p_at_{k}": precision_at_k(scores, labels, report_labels, k) for k in (1, 5, 10)}


def retrieval(model: PRIOR, loader: DataLoader, labels: np.ndarray, reports: list[list[str]],
              report_labels: np.ndarray, device: torch.device, local_weight: float = 0.5, quantize: bool = True
              ) -> dict[str, float]:
    """Image -> report retrieval P@1/5/10 (:func:`retrieval_scores`)."""
    return retrieval_metrics(retrieval_scores(model, loader, reports, device, local_weight, quantize), labels,
                             report_labels)


@torch.no_grad()
def gap_features(encoder, loader: DataLoader, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Global average pooled layer4 features ``(N, C)`` and stacked targets of a loader (linear probing)."""
    encoder.eval()
    feats, targets = [], []
    for images, target, _ in loader:
        feats.append(encoder.feature_map(images.to(device)).mean((2, 3)).float().cpu())
        targets.append(torch.as_tensor(np.asarray(target)))
    return torch.cat(feats).numpy(), torch.cat(targets).numpy()


def sentence_maps(model: PRIOR, images: torch.Tensor, sentences: list[str], device: torch.device,
                   quantize: bool):
    """Patch tokens, sentence embeddings (through the SPB when ``quantize``) and the local cross-attention of one
    finding sentence per image."""
    model.eval()
    emb = model.encode_image(images.to(device))
    text, mask = model.encode_sentences([[s] for s in sentences])
    if model.losses["spb"] and quantize:
        text, _ = model.quantize(text, mask)
    return emb, text, model.local_cross_attention(emb.tokens, text, mask)


@torch.no_grad()
def pointing_game(model: PRIOR, images: torch.Tensor, sentences: list[str], boxes: list[tuple[int, ...]],
                  image_size: int, device: torch.device, quantize: bool = True) -> float:
    """Fraction of finding sentences whose sentence->patch attention peaks in a grid cell overlapping the
    finding's box (boxes in pixels of the ``image_size`` input); sentences through the SPB when ``quantize``."""
    _, _, out = sentence_maps(model, images, sentences, device, quantize)
    att = out.sentence_attention[:, 0]  # (N, P)
    hits = box_cells(boxes, model.grid[0], image_size)[np.arange(len(boxes)), att.argmax(-1).cpu().numpy()]
    return float(np.mean(hits)) if len(hits) else float("nan")


def box_cells(boxes: list[tuple[float, ...]], grid: int, image_size: int) -> np.ndarray:
    """``(N, grid * grid)`` bool: token ``r * grid + c`` (grid cell (r, c)) overlaps box ``(x0, y0, x1, y1)``."""
    cell = image_size / grid
    edges = np.arange(grid) * cell
    out = np.zeros((len(boxes), grid * grid), dtype=bool)
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        cols = (edges < x1) & (edges + cell > x0)
        rows = (edges < y1) & (edges + cell > y0)
        out[k] = (rows[:, None] & cols[None, :]).reshape(-1)
    return out


@torch.no_grad()
def grounding_diagnosis(model: PRIOR, images: torch.Tensor, sentences: list[str], boxes: list[tuple[int, ...]],
                        image_size: int, device: torch.device, quantize: bool = True) -> dict[str, float]:
    """[ours, a diagnostic] Where do the sentence->patch maps of the pointing game peak? ``pg_<map>``: the pointing
    game of the peak of each map: ``sentence_attention`` (the metric), ``patch_attention`` (the image->sentence
    sigmoid map, read per sentence), ``cosine`` (cos(patch token, sentence)); ``pg_chance``: the expected hit
    rate of a peak drawn uniformly over the grid; ``peak_mode_share``: share of sentences whose peak is the most
    common peak cell (1 = every sentence points at the same cell); ``att_range``: mean over sentences of the
    max - min of the sigmoid sentence attention over patches (0 = a flat map)."""
    emb, text, out = sentence_maps(model, images, sentences, device, quantize)
    maps = {"sentence_attention": out.sentence_attention[:, 0], "patch_attention": out.patch_attention[:, :, 0],
            "cosine": torch.nn.functional.cosine_similarity(emb.tokens, text[:, :1], dim=-1)}
    cells = box_cells(boxes, model.grid[0], image_size)
    rows = np.arange(len(boxes))
    res = {f"pg_{k}": float(cells[rows, v.argmax(-1).cpu().numpy()].mean()) for k, v in maps.items()}
    peaks = maps["sentence_attention"].argmax(-1).cpu().numpy()
    res["pg_chance"] = float(cells.mean(1).mean())
    res["peak_mode_share"] = float(np.bincount(peaks).max() / len(peaks))
    att = maps["sentence_attention"]
    res["att_range"] = float((att.max(-1).values - att.min(-1).values).mean())
    return res


@torch.no_grad()
def prototype_stats(model: PRIOR, sentences: list[str], finding_ids: np.ndarray) -> dict[str, float]:
    """Share of SPB codes used by the argmax assignment of ``sentences`` and NMI of codes vs finding type."""
    model.eval()
    emb, mask = model.encode_sentences([[s] for s in sentences])
    out = model.sentence_bank(emb[mask])
    index = out.index.cpu().numpy()
    k = model.sentence_bank.embed.num_embeddings
    return {"proto_used_frac": float(len(np.unique(index)) / k),
            "proto_nmi": float(normalized_mutual_info_score(finding_ids, index))}


@torch.no_grad()
def report_reconstruction_f1(model: PRIOR, images: torch.Tensor, reports: list[list[str]], device: torch.device,
                             chunk: int = 32) -> float:
    """Conditional report reconstruction as set prediction: per study, the F1 between the set of SPB prototypes
    of the report decoder's non-empty slots and the set of prototypes of the report's sentences (its first
    ``num_queries``), averaged over studies (argmax assignments, no Gumbel noise). The decoder is trained to put
    zero vectors in the slots no sentence is matched to, so a slot counts as empty when its norm is below half the
    median prototype norm."""
    model.eval()
    q = model.num_queries
    bank = model.sentence_bank
    empty_below = 0.5 * float(bank.embed.weight.norm(dim=1).median())
    scores = []
    for start in range(0, len(reports), chunk):
        batch = [r[:q] for r in reports[start : start + chunk]]
        emb = model.encode_image(images[start : start + chunk].to(device))
        slots = model.sentence_decoder(emb.tokens)  # (B, Q, D)
        keep = slots.norm(dim=-1) >= empty_below
        sents, mask = model.encode_sentences(batch)
        true_codes = torch.full(mask.shape, -1, dtype=torch.long, device=mask.device)
        true_codes[mask] = bank(sents[mask]).index
        gen_codes = torch.full(keep.shape, -1, dtype=torch.long, device=keep.device)
        if keep.any():
            gen_codes[keep] = bank(slots[keep]).index
        for g_row, t_row in zip(gen_codes.tolist(), true_codes.tolist()):
            gen, true = {c for c in g_row if c >= 0}, {c for c in t_row if c >= 0}
            hit = len(gen & true)
            scores.append(0.0 if not hit else 2 * hit / (len(gen) + len(true)))
    return float(np.mean(scores)) if scores else float("nan")
