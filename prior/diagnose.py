"""Why does the global loss of a PRIOR checkpoint stay near chance? [ours, a diagnostic, not part of the paper]

On a few training batches (training mode: augmentation, Gumbel noise, batch-norm statistics as in training, no
optimizer step) of the checkpoint's own data and config, for the loss terms of ``--stage``:

- ``grad_<term>_<group>``: norm of the gradient of the *weighted* term (as it enters the stage's loss) on the
  parameter groups the terms share (image trunk + attention pool, the two image projections, the text projection,
  the sentence pool), and ``cos_global_rest_<group>``: cosine between the global term's gradient and the sum of the
  other terms' gradients (negative: they pull against each other);
- ``img_cos`` / ``txt_cos``: mean cosine between the global embeddings of different samples of a batch (1 =
  collapsed to one direction), ``txt_cos_raw`` the same for the report pooled from unquantised sentences,
  ``logit_scale``, ``global_loss`` and ``global_loss_raw`` (the CLIP loss with reports pooled from unquantised
  sentences);
- SPB (stage >= 2): ``spb_max_prob`` the mean largest soft-assignment weight without noise, ``spb_max_prob_noisy``
  with the training Gumbel noise, ``spb_argmax_agree`` how often the noisy argmax equals the clean one,
  ``spb_logit_std`` the spread of a sentence's logits, ``spb_codes_used`` of the batches' sentences.

    python diagnose.py --checkpoint runs/prior/<exp>/<run>/checkpoints/stage2_start.pt --stage 2 [--batches 4]

``--grounding`` instead reports where the sentence->patch maps of the pointing game peak on the test studies
(``downstream.grounding_diagnosis``: the pointing game of three maps, its chance level, the share of sentences
peaking at the same cell, the spread of the sigmoid attention), with the SPB prototypes and, for a model with an
SPB, the raw sentences too (``raw_*``).

    python diagnose.py --checkpoint runs/prior/<exp>/<run>/checkpoints/last.pt --grounding

``--lesions``: why the local alignment does not ground lesion sentences (``prior.grounding``): does the report
name the lesion's location, is the lesion visible at the token grid, do the tokens and the sentence->patch maps
carry it, can the (quantised) sentence embeddings tell lesion sites apart.

    python diagnose.py --checkpoint runs/prior/<exp>/<run>/checkpoints/last.pt --lesions
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from common.checkpoint import load_checkpoint
from common.cli import eval_parser, parse_eval
from common.runtime import setup_runtime
from prior.data import ImageDataset
from prior.downstream import grounding_diagnosis
from prior.evaluation import LOCALIZED, grounding_cases, test_findings
from prior.grounding import (
    LesionCases,
    lesion_grounding,
    location_agreement,
    shuffled_local_losses,
    text_location_stats,
)
from prior.models import build_model
from prior.models.alignment import global_clip_loss
from prior.pipeline import prepare_data, pretrain_loader
from prior.settings import Config

__all__ = ["GROUPS", "diagnose", "grounding", "lesions", "main"]

PROJECT_DIR = Path(__file__).resolve().parent
GROUPS = {"image": ("image_encoder.",), "image_proj": ("global_image_projection.", "local_image_projection."),
          "text_proj": ("local_text_projection.",), "text_pool": ("global_text_attention.",)}


def _mean_offdiag_cos(x: torch.Tensor) -> float:
    x = F.normalize(x.float(), dim=-1)
    sim = x @ x.T
    n = sim.shape[0]
    return float((sim.sum() - sim.diagonal().sum()) / (n * (n - 1)))


def _group_grads(model, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [p for _, p in named], retain_graph=True, allow_unused=True)
    out: dict[str, list[torch.Tensor]] = defaultdict(list)
    for (name, p), g in zip(named, grads):
        for group, prefixes in GROUPS.items():
            if name.startswith(prefixes):
                out[group].append((g if g is not None else torch.zeros_like(p)).flatten())
    return {k: torch.cat(v) for k, v in out.items()}


def diagnose(model, loader, stage: int, device: torch.device, batches: int = 4) -> dict[str, float]:
    """The quantities of the module docstring, averaged over ``batches`` training batches."""
    model.train()
    sums: dict[str, float] = defaultdict(float)
    n = 0
    for batch in loader:
        if n >= batches:
            break
        images, reports = batch["image"].to(device), batch["sentences"]
        terms = model(images, reports, stage)
        weights = {"global": model.global_weight_stage3 if stage == 3 else 1.0}
        grads = {k: _group_grads(model, weights.get(k, 1.0) * v) for k, v in terms.items() if k != "loss"}
        for term, per_group in grads.items():
            for group, g in per_group.items():
                sums[f"grad_{term}_{group}"] += float(g.norm())
        for group in GROUPS:
            rest = sum(g[group] for t, g in grads.items() if t != "global")
            if isinstance(rest, torch.Tensor):
                sums[f"cos_global_rest_{group}"] += float(F.cosine_similarity(grads["global"][group], rest, dim=0))
        with torch.no_grad():
            sums["global_loss"] += float(terms["global"])
            image = model.encode_image(images)
            raw, mask = model.encode_sentences(reports, model.num_queries if stage == 3 else None)
            raw_global = model.global_text_attention(raw, mask)
            sums["img_cos"] += _mean_offdiag_cos(image.global_)
            sums["txt_cos_raw"] += _mean_offdiag_cos(raw_global)
            sums["global_loss_raw"] += float(global_clip_loss(image.global_, raw_global, model.logit_scale.exp()))
            sums["logit_scale"] += float(model.logit_scale.exp())
            use_spb = stage >= 2 and model.losses["spb"]
            text = model.encode_text(reports, use_spb, model.num_queries if stage == 3 else None)
            sums["txt_cos"] += _mean_offdiag_cos(text.global_)
            if use_spb:
                bank = model.sentence_bank
                logits = bank.logits(raw[mask])
                clean = F.softmax(logits / bank.tau, dim=1)
                noisy = F.gumbel_softmax(logits, tau=bank.tau, dim=1, hard=False)
                sums["spb_max_prob"] += float(clean.max(1).values.mean())
                sums["spb_max_prob_noisy"] += float(noisy.max(1).values.mean())
                sums["spb_argmax_agree"] += float((clean.argmax(1) == noisy.argmax(1)).float().mean())
                sums["spb_logit_std"] += float(logits.std(1).mean())
                sums["spb_codes_used"] += float(len(torch.unique(clean.argmax(1))))
        n += 1
    return {k: v / max(n, 1) for k, v in sorted(sums.items())}


def grounding(cfg: Config, model, data, device: torch.device) -> dict[str, float]:
    """``grounding_diagnosis`` on the test studies' pointing-game cases, prototypes and (SPB) raw sentences."""
    cases = grounding_cases(cfg, data)
    if cases is None:
        raise SystemExit(f"{data.root}: no synthetic-findings.csv with localised test findings to diagnose")
    out = grounding_diagnosis(model, *cases, cfg.data.image_size, device)
    if model.losses["spb"]:
        raw = grounding_diagnosis(model, *cases, cfg.data.image_size, device, quantize=False)
        out |= {f"raw_{k}": v for k, v in raw.items()}
    return out


