"""Pre-train the CPU-sized LPM of the embedded default on the synthetic texture source domain (see
``pretraining.py`` and ``source_domain.py``): the stand-in for the papers' ImageNet-21k ViT-B, so that the PETL
baselines and FPT+ transfer from a pre-trained network rather than read out random features.

    python pretrain_lpm.py [--config configs/default.yaml] [--steps 300] [--out FILE] [key=value ...]

Writes ``data/pretrained/fpt_plus/<hash of recipe + model.lpm>/lpm.safetensors`` and ``recipe.json`` and prints
the path; point ``model.pretrained`` at it (``configs/default.yaml`` does). ``reproduce.py`` runs this when the
configured file is missing. Threads: ``runtime.lpm_threads`` (0 = torch default).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from common.cli import DEFAULT_CONFIG
from common.config import ConfigError, load_config, print_config_and_exit
from common.runtime import apply_threads
from fpt_plus.pretraining import pretrain, weights_path
from fpt_plus.settings import Config, PretrainConfig

__all__ = ["main"]

PROJECT_DIR = Path(__file__).resolve().parent


def parse(argv: Sequence[str] | None) -> tuple[Config, PretrainConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(description="Pre-train the CPU LPM on the synthetic texture source domain.")
    parser.add_argument("--config", default=None, help=f"YAML config whose model.lpm is pre-trained "
                                                       f"(default {DEFAULT_CONFIG})")
    parser.add_argument("--out", default=None, help="weight file to write (default: the recipe's own path)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    for f in fields(PretrainConfig):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=None,
                            help=f"recipe: {f.name} (default {f.default})")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="dotted config overrides")
    args = parser.parse_intermixed_args(argv)
    try:
        cfg = load_config(Config, args.config or DEFAULT_CONFIG, args.overrides, search_dirs=[PROJECT_DIR])
        recipe = replace(PretrainConfig(), **{f.name: getattr(args, f.name) for f in fields(PretrainConfig)
                                               if getattr(args, f.name) is not None})
    except (ConfigError, ValueError) as exc:
        parser.error(str(exc))
    if args.print_config:
        print_config_and_exit(cfg)
    return cfg, recipe, args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    cfg, recipe, args = parse(argv)
    apply_threads(cfg.runtime.lpm_threads)
    out = Path(args.out) if args.out else weights_path(recipe, cfg.model.lpm)
    print(f"pre-training the LPM ({cfg.model.lpm.embed_dim} wide x {cfg.model.lpm.depth} blocks at "
          f"{cfg.model.lpm.img_size}^2) for {recipe.steps} steps -> {out}", flush=True)
    report = pretrain(recipe, cfg.model.lpm, out, progress=cfg.runtime.progress)
    print(json.dumps({k: report[k] for k in ("held_out_before", "held_out_after", "wall_s", "threads")}, indent=1))
    return report


if __name__ == "__main__":
    main()
