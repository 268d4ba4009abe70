"""Downstream evaluation of a pre-trained PRIOR image encoder: linear probe, segmentation, detection.

    python finetune.py --config configs/default.yaml finetune.task=probe finetune.dataset=chexpert \\
        finetune.fraction=0.1 finetune.init=/path/to/checkpoints/last.pt
    python finetune.py --config configs/rsna.yaml finetune.task=seg finetune.init=none     # random init baseline
    python finetune.py --config configs/object_cxr.yaml finetune.task=det finetune.init=/path/to/last.pt

Writes ``runs/prior/<experiment>-<task>-<dataset>/<timestamp>/eval/{summary,per_case}.csv``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from common.checkpoint import load_checkpoint
from common.cli import parse_train, train_parser
from common.rundir import open_run, resolve_path
from common.runtime import setup_runtime
from common.tracking import write_eval_tables
from prior.detection import build_detector, evaluate_det, train_det
from prior.finetuning import SegNet, evaluate_seg, task_data, train_probe, train_seg
from prior.models import build_image_encoder
from prior.settings import Config

__all__ = ["PROJECT_DIR", "load_encoder_weights", "run_finetune", "main"]

PROJECT_DIR = Path(__file__).resolve().parent


def load_encoder_weights(encoder, init: str) -> str:
    """``finetune.init``: ``none`` (random initialisation) or a pre-training checkpoint whose ``image_encoder.*``
    weights are loaded (strict: a checkpoint of another geometry is an error)."""
    if init == "none":
        return "random initialisation"
    state = load_checkpoint(resolve_path(init))["model"]
    sub = {k[len("image_encoder."):]: v for k, v in state.items() if k.startswith("image_encoder.")}
    if not sub:
        raise ValueError(f"finetune.init={init}: no image_encoder.* weights in that checkpoint")
    encoder.load_state_dict(sub)
    return f"image encoder of {init}"


def run_finetune(cfg: Config) -> tuple[Path, dict]:
    """Run ``cfg.finetune`` and return the run folder and the summary metrics."""
    device = setup_runtime(cfg.runtime, cfg.seed)
    ft = cfg.finetune
    data = task_data(cfg)
    encoder = build_image_encoder(cfg.model, cfg.data.image_size).to(device)
    source = load_encoder_weights(encoder, ft.init)
    run = open_run("prior", cfg, device=device, experiment=f"{cfg.experiment}-{ft.task}-{ft.dataset}").run
    print(f"{ft.task} on {ft.dataset} ({len(data.train_paths)} train / {len(data.test_paths)} test, fraction "
          f"{ft.fraction}) from {source}; run {run.path}")
    per_case: list[dict] = []
    if ft.task == "probe":
        summary = train_probe(encoder, data, cfg, device)
    elif ft.task == "det":
        det = build_detector(encoder, cfg.data.image_size, ft.det_width, ft.det_head_convs).to(device)
        summary, per_case = evaluate_det(train_det(det, data, cfg, device), data, cfg, device)
    else:
        net = train_seg(SegNet(encoder).to(device), data, cfg, device)
        summary, per_case = evaluate_seg(net, data, cfg, device)
    summary = {"task": ft.task, "dataset": ft.dataset, "fraction": ft.fraction, "init": ft.init, **summary}
    write_eval_tables(run.eval, summary, per_case)
    print(" ".join(f"{k} {v:.4f}" for k, v in summary.items() if isinstance(v, float)))
    return run.path, summary


def main(argv: Sequence[str] | None = None) -> dict:
    parser = train_parser("Fine-tune / probe a PRIOR image encoder on a downstream task")
    cfg, args = parse_train(Config, argv, parser, PROJECT_DIR)
    if args.resume or args.init_weights:
        parser.error("finetune.py trains in one go: use finetune.init=<pre-training checkpoint> instead of "
                     "--resume / --init-weights")
    return run_finetune(cfg)[1]


if __name__ == "__main__":
    main()
