"""The ASLseg loop: "the reliable pseudo-labels are selected to expand the labeled set for iterative training".

One round (:func:`run_round`), after the segmenter's previous training: segmenter probabilities on the labelled and
unlabelled slices; SAM fine-tuned on the ground-truth slices (in round 1, and again each round with
``sam.refit_each_round``); the adaptation network trained; every remaining unlabelled slice pseudo-labelled
(SSL -> boxes -> SAM -> adapter, or the EMA teacher with ``loop.refiner: teacher``); reliable ones selected. The
unlabelled tumour labels are read only after selection, by :func:`oracle_stats`, for the report.

Under torchrun the per-slice work (segmenter probabilities, SAM embeddings and prompts, the adapter's refinement)
is strided over the ranks and gathered in slice order (``sharding.map_sharded``), SAM and the adapter train under
DDP, and every rank scores and selects on the same gathered arrays, so all ranks expand the labelled set alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from aslseg.engine import predict_probs
from aslseg.pipeline import (
    LabelledPool,
    Prepared,
    PseudoLabels,
    adapter_stage,
    embed_all,
    finetune_stage,
    prepare_sam,
    pseudo_label,
)
from aslseg.sam_model import SAMSegmenter
from aslseg.selection import score_slices, select
from aslseg.semisup import SSLTrainer
from aslseg.settings import Config
from aslseg.sharding import map_sharded, rank_items
from common.metrics import mask_dice
from common.runtime import dist_info, gather_by_index

__all__ = ["RoundResult", "SAMState", "refine_all", "run_round", "oracle_stats", "labelled_pool"]


@dataclass
class RoundResult:
    """Slices chosen in round ``round`` (indices into the unlabelled slices), their refined masks and the stats."""

    round: int
    selected: np.ndarray
    masks: np.ndarray
    stats: dict[str, float] = field(default_factory=dict)
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # per unlabelled slice, for the report


@dataclass
class SAMState:
    """SAM across rounds: the model and, while its encoder is frozen, the cached embeddings of this rank's
    unlabelled slices (``sharding.rank_items``: all of them in one process)."""

    model: SAMSegmenter | None = None
    embeddings: torch.Tensor | None = None
    tuned_rounds: int = 0


def labelled_pool(prep: Prepared, rounds: list[RoundResult]) -> LabelledPool:
    """Ground-truth slices + every selected pseudo-labelled slice so far; the unlabelled images stay available."""
    images = [prep.labelled.images] + [prep.unlabelled.images[r.selected] for r in rounds]
    labels = [prep.labelled.tumour] + [r.masks for r in rounds]
    return LabelledPool(np.concatenate(images), np.concatenate(labels).astype(np.uint8), prep.unlabelled.images)


def oracle_stats(pl: PseudoLabels, truth: np.ndarray, candidates: np.ndarray, chosen: np.ndarray,
                 positive: np.ndarray) -> dict[str, float]:
    """Reporting only: pooled true Dice of the selected / rejected refined pseudo-labels and of the SSL, raw-SAM
    and refined ones over all candidates; tumour pixels inside the selected negatives."""
    truth = truth.astype(bool)
    rejected = np.setdiff1d(candidates, chosen)
    neg = chosen[~positive]
    hard = {k: v > 0.5 for k, v in (("ssl", pl.ssl), ("sam", pl.sam), ("refined", pl.refined))}
    return {
        "selected_true_dice": mask_dice(hard["refined"][chosen], truth[chosen]),
        "rejected_true_dice": mask_dice(hard["refined"][rejected], truth[rejected]),
        "ssl_true_dice": mask_dice(hard["ssl"][candidates], truth[candidates]),
        "sam_true_dice": mask_dice(hard["sam"][candidates], truth[candidates]),
        "refined_true_dice": mask_dice(hard["refined"][candidates], truth[candidates]),
        "tumour_px_in_selected_neg": float(truth[neg].sum()) if len(neg) else 0.0,
    }


def _probs(model: torch.nn.Module, images: np.ndarray, device: torch.device) -> np.ndarray:
    """Segmenter probabilities of ``images``, each rank predicting its share (gathered in order)."""
    return map_sharded(len(images), lambda idx: predict_probs(model, images[idx], device))


def refine_all(trainer: SSLTrainer, prep: Prepared, cfg: Config, device: torch.device, sam: SAMState,
                round_index: int) -> PseudoLabels:
    ssl_unl = _probs(trainer.student, prep.unlabelled.images, device)
    if cfg.loop.refiner == "teacher":  # no SAM: the EMA teacher refines, agreement = student vs teacher
        teacher = _probs(trainer.teacher, prep.unlabelled.images, device)
        return PseudoLabels(ssl_unl, teacher, teacher)
    if sam.model is None:
        sam.model = prepare_sam(cfg, device)
    ssl_lab = _probs(trainer.student, prep.labelled.images, device)
    if sam.tuned_rounds == 0 or cfg.sam.refit_each_round:
        finetune_stage(sam.model, prep.labelled, ssl_lab, cfg, seed=cfg.seed * 100 + round_index)
        sam.tuned_rounds += 1
        if cfg.sam.finetune != "decoder":
            sam.embeddings = None
    mine = rank_items(len(prep.unlabelled))
    if sam.embeddings is None:
        sam.embeddings = embed_all(sam.model, prep.unlabelled.images[mine])
    adapter = None
    if cfg.loop.refiner == "sam" and cfg.adapter.enabled:
        adapter = adapter_stage(sam.model, prep.labelled, cfg, seed=cfg.seed * 100 + round_index, device=device,
                                ssl_probs=ssl_lab)
    part = pseudo_label(sam.model, adapter, prep.unlabelled.images[mine], ssl_unl[mine], cfg, device, sam.embeddings)
    if not dist_info().distributed:
        return part
    keys = sorted(part.extra)
    _, sam_p, refined, *extra = gather_by_index(mine, part.sam, part.refined, *(part.extra[k] for k in keys))
    return PseudoLabels(ssl_unl, sam_p, refined, dict(zip(keys, extra)))


def _score_summary(score, candidates: np.ndarray, cfg: Config) -> dict[str, float]:
    """How the candidates stand against the selection thresholds (label-free diagnostics)."""
    a, u = score.agreement[candidates], score.uncertainty[candidates]
    scored = np.isfinite(a)
    return {"n_scored": float(scored.sum()),
            "n_agreement_ok": float((scored & (a >= cfg.selection.min_agreement)).sum()),
            "n_uncertainty_ok": float((scored & (u <= cfg.selection.max_uncertainty)).sum()),
            "median_agreement": float(np.median(a[scored])) if scored.any() else float("nan"),
            "median_uncertainty": float(np.median(u[scored])) if scored.any() else float("nan")}


def run_round(round_index: int, trainer: SSLTrainer, prep: Prepared, done: list[RoundResult], cfg: Config,
              device: torch.device, sam: SAMState) -> RoundResult:
    """One ASLseg round (see module docstring); ``done`` = earlier rounds (their slices are not candidates)."""
    pl = refine_all(trainer, prep, cfg, device, sam, round_index)
    taken = np.concatenate([r.selected for r in done]) if done else np.zeros(0, np.int64)
    candidates = np.setdiff1d(np.arange(len(prep.unlabelled)), taken)
    score = score_slices(pl.refined, pl.ssl, dilation=cfg.selection.dilation,
                         uncertainty_probs=pl.extra.get("score_probs"))
    chosen = select(score, candidates, cfg.selection, np.random.default_rng([cfg.seed, 808, round_index]))
    masks = (pl.refined[chosen] > 0.5).astype(np.uint8)
    positive = masks.reshape(len(masks), -1).any(1) if len(masks) else np.zeros(0, bool)
    stats = {"n_candidates": float(len(candidates)), "n_selected": float(len(chosen)),
             "n_selected_pos": float(positive.sum()), "n_selected_neg": float((~positive).sum()),
             **_score_summary(score, candidates, cfg)}
    scores = {"candidates": candidates, "chosen": chosen, "agreement": score.agreement,
              "uncertainty": score.uncertainty, "ssl_max": score.ssl_max}
    truth = prep.unlabelled.reveal_for_report()  # after selection, for the report only
    if truth is not None:
        stats.update(oracle_stats(pl, truth, candidates, chosen, positive))
        for key, probs in (("ssl", pl.ssl), ("sam", pl.sam), ("refined", pl.refined)):
            hard = probs > 0.5
            scores[f"{key}_inter"] = (hard & truth.astype(bool)).reshape(len(hard), -1).sum(1)
            scores[f"{key}_sum"] = hard.reshape(len(hard), -1).sum(1)
        scores["truth_sum"] = truth.astype(bool).reshape(len(truth), -1).sum(1)
    return RoundResult(round_index, chosen.astype(np.int64), masks, stats, scores)
