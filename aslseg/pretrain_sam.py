"""Pre-train the tiny SAM on generic shapes (the CPU stand-in for SAM's SA-1B knowledge; see ``sam_prior.py``).

``python pretrain_sam.py [--config configs/default.yaml] [key=value ...]``: trains once per setting and caches the
weights and a report (held-out Dice vs the box's inscribed ellipse) under ``sam_pretrain.cache_dir``. Under
``torchrun --nproc_per_node=N pretrain_sam.py ...`` the ranks share every step's images (DDP) and rank 0 writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from aslseg.sam_prior import ensure_pretrained
from aslseg.settings import Config

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> Path:
    from common.cli import parse_train, train_parser
    from common.runtime import cleanup_distributed, is_main_process, setup_runtime

    parser = train_parser("Pre-train the tiny SAM on generic shapes (cached)")
    cfg, _ = parse_train(Config, argv, parser, Path(__file__).resolve().parent)
    setup_runtime(cfg.runtime, cfg.sam_pretrain.seed)
    path = ensure_pretrained(cfg.sam_pretrain, cfg.data.size, cfg.runtime.progress, cfg.sam.mask_prompt)
    if is_main_process():
        print(path.with_suffix(".json").read_text())
    cleanup_distributed()
    return path


if __name__ == "__main__":
    main()
