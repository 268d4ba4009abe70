"""One ASLseg round's pseudo-labelling from a segmenter snapshot, without retraining the segmenter, scored by the
reporting oracle: how true the SSL, raw-SAM, refined and box-ellipse masks are on the unlabelled slices, and what
each (agreement, uncertainty) threshold pair would select and how true that selection is.

``python diagnose.py --config configs/default.yaml --round0 RUN/checkpoints/ssl_1800.pt [--out DIR] [key=value]``

The round is exactly ``loop.refine_all`` (SAM fine-tuned on the labelled slices, the adapter trained, every
unlabelled slice pseudo-labelled, ``selection.score_slices``); only afterwards are the hidden labels read, for this
report (``summary.json``, ``grid.csv``, ``scores.npz`` in ``--out``). On synthetic data only: this is where the
selection thresholds and SAM settings are studied on training volumes, never on the test volumes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from aslseg.loop import SAMState, refine_all
from aslseg.pipeline import prepare_data, sam_box_probs
from aslseg.prompts import box_prior, boxes_from_mask
from aslseg.selection import score_slices
from aslseg.semisup import SSLTrainer, build_segmenter, filter_components
from aslseg.settings import Config
from common.metrics import mask_dice

__all__ = ["threshold_grid", "diagnose", "main"]

PROJECT_DIR = Path(__file__).resolve().parent
AGREEMENTS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)
UNCERTAINTIES = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0)


def _ellipse_masks(masks: np.ndarray, min_area: int, margin: int) -> np.ndarray:
    out = np.zeros(masks.shape, bool)
    for i, m in enumerate(masks):
        boxes = boxes_from_mask(m, min_area, margin)
        if len(boxes):
            out[i] = box_prior(boxes, m.shape).any(0)
    return out


def threshold_grid(agreement: np.ndarray, uncertainty: np.ndarray, hard: dict[str, np.ndarray], truth: np.ndarray,
                   agreements: Sequence[float] = AGREEMENTS, uncertainties: Sequence[float] = UNCERTAINTIES
                   ) -> list[dict]:
    """Per threshold pair: how many scored slices pass (a >= a_min, u <= u_max) and the pooled true Dice of each
    mask kind (``hard``: name -> ``(N, H, W)`` bool) over them."""
    rows = []
    finite = np.isfinite(agreement)
    for a_min in agreements:
        for u_max in uncertainties:
            ok = finite & (np.nan_to_num(agreement, nan=-1) >= a_min) & (uncertainty <= u_max)
            row = {"min_agreement": a_min, "max_uncertainty": u_max, "n": int(ok.sum()),
                   "n_with_tumour": int(truth[ok].reshape(int(ok.sum()), -1).any(1).sum()) if ok.any() else 0}
            for name, m in hard.items():
                row[f"{name}_true_dice"] = mask_dice(m[ok], truth[ok]) if ok.any() else float("nan")
            rows.append(row)
    return rows


def _variant_masks(prep, cfg: Config, device, sam: SAMState, pl, ssl_masks: np.ndarray, trainer
                   ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Label-free alternatives to the default pseudo-label: probabilities per name, and the probability each is
    scored on (selection's uncertainty) where it differs."""
    from dataclasses import replace

    from aslseg.engine import predict_probs
    from aslseg.fusion import gated_fusion, mean_fusion, ssl_mask_prompt_probs
    from aslseg.pipeline import adapter_stage, pseudo_label

    p = cfg.prompts
    emb = sam.embeddings
    images = prep.unlabelled.images
    probs: dict[str, np.ndarray] = {}
    low = np.stack([filter_components(s > 0.3, p.min_area) for s in pl.ssl])
    probs["sam_box_ssl0.3"] = sam_box_probs(sam.model, images, low, cfg, emb)
    probs["sam_margin1"] = sam_box_probs(sam.model, images, ssl_masks, replace(cfg, prompts=replace(p, box_margin=1)),
                                         emb)
    probs["sam_points"] = sam_box_probs(sam.model, images, ssl_masks, replace(cfg, prompts=replace(p, points=True)),
                                        emb)
    probs["sam_sslmaskprompt"] = ssl_mask_prompt_probs(sam.model, emb, ssl_masks, p.min_area, p.box_margin)
    probs["mean"] = mean_fusion(pl.ssl, pl.sam)
    probs["mean_sslmaskprompt"] = mean_fusion(pl.ssl, probs["sam_sslmaskprompt"])
    score_probs: dict[str, np.ndarray] = {}
    for tau in (0.5, 0.7, 0.85):
        probs[f"gated{tau}"] = gated_fusion(ssl_masks, pl.sam, p.min_area, p.box_margin, tau)
        score_probs[f"gated{tau}"] = probs["mean"]
    probs["gated0.7_sslmaskprompt"] = gated_fusion(ssl_masks, probs["sam_sslmaskprompt"], p.min_area, p.box_margin,
                                                   0.7)
    score_probs["gated0.7_sslmaskprompt"] = probs["mean_sslmaskprompt"]
    ssl_lab = predict_probs(trainer.student, prep.labelled.images, device)
    for mode in ("real", "mixed"):
        c = replace(cfg, adapter=replace(cfg.adapter, training=mode))
        adapter = adapter_stage(sam.model, prep.labelled, c, seed=cfg.seed * 100 + 1, device=device, ssl_probs=ssl_lab)
        probs[f"adapter_{mode}"] = pseudo_label(sam.model, adapter, images, pl.ssl, c, device, emb).refined
    return probs, score_probs


