"""Preloading (FPT paper Sec. 2.4; official preload.py): run the frozen LPM once per image and cache the selected
keys and values of the tapped layers as safetensors ``(L, H, k, d)`` (fp32 by default, fp16 optional).

Training from the cache never builds the LPM. Files that already exist are kept (re-running resumes an
interrupted preload); a cache written for another variant/LPM/normalisation is refused (meta.json).
``train.py`` builds a missing cache itself; this entry point does it alone (e.g. on a GPU box).

    python preload.py [--config configs/default.yaml] [model.method=fpt] [data.preload_dtype=fp16]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from common.cli import parse_train
from common.runtime import setup_runtime
from fpt_plus.data import PreloadCache
from fpt_plus.pipeline import prepare_data, run_preload
from fpt_plus.settings import FPT_METHODS, Config

__all__ = ["main"]

PROJECT_DIR = Path(__file__).resolve().parent


def main(argv: Sequence[str] | None = None) -> PreloadCache:
    parser = argparse.ArgumentParser(description="Cache the frozen LPM's selected keys/values (FPT / FPT+).")
    parser.add_argument("--config", default=None, help="YAML config (default configs/default.yaml)")
    parser.add_argument("--data-root", default=None, help="real dataset root (sets data.synthetic=false)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value")
    cfg, _ = parse_train(Config, argv, parser, PROJECT_DIR)
    if cfg.model.method not in FPT_METHODS:
        parser.error(f"model.method={cfg.model.method}: preloading applies to fpt_plus and fpt only")
    device = setup_runtime(cfg.runtime, cfg.seed)
    cache = run_preload(cfg, prepare_data(cfg), device=device)
    print(f"preload cache: {cache.folder} ({cache.shape()} per image, {cfg.data.preload_dtype})")
    return cache


if __name__ == "__main__":
    main()
