"""Diagnostic: how much of a run's test Dice is lost to the BatchNorm running statistics of theta_G.

``python bn_diagnostic.py --checkpoint RUN/checkpoints/last.pt``

Rebuilds every site's final personalised model exactly as the run scored it (``personalised_model``) and prints the
mean foreground Dice of its test split twice: with the running statistics the model carries (what the run reports)
and with BatchNorm normalising by the statistics of the site's own test images (all of them in one batch; dropout
stays off). The second number is transductive and is not a method: it only says whether the weights segment the
site and the averaged statistics do not fit it (FedBN's argument for keeping BatchNorm local).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from common.config import load_from_checkpoint
from fedlppa.engine import case_metrics, main_logits, summarise
from fedlppa.federation import personalised_model, seed_client
from fedlppa.fl_sequential import load_server_state
from fedlppa.pipeline import prepare_sites
from fedlppa.settings import CENTRALIZED, SITE_LETTERS, Config

__all__ = ["bn_gap", "main"]


def _dice(pred: np.ndarray, target: np.ndarray, num_classes: int) -> float:
    """Mean per-image Dice, scored by the same functions as the run's evaluation (no surface distances)."""
    rows = [case_metrics(p, t, num_classes, surface=False) for p, t in zip(pred, target)]
    return summarise(rows, num_classes)["dice"]


def bn_gap(checkpoint: Path) -> dict[str, tuple[float, float]]:
    """``{site: (Dice with the running statistics, Dice with the site's test-batch statistics)}``."""
    cfg = load_from_checkpoint(Config, checkpoint)
    if cfg.federation.method in CENTRALIZED:
        raise ValueError(f"{checkpoint} is a {cfg.federation.method} run: it has one pooled model, no sites")
    torch.set_num_threads(max(cfg.runtime.threads, 1))
    specs, _ = prepare_sites(cfg)
    state = load_server_state(checkpoint, cfg, len(specs))
    out = {}
    for k, spec in enumerate(specs):
        seed_client(cfg, k, state.round + 1)
        aux = state.aggregator.aux_for_site(k, state.round + 1) if cfg.federation.method == "fedlppa" else None
        model = personalised_model(cfg, spec, state.clients[k], state.aggregator.global_state, aux,
                                   state.round + 1, False).cpu()
        x = torch.from_numpy(np.stack([c.image for c in spec.data.test]))
        target = np.stack([c.label for c in spec.data.test])
        model.eval()
        with torch.no_grad():
            running = main_logits(model(x)).argmax(1).numpy()
            for module in model.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.train()
            batch = main_logits(model(x)).argmax(1).numpy()
        classes = cfg.data.num_classes
        out[SITE_LETTERS[k]] = (_dice(running, target, classes), _dice(batch, target, classes))
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, tuple[float, float]]:
    parser = argparse.ArgumentParser(description="Dice with theta_G's BatchNorm statistics vs the site's own")
    parser.add_argument("--checkpoint", required=True, help="checkpoints/last.pt of a federated or local run")
    args = parser.parse_args(argv)
    result = bn_gap(Path(args.checkpoint))
    for site, (running, batch) in result.items():
        print(f"site {site}: running statistics {running:.3f} | site test-batch statistics {batch:.3f}")
    means = np.mean(list(result.values()), axis=0)
    print(f"mean: running statistics {means[0]:.3f} | site test-batch statistics {means[1]:.3f}")
    return result


if __name__ == "__main__":
    main()
