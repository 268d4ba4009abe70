"""Diagnostic: how much of a run's test Dice is lost to the BatchNorm running statistics of theta_G.

``python bn_diagnostic.py --checkpoint RUN/checkpoints/last.pt [--detail]``

Rebuilds every site's final personalised model exactly as the run scored it (``personalised_model``) and prints the
mean foreground Dice of its test split twice: with the running statistics the model carries (what the run reports)
and with BatchNorm normalising by the statistics of the site's own test images (all of them in one batch; dropout
stays off). The second number is transductive and is not a method: it only says whether the weights segment the
site and the averaged statistics do not fit it (FedBN's argument for keeping BatchNorm local).

``--detail`` adds, per site (``personalisation_report``): the Dice of the same personalised weights with the site's
own running statistics (the buffers of the model it uploaded last; not transductive), the Dice of theta_G without
the learnable aggregation (the shared decoders), and, for ALA methods, the mean of the aggregation weights W and
the fractions of W at 1 and at 0 (W = 1 keeps theta_old, the site's own last model; W = 0 takes theta_G).
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.config import load_from_checkpoint
from fedlppa.engine import case_metrics, main_logits, summarise
from fedlppa.federation import personalised_model, seed_client
from fedlppa.fl_sequential import load_server_state
from fedlppa.model import bn_buffer_keys
from fedlppa.pipeline import prepare_sites
from fedlppa.settings import CENTRALIZED, SITE_LETTERS, Config

__all__ = ["bn_gap", "personalisation_report", "main"]


def _dice(pred: np.ndarray, target: np.ndarray, num_classes: int) -> float:
    """Mean per-image Dice, scored by the same functions as the run's evaluation (no surface distances)."""
    rows = [case_metrics(p, t, num_classes, surface=False) for p, t in zip(pred, target)]
    return summarise(rows, num_classes)["dice"]


def _load_federation(checkpoint: Path) -> tuple[Config, list, Any]:
    """The run's config, its sites and the server state saved in ``checkpoint`` (a federated run only)."""
    cfg = load_from_checkpoint(Config, checkpoint)
    if cfg.federation.method in CENTRALIZED:
        raise ValueError(f"{checkpoint} is a {cfg.federation.method} run: it has one pooled model, no sites")
    torch.set_num_threads(max(cfg.runtime.threads, 1))
    specs, _ = prepare_sites(cfg)
    return cfg, specs, load_server_state(checkpoint, cfg, len(specs))


def bn_gap(checkpoint: Path) -> dict[str, tuple[float, float]]:
    """``{site: (Dice with the running statistics, Dice with the site's test-batch statistics)}``."""
    cfg, specs, state = _load_federation(checkpoint)
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


def _predict(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return main_logits(model(x)).argmax(1).numpy()


def personalisation_report(checkpoint: Path) -> dict[str, dict[str, float]]:
    """Per site: ``scored`` (as the run scored it), ``own_stats`` (same weights, the site's own BatchNorm running
    statistics from its last upload), ``shared_decoders`` (theta_G without ALA, its running statistics) and, when
    ALA ran, ``w_mean`` (mean of W), ``w_below`` (fraction of W < 0.999), ``w_old`` (fraction >= 0.999: the site's
    own last model kept) and ``w_global`` (fraction <= 0.001: theta_G taken), with W on theta_old - theta_G."""
    cfg, specs, state = _load_federation(checkpoint)
    no_ala = replace(cfg, ala=replace(cfg.ala, enabled=False))
    rnd, glob, out = state.round + 1, state.aggregator.global_state, {}
    for k, spec in enumerate(specs):
        client = state.clients[k]
        aux = state.aggregator.aux_for_site(k, rnd) if cfg.federation.method == "fedlppa" else None
        x = torch.from_numpy(np.stack([c.image for c in spec.data.test]))
        target = np.stack([c.label for c in spec.data.test])
        classes, row = cfg.data.num_classes, {}
        seed_client(cfg, k, rnd)
        log: dict[str, float] = {}
        model = personalised_model(cfg, spec, copy.copy(client), glob, aux, rnd, False, ala_log=log).cpu()
        row["scored"] = _dice(_predict(model, x), target, classes)
        if client.old_state is not None:
            model.load_state_dict({**model.state_dict(), **{b: client.old_state[b] for b in bn_buffer_keys(model)}})
            row["own_stats"] = _dice(_predict(model, x), target, classes)
        seed_client(cfg, k, rnd)
        shared = personalised_model(no_ala, spec, copy.copy(client), glob, aux, rnd, False).cpu()
        row["shared_decoders"] = _dice(_predict(shared, x), target, classes)
        if log:
            row.update({"w_mean": log["ala_w_mean"], "w_below": 1.0 - log["ala_w_old"], "w_old": log["ala_w_old"],
                        "w_global": log["ala_w_global"]})
        out[SITE_LETTERS[k]] = row
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, tuple[float, float]]:
    parser = argparse.ArgumentParser(description="Dice with theta_G's BatchNorm statistics vs the site's own")
    parser.add_argument("--checkpoint", required=True, help="checkpoints/last.pt of a federated or local run")
    parser.add_argument("--detail", action="store_true", help="also own-statistics, shared-decoder and W columns")
    args = parser.parse_args(argv)
    if args.detail:
        for site, row in personalisation_report(Path(args.checkpoint)).items():
            print(f"site {site}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()))
    result = bn_gap(Path(args.checkpoint))
    for site, (running, batch) in result.items():
        print(f"site {site}: running statistics {running:.3f} | site test-batch statistics {batch:.3f}")
    means = np.mean(list(result.values()), axis=0)
    print(f"mean: running statistics {means[0]:.3f} | site test-batch statistics {means[1]:.3f}")
    return result


if __name__ == "__main__":
    main()
