"""Evaluate the personalised models of a finished (or interrupted) run, or predict masks for new images.

``python eval.py [--checkpoint auto|PATH] [--config FILE] [--data-root DIR] [--out DIR] [eval.empty_rule=...]``
``python eval.py --checkpoint PATH --predict DIR [eval.site=b]``

The config comes from the checkpoint (``last.pt`` holds theta_G, the uploaded auxiliary decoders and every site's
state); each site's personalised model is rebuilt exactly as the training run scored it. Writes ``summary.csv``
(mean over sites + one row per site) and ``per_case.csv`` to ``<run>/eval`` (or ``--out``). ``--predict`` writes
one PNG label map per image (``.h5`` with an ``image`` key, or ``.png``) found under DIR.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from common.cli import eval_parser, parse_eval
from common.readers import list_images, read_image
from common.runtime import dist_info
from common.tracking import write_eval_tables
from fedlppa.data import Case
from fedlppa.engine import predict
from fedlppa.federation import FederationError, client_device, personalised_model, seed_client
from fedlppa.fl_sequential import evaluate_sites, load_server_state, summarise_sites
from fedlppa.pipeline import prepare_sites
from fedlppa.settings import CENTRALIZED, SITE_LETTERS, Config

__all__ = ["evaluate_checkpoint", "predict_folder", "main"]

PROJECT_DIR = Path(__file__).resolve().parent


def evaluate_checkpoint(cfg: Config, checkpoint: Path, out: Path) -> dict[str, float]:
    specs, sites = prepare_sites(cfg)
    state = load_server_state(checkpoint, cfg, len(specs))
    rows, per_site = evaluate_sites(cfg, specs, sites, state, state.round)
    summary = summarise_sites(per_site)
    write_eval_tables(out, [{"site": "mean", **summary}] + [{"site": s, **v} for s, v in per_site.items()], rows)
    print(f"[fedlppa] round {state.round}: mean Dice {summary['dice']:.4f} -> {out}")
    return summary


def _read_any(path: Path, channels: int) -> np.ndarray:
    if path.suffix == ".h5":
        import h5py

        with h5py.File(path, "r") as handle:
            img = np.asarray(handle["image"][()], np.float32)
    else:
        img = read_image(path, mode="L" if channels == 1 else "RGB").astype(np.float32)
        img = (img - img.min()) / max(float(img.max() - img.min()), 1e-6)
        img = img if img.ndim == 2 else np.moveaxis(img, -1, 0)
    return img[None] if img.ndim == 2 else img


def predict_folder(cfg: Config, checkpoint: Path, folder: Path, out: Path) -> int:
    specs, _ = prepare_sites(cfg)
    state = load_server_state(checkpoint, cfg, len(specs))
    k = 0 if cfg.federation.method in CENTRALIZED else SITE_LETTERS.index(cfg.eval.site)
    seed_client(cfg, k, state.round + 1)
    model = personalised_model(cfg, specs[k], state.clients[k], state.aggregator.global_state,
                               state.aggregator.aux_for_site(k, state.round + 1), state.round + 1, False)
    paths = list_images([folder], suffixes=(".png", ".h5"))
    cases = [Case(p.stem, _read_any(p, cfg.data.in_channels), np.zeros((1, 1), np.uint8)) for p in paths]
    out.mkdir(parents=True, exist_ok=True)
    for case in cases:
        _, _, pred = predict(model, [case], client_device(cfg))
        cv2.imwrite(str(out / f"{case.stem}.png"), pred[0])
    print(f"[fedlppa] {len(cases)} label maps (site {cfg.eval.site}) -> {out}")
    return len(cases)


def main(argv: Sequence[str] | None = None) -> dict[str, float] | int:
    parsed = parse_eval(Config, argv, eval_parser("Evaluate FedLPPA personalised models"), "fedlppa", PROJECT_DIR)
    cfg, checkpoint, args = parsed.config, parsed.checkpoint, parsed.args
    if dist_info().world_size > 1:
        raise FederationError("eval.py scores a checkpoint in one process; run it without torchrun (training under "
                              "torchrun already writes the gathered eval/ tables)")
    run_dir = checkpoint.parent.parent
    if args.predict:
        return predict_folder(cfg, checkpoint, Path(args.predict), Path(args.out or run_dir / "predict"))
    return evaluate_checkpoint(cfg, checkpoint, Path(args.out or run_dir / "eval"))


if __name__ == "__main__":
    main()