def quantile_grid(probs: dict[str, np.ndarray], score_probs: dict[str, np.ndarray], ssl: np.ndarray,
                  truth: np.ndarray, dilation: int, fractions: Sequence[float] = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5)
                  ) -> list[dict]:
    """Per pseudo-label kind and top fraction (``selection.rule: quantile``): pooled true Dice of the selected
    positives' labels and of the SSL masks of the same slices."""
    rows = []
    for name, prob in probs.items():
        sc = score_slices(prob, ssl, dilation=dilation, uncertainty_probs=score_probs.get(name))
        scored = np.isfinite(sc.agreement)
        rank = np.where(scored, sc.agreement - sc.uncertainty, -np.inf)
        order = np.argsort(-rank, kind="stable")
        for f in fractions:
            top = order[: int(np.floor(f * scored.sum()))]
            rows.append({"label": name, "top_fraction": f, "n": len(top),
                         "label_true_dice": mask_dice(prob[top] > 0.5, truth[top]),
                         "ssl_true_dice": mask_dice(ssl[top] > 0.5, truth[top]),
                         "min_agreement": float(sc.agreement[top].min()) if len(top) else float("nan")})
    return rows


def variant_report(trainer, prep, cfg: Config, device, sam: SAMState, pl, ssl_masks: np.ndarray,
                   truth: np.ndarray, out: Path) -> dict:
    """Oracle scores of :func:`_variant_masks` (``variants.csv`` row set in ``summary``, ``quantile.csv``) and where
    the SSL-box SAM loses to the ground-truth-box SAM: on SSL components that touch a lesion only (oracle boxes)."""
    import pandas as pd

    from aslseg.prompts import components

    probs, score_probs = _variant_masks(prep, cfg, device, sam, pl, ssl_masks, trainer)
    rep = {f"{k}_true_dice": mask_dice(v > 0.5, truth) for k, v in probs.items()}
    lab_truth = prep.labelled.tumour.astype(bool)
    from aslseg.engine import predict_probs

    rep["ssl_labelled_true_dice"] = mask_dice(predict_probs(trainer.student, prep.labelled.images, device) > 0.5,
                                                lab_truth)
    touching = np.zeros_like(ssl_masks)
    for i, m in enumerate(ssl_masks):
        for comp in components(m, cfg.prompts.min_area):
            if (comp & truth[i]).any():
                touching[i] |= comp
    sam_tp = sam_box_probs(sam.model, prep.unlabelled.images, touching, cfg, sam.embeddings) > 0.5
    rep["ssl_tpcomponents_true_dice"] = mask_dice(touching, truth)
    rep["sam_tpboxes_true_dice"] = mask_dice(sam_tp, truth)
    rep["ssl_fp_component_px"] = int((ssl_masks & ~touching).sum())
    rep["sam_px_in_fp_boxes"] = int(((pl.sam > 0.5) & ~sam_tp).sum())
    hard = {"ssl": pl.ssl > 0.5, "refined": pl.refined > 0.5, **{k: v > 0.5 for k, v in probs.items()}}
    rows = quantile_grid({"refined": pl.refined, **probs}, score_probs, pl.ssl, truth, cfg.selection.dilation)
    # the SSL masks ranked by their own entropy (agreement with themselves is 1): selection without SAM
    rows += quantile_grid({"ssl_own_entropy": pl.ssl}, {}, pl.ssl, truth, cfg.selection.dilation)
    pd.DataFrame(rows).to_csv(out / "quantile.csv", index=False)
    pd.DataFrame([{"label": k, "true_dice": mask_dice(v, truth)} for k, v in hard.items()]).to_csv(
        out / "variants.csv", index=False)
    return rep