def lesions(cfg: Config, model, data, device: torch.device, limit: int = 400) -> dict[str, float]:
    """``prior.grounding`` on the test studies' localised findings; the location agreement on every split."""
    table = data.root / "synthetic-findings.csv"
    findings = test_findings(data)
    if findings is None:
        raise SystemExit(f"{table}: missing (synthetic data only); nothing to diagnose")
    rows = findings[findings["finding"].isin(LOCALIZED)].head(limit).reset_index(drop=True)
    cases = grounding_cases(cfg, data, limit, rows)
    if cases is None:
        raise SystemExit(f"{table}: no localised test findings to diagnose")
    everything = pd.read_csv(table, dtype={"dicom_id": str, "study_id": str})
    out = location_agreement(everything, cfg.data.synth.size) | text_location_stats(model, everything)
    images = torch.stack([ImageDataset([s.images[0]], [0], cfg.data.image_size, cfg.data.mean, cfg.data.std)[0][0]
                          for s in data.test])
    out |= shuffled_local_losses(model, images, [s.sentences for s in data.test], device)
    return out | lesion_grounding(model, LesionCases(cases[0], rows, cases[2], cfg.data.synth.size),
                                  cfg.data.image_size, device)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = eval_parser("Gradient and collapse diagnostics of a PRIOR checkpoint's global loss [ours]")
    parser.add_argument("--stage", type=int, default=2, choices=(1, 2, 3), help="loss terms of this stage")
    parser.add_argument("--batches", type=int, default=4, help="training batches to average over")
    parser.add_argument("--grounding", action="store_true", help="pointing-game diagnosis on the test studies")
    parser.add_argument("--lesions", action="store_true", help="why sentences are not grounded (prior.grounding)")
    ev = parse_eval(Config, argv, parser, "prior", PROJECT_DIR)
    cfg = ev.config
    device = setup_runtime(cfg.runtime, cfg.seed)
    model = build_model(cfg.model, cfg.data.image_size, cfg.loss.method, cfg.loss.global_weight_stage3).to(device)
    model.load_state_dict(load_checkpoint(ev.checkpoint)["model"])
    data = prepare_data(cfg)
    if ev.args.lesions:
        out = lesions(cfg, model, data, device)
        print(f"{ev.checkpoint} lesions: " + " ".join(f"{k} {v:.4g}" for k, v in out.items()), flush=True)
        return out
    if ev.args.grounding:
        out = grounding(cfg, model, data, device)
        print(f"{ev.checkpoint} grounding: " + " ".join(f"{k} {v:.4g}" for k, v in out.items()), flush=True)
        return out
    loader = pretrain_loader(cfg, data.train)
    out = diagnose(model, loader, ev.args.stage, device, ev.args.batches)
    print(f"{ev.checkpoint} stage {ev.args.stage}: " + " ".join(f"{k} {v:.4g}" for k, v in out.items()), flush=True)
    return out


if __name__ == "__main__":
    main()
