"""Sequential federation driver: every round runs the sites one after another in this process, calling the same
core functions as the Flower apps (federation.py). ``checkpoints/last.pt`` after every round holds the server
state (theta_G, uploaded auxiliary decoders), every site's ``ClientState``, the round and the metric history, so a
run resumed with ``--resume auto`` continues exactly where it stopped.

Faults: a site that raises is left out of that round (``federation.on_failure: continue``; its state unchanged,
``metrics.csv`` names it in ``failed``) or stops the run (``abort``); fewer than ``min_sites`` replies always stop.

Under torchrun only the centralised rows run (one pooled site trained with DDP, ``check_world_size``); rank 0
writes ``last.pt``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.checkpoint import SCHEMA_VERSION, atomic_torch_save, load_checkpoint
from common.config import to_dict
from common.rundir import RunDir
from common.runtime import DistInfo, is_main_process
from common.tracking import Tracker
from fedlppa.data import SiteData
from fedlppa.federation import (
    Aggregator,
    ClientState,
    FederationError,
    SiteSpec,
    TrainReply,
    client_evaluate,
    client_train,
    initial_global_state,
)
from fedlppa.settings import CENTRALIZED, SITE_LETTERS, Config

__all__ = ["FederationRun", "ServerState", "new_server_state", "load_server_state", "save_server_state",
           "run_round", "evaluate_sites", "round_row", "run_federation", "failure_message", "summarise_sites",
           "check_world_size"]


@dataclass
class ServerState:
    """Everything a federation needs to continue after round ``round``."""

    aggregator: Aggregator
    clients: list[ClientState]
    round: int = 0
    history: list[dict] = field(default_factory=list)


@dataclass
class FederationRun:
    run_dir: Path
    rows: list[dict]
    per_site: dict[str, dict[str, float]]
    summary: dict[str, float]
    state: ServerState


def new_server_state(cfg: Config, specs: Sequence[SiteSpec]) -> ServerState:
    return ServerState(Aggregator(cfg, initial_global_state(cfg)), [ClientState(s.site) for s in specs])


def save_server_state(path: Path, cfg: Config, state: ServerState) -> Path:
    """Atomic ``last.pt`` (plain dict, ``torch.load(weights_only=True)``)."""
    return atomic_torch_save({
        "schema_version": SCHEMA_VERSION, "round": state.round, "epoch": state.round, "step": state.round,
        "model": state.aggregator.global_state, "aggregator": state.aggregator.state_dict(),
        "clients": [c.to_dict() for c in state.clients], "history": state.history, "config": to_dict(cfg),
        "num_sites": len(state.clients)}, path)


def load_server_state(path: Path, cfg: Config, num_clients: int) -> ServerState:
    ckpt = load_checkpoint(path)
    if int(ckpt["num_sites"]) != num_clients:
        raise FederationError(f"{path} holds {ckpt['num_sites']} sites, this config trains {num_clients}; resume "
                              f"with the same data.domains, or start a new run (without --resume)")
    Aggregator.check_sites(ckpt["aggregator"], cfg.data.num_sites, str(path))
    agg = Aggregator(cfg, ckpt["aggregator"]["global"])
    agg.load_state_dict(ckpt["aggregator"])
    return ServerState(agg, [ClientState.from_dict(c) for c in ckpt["clients"]], int(ckpt["round"]),
                       list(ckpt["history"]))


def check_world_size(cfg: Config, info: DistInfo) -> None:
    """Refuse a torchrun launch with more than one process unless the method is a centralised row (one model on
    the pooled sites, trained with DDP). Federated methods and ``local`` run their sites in one process or as
    Flower SuperNodes, and the batch must give every rank at least one image."""
    if info.world_size <= 1:
        return
    method = cfg.federation.method
    if method not in CENTRALIZED:
        raise FederationError(
            f"federation.method={method} under torchrun with {info.world_size} processes: only the centralised rows "
            f"({', '.join(CENTRALIZED)}) train with DDP. Run federated methods and `local` without torchrun "
            f"(`python train.py ...`, the sequential driver) or as a Flower federation (flower_app.py, one SuperNode "
            f"per site)")
    if cfg.optim.batch_size < info.world_size:
        raise FederationError(f"optim.batch_size = {cfg.optim.batch_size} is the global batch and cannot be split "
                              f"over {info.world_size} processes; use optim.batch_size >= {info.world_size} or fewer "
                              f"processes")


def failure_message(site: int, rnd: int, reason: str, checkpoint: Path | None) -> str:
    where = f"resume from {checkpoint} with --resume auto" if checkpoint else "no checkpoint yet: start again"
    return f"federation stopped: site {site} failed in round {rnd} ({reason}); {where}"


def run_round(cfg: Config, specs: Sequence[SiteSpec], state: ServerState, rnd: int, checkpoint: Path | None
              ) -> tuple[list[TrainReply], list[int]]:
    """Train every site (in site order) on the current global state; aggregate the replies."""
    replies, failed = [], []
    for spec in specs:
        aux = state.aggregator.aux_for_site(spec.site, rnd)
        try:
            reply, new_client = client_train(cfg, spec, state.clients[spec.site], state.aggregator.global_state,
                                             aux, rnd)
        except Exception as exc:  # a site's error: the policy decides, it is never swallowed silently
            if cfg.federation.on_failure == "abort":
                raise FederationError(failure_message(spec.site, rnd, str(exc), checkpoint)) from exc
            print(f"[fedlppa] round {rnd}: site {spec.site} failed ({exc}); left out of this round")
            failed.append(spec.site)
            continue
        state.clients[spec.site] = new_client
        replies.append(reply)
    if len(replies) < cfg.federation.min_sites:
        raise FederationError(failure_message(failed[0] if failed else -1, rnd,
                                              f"only {len(replies)} replies, fewer than federation.min_sites = "
                                              f"{cfg.federation.min_sites}", checkpoint))
    state.aggregator.aggregate(replies)
    return replies, failed


def evaluate_sites(cfg: Config, specs: Sequence[SiteSpec], eval_sites: Sequence[SiteData], state: ServerState,
                   rnd: int, keep: list | None = None) -> tuple[list[dict], dict[str, dict[str, float]]]:
    """Per-image rows and per-site summaries of every evaluation site's personalised model after ``rnd``
    (predictions appended to ``keep``, one array per site, when given)."""
    rows, per_site = [], {}
    centralized = cfg.federation.method in CENTRALIZED
    for k, site in enumerate(eval_sites):
        spec = specs[0] if centralized else specs[k]
        client = state.clients[0 if centralized else k]
        scored = SiteSpec(spec.site, spec.sup_type, SiteData(k, site.domain, site.sup_type, spec.data.train,
                                                             site.test))
        aux = state.aggregator.aux_for_site(spec.site, rnd + 1)
        site_rows, summary = client_evaluate(cfg, scored, client, state.aggregator.global_state, aux, rnd,
                                             keep)
        letter = SITE_LETTERS[k]
        rows += [{"site": letter, "domain": site.domain, **r} for r in site_rows]
        per_site[letter] = summary
    return rows, per_site


def round_row(rnd: int, replies: Sequence[TrainReply], failed: Sequence[int], state: ServerState) -> dict:
    """One ``metrics.csv`` row: per-site losses, ``failed_<site>`` (1 = left out this round), prompt similarity."""
    row: dict = {"round": rnd, "n_failed": float(len(failed))}
    row.update({f"failed_{SITE_LETTERS[c.site]}": float(c.site in failed) for c in state.clients})
    for r in replies:
        row.update({f"{k}_{SITE_LETTERS[r.site]}": v for k, v in r.metrics.items()})
    for key in ("loss", "pseudo_dice"):
        vals = [r.metrics[key] for r in replies if key in r.metrics]
        if vals:
            row[key] = float(np.nanmean(vals))
    sim = state.aggregator.similarity()
    if sim is not None:
        k = sim.shape[0]
        row.update({f"sim_{SITE_LETTERS[i]}{SITE_LETTERS[j]}": float(sim[i, j]) for i in range(k)
                    for j in range(i + 1, k)})
    return row


def _log(tracker: Tracker, row: dict) -> None:
    tracker.log({k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "round"}, step=row["round"])


def run_federation(cfg: Config, run: RunDir, specs: Sequence[SiteSpec], eval_sites: Sequence[SiteData],
                   resume_from: Path | None, tracker: Tracker) -> FederationRun:
    """All rounds (from the checkpoint's round + 1 when resuming), then the final per-site evaluation."""
    state = load_server_state(resume_from, cfg, len(specs)) if resume_from else new_server_state(cfg, specs)
    last = run.checkpoints / "last.pt"
    fed = cfg.federation
    for rnd in range(state.round + 1, fed.rounds + 1):
        replies, failed = run_round(cfg, specs, state, rnd, last if last.is_file() else None)
        row = round_row(rnd, replies, failed, state)
        if fed.eval_every and rnd % fed.eval_every == 0 and rnd < fed.rounds:
            _, per_site = evaluate_sites(cfg, specs, eval_sites, state, rnd)
            row.update({f"dice_{s}": v["dice"] for s, v in per_site.items()})
            row["dice"] = float(np.mean([v["dice"] for v in per_site.values()]))
        state.round = rnd
        state.history.append({k: (str(v) if isinstance(v, str) else float(v)) for k, v in row.items()})
        if is_main_process():
            save_server_state(last, cfg, state)
        _log(tracker, row)
    rows, per_site = evaluate_sites(cfg, specs, eval_sites, state, state.round)
    summary = summarise_sites(per_site)
    return FederationRun(run.path, rows, per_site, summary, state)


def summarise_sites(per_site: dict[str, dict[str, float]]) -> dict[str, float]:
    """Mean over sites of the per-site means (each site weighs the same), with per-site columns."""
    out: dict[str, float] = {}
    keys = [k for k in next(iter(per_site.values())) if k != "n_images"]
    for key in keys:
        out[key] = float(np.mean([v[key] for v in per_site.values()]))
    for site, vals in per_site.items():
        out[f"dice_{site}"] = vals["dice"]
        if "hd95_px" in vals:
            out[f"hd95_px_{site}"] = vals["hd95_px"]
    return out