def _snapshot_trainer(cfg: Config, path: str | Path, device) -> SSLTrainer:
    from common.checkpoint import load_checkpoint

    trainer = SSLTrainer(cfg.ssl, cfg.optim, device, build_segmenter(cfg.model))
    trainer.load_state_dict(load_checkpoint(path)["extra"]["trainer"])
    return trainer


def early_adapter_report(prep, cfg: Config, device, sam: SAMState, pl, truth: np.ndarray,
                         snapshots: Sequence[str | Path], out: Path) -> dict:
    """The adapter trained on an earlier segmenter snapshot's predictions on the labelled slices (``real``; and one
    copy of those + one corrupted ground truth, ``mixed``): errors closer to those the round-0 segmenter makes on
    the unlabelled slices than its own in-sample predictions. Oracle true Dice over all unlabelled slices, plus
    the top-20 % ranking of each (``early_quantile.csv``)."""
    from dataclasses import replace

    import pandas as pd

    from aslseg.engine import predict_probs
    from aslseg.pipeline import adapter_stage, pseudo_label

    rep: dict = {}
    probs: dict[str, np.ndarray] = {}
    lab_truth = prep.labelled.tumour.astype(bool)
    for path in snapshots:
        name = Path(path).stem  # ssl_<it>
        ssl_lab = predict_probs(_snapshot_trainer(cfg, path, device).student, prep.labelled.images, device)
        rep[f"{name}_labelled_true_dice"] = mask_dice(ssl_lab > 0.5, lab_truth)
        for mode in ("real", "mixed"):
            c = replace(cfg, adapter=replace(cfg.adapter, training=mode))
            adapter = adapter_stage(sam.model, prep.labelled, c, seed=cfg.seed * 100 + 1, device=device,
                                    ssl_probs=ssl_lab)
            probs[f"adapter_{mode}_{name}"] = pseudo_label(sam.model, adapter, prep.unlabelled.images, pl.ssl, c,
                                                           device, sam.embeddings).refined
    rep.update({f"{k}_true_dice": mask_dice(v > 0.5, truth) for k, v in probs.items()})
    rows = quantile_grid({"refined": pl.refined, **probs}, {}, pl.ssl, truth, cfg.selection.dilation)
    rows += quantile_grid({"ssl_own_entropy": pl.ssl}, {}, pl.ssl, truth, cfg.selection.dilation)
    pd.DataFrame(rows).to_csv(out / "early_quantile.csv", index=False)
    return rep


