"""Train one FedLPPA method (or baseline) with the sequential federation driver.

``python train.py [--config configs/default.yaml] [--data-root DIR] [--resume auto|PATH] [--init-weights PATH]
[federation.method=fedavg ...]``

Writes ``runs/fedlppa/<experiment>/<timestamp>/``: ``metrics.csv`` (one row per round: per-site losses,
pseudo-label Dice, prompt similarity, failed sites), ``checkpoints/last.pt`` (full federation state after every
round), ``eval/summary.csv`` (mean over sites and one row per site) + ``eval/per_case.csv`` (per test image) of the
final-round personalised models, and ``figures/`` (per-site Dice, prompt similarity, pseudo-label Dice, overlays).

The centralised rows also run under torchrun (``python -m torch.distributed.run --nproc_per_node=N train.py ...
federation.method=centralized_full``): DDP over the pooled sites, the global ``optim.batch_size`` split over the
ranks, the test cases scored once across the ranks, one run folder written by rank 0. Federated methods refuse it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from common.checkpoint import load_init_weights
from common.cli import parse_train, train_parser
from common.rundir import open_run
from common.runtime import (
    barrier,
    cleanup_distributed,
    dist_info,
    init_distributed,
    is_main_process,
    main_process_first,
)
from common.tracking import Tracker, write_eval_tables
from fedlppa import figures
from fedlppa.federation import client_device, make_site_model
from fedlppa.fl_sequential import (
    FederationRun,
    check_world_size,
    new_server_state,
    run_federation,
    save_server_state,
)
from fedlppa.pipeline import prepare_sites
from fedlppa.settings import Config

__all__ = ["run", "write_outputs", "main"]

PROJECT_DIR = Path(__file__).resolve().parent


def _init_from(cfg: Config, specs: list, init_weights: str, run_dir: Path) -> Path:
    """``--init-weights``: theta_0 from another checkpoint (written as this run's round-0 ``last.pt``)."""
    model = make_site_model(cfg, 0, cfg.data.sup_types[0])
    load_init_weights(model, init_weights)
    state = new_server_state(cfg, specs)
    state.aggregator.global_state = {k: v.clone() for k, v in model.state_dict().items()}
    path = run_dir / "checkpoints" / "last.pt"
    if is_main_process():
        save_server_state(path, cfg, state)
    barrier()
    return path


def write_outputs(result: FederationRun, eval_sites: list, cfg: Config, predictions: list | None = None) -> None:
    run = Path(result.run_dir)
    summary_rows = [{"site": "mean", **result.summary}] + [{"site": s, **v} for s, v in result.per_site.items()]
    write_eval_tables(run / "eval", summary_rows, result.rows)
    title = f"{cfg.federation.method}: mean Dice {result.summary['dice']:.3f}"
    figures.per_site_dice(result.per_site, run / "figures" / "per_site_dice.png", title)
    figures.similarity_curves(result.state.history, run / "figures" / "prompt_similarity.png")
    figures.pseudo_dice_curve(result.state.history, run / "figures" / "pseudo_label_dice.png")
    if predictions:
        figures.overlays(eval_sites, dict(enumerate(predictions)), run / "figures" / "overlays.png",
                         cfg.eval.overlays)


def run(cfg: Config, resume: str | None = None, init_weights: str | None = None) -> FederationRun:
    """Data (checked first), run folder (new or resumed), all rounds, final evaluation, tables and figures."""
    check_world_size(cfg, dist_info())
    info = init_distributed()
    with main_process_first():  # rank 0 generates a missing synthetic set, the others then read it
        specs, eval_sites = prepare_sites(cfg)
    opened = open_run("fedlppa", cfg, resume=resume, device=client_device(cfg))
    resume_from = opened.resume_from
    if init_weights and resume_from is None:
        resume_from = _init_from(cfg, specs, init_weights, opened.run.path)
    with Tracker(opened.run.path) as tracker:
        result = run_federation(cfg, opened.run, specs, eval_sites, resume_from, tracker)
    if info.is_main:
        write_outputs(result, eval_sites, cfg)
        per_site = ", ".join(f"{s} {v['dice']:.3f}" for s, v in result.per_site.items())
        if info.distributed:
            print(f"[fedlppa] torchrun: {info.world_size} processes, the same parameters on every rank after every "
                  f"round trained")
        print(f"[fedlppa] {cfg.federation.method} ({cfg.experiment}): mean Dice {result.summary['dice']:.4f} "
              f"({per_site}) -> {result.run_dir}")
    cleanup_distributed()
    return result


def main(argv: Sequence[str] | None = None) -> FederationRun:
    cfg, args = parse_train(Config, argv, train_parser("Train a FedLPPA method (sequential federation)"),
                            PROJECT_DIR)
    return run(cfg, args.resume, args.init_weights)


if __name__ == "__main__":
    main()