def diagnose(cfg: Config, round0: str | Path, out: Path, variants: bool = False,
             adapter_from: Sequence[str | Path] = ()) -> dict:
    from common.runtime import setup_runtime

    device = setup_runtime(cfg.runtime, cfg.seed)
    prep = prepare_data(cfg)
    trainer = _snapshot_trainer(cfg, round0, device)
    start = time.time()
    sam = SAMState()
    pl = refine_all(trainer, prep, cfg, device, sam, 1)
    seconds = time.time() - start
    score = score_slices(pl.refined, pl.ssl, dilation=cfg.selection.dilation)
    # --- the oracle, for this report only
    truth = prep.unlabelled.reveal_for_report().astype(bool)
    p = cfg.prompts
    ssl_masks = np.stack([filter_components(s > 0.5, p.min_area) for s in pl.ssl])
    hard = {"ssl": pl.ssl > 0.5, "ssl_filtered": ssl_masks, "sam": pl.sam > 0.5, "refined": pl.refined > 0.5,
            "ellipse": _ellipse_masks(ssl_masks, p.min_area, p.box_margin)}
    gt_sam = sam_box_probs(sam.model, prep.unlabelled.images, truth, cfg, sam.embeddings) > 0.5
    scored = np.isfinite(score.agreement)
    summary: dict = {"round0": str(round0), "seconds_round": round(seconds, 1), "n_slices": len(truth),
                     "n_scored": int(scored.sum()), "n_with_tumour": int(truth.reshape(len(truth), -1).any(1).sum()),
                     "sam_gtbox_true_dice": mask_dice(gt_sam, truth),
                     "ellipse_gtbox_true_dice": mask_dice(_ellipse_masks(truth, p.min_area, p.box_margin), truth)}
    for name, m in hard.items():
        summary[f"{name}_true_dice"] = mask_dice(m, truth)
        summary[f"{name}_true_dice_scored"] = mask_dice(m[scored], truth[scored])
    a, u = score.agreement[scored], score.uncertainty[scored]
    for q in (10, 25, 50, 75, 90):
        summary[f"agreement_q{q}"] = float(np.percentile(a, q)) if len(a) else float("nan")
        summary[f"uncertainty_q{q}"] = float(np.percentile(u, q)) if len(u) else float("nan")
    grid = threshold_grid(score.agreement, score.uncertainty, hard, truth)
    out.mkdir(parents=True, exist_ok=True)
    if variants:
        summary.update(variant_report(trainer, prep, cfg, device, sam, pl, ssl_masks, truth, out))
    if adapter_from:
        summary.update(early_adapter_report(prep, cfg, device, sam, pl, truth, adapter_from, out))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    import pandas as pd

    pd.DataFrame(grid).to_csv(out / "grid.csv", index=False)
    np.savez_compressed(out / "scores.npz", agreement=score.agreement, uncertainty=score.uncertainty,
                        ssl_max=score.ssl_max, **{f"{k}_inter": (m & truth).reshape(len(m), -1).sum(1)
                                                   for k, m in hard.items()},
                        **{f"{k}_sum": m.reshape(len(m), -1).sum(1) for k, m in hard.items()},
                        truth_sum=truth.reshape(len(truth), -1).sum(1))
    print(json.dumps(summary, indent=2))
    return summary


def main(argv: Sequence[str] | None = None) -> dict:
    from common.cli import parse_train, train_parser

    parser = train_parser("Score one ASLseg round's pseudo-labels from a segmenter snapshot (oracle report)")
    parser.add_argument("--round0", required=True, help="checkpoints/ssl_<it>.pt of an SSL run (same seed, data)")
    parser.add_argument("--out", required=True, help="folder for summary.json, grid.csv, scores.npz")
    parser.add_argument("--variants", action="store_true",
                        help="also score other prompts, fusions and adapter trainings (variants.csv, quantile.csv)")
    parser.add_argument("--adapter-from", nargs="+", default=(), metavar="SNAPSHOT",
                        help="earlier checkpoints/ssl_<it>.pt of the same run: also train the adapter on their "
                             "predictions on the labelled slices (early_quantile.csv)")
    cfg, args = parse_train(Config, argv, parser, PROJECT_DIR)
    for flag, path in [("--round0", args.round0)] + [("--adapter-from", p) for p in args.adapter_from]:
        if not Path(path).is_file():
            raise FileNotFoundError(f"diagnose.py {flag} {path}: no such checkpoint; pass checkpoints/ssl_<it>.pt of "
                                    "an SSL run with ssl.snapshot_iters naming that iteration")
    return diagnose(cfg, args.round0, Path(args.out), args.variants, args.adapter_from)


if __name__ == "__main__":
    main()
