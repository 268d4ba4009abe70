"""Write the synthetic long-tailed ISIC-2018-like set (``synthetic_set.py``) in the ISIC 2018 Task 3 layout::

    python -m spmix.synth [--out data/synthetic/spmix] [--train 400 --val-per-class 20 --test-per-class 30 --seed 0]
                          [--tail-pool 1]

The folder is created by the generator (``<out>.partial`` renamed at the end, stamped with the parameters); a
folder that already holds other files (e.g. the real ISIC archives) or a set of other parameters is refused.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from spmix.synthetic_set import ensure_synthetic


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description="Write a synthetic long-tailed ISIC 2018 Task 3 style data set")
    parser.add_argument("--out", default="data/synthetic/spmix")
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--val-per-class", type=int, default=20)
    parser.add_argument("--test-per-class", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tail-pool", type=int, default=1, help="training contexts per tail class")
    args = parser.parse_args(argv)
    from common.datasets import DatasetFolderError
    from common.rundir import resolve_path

    try:
        root = ensure_synthetic(resolve_path(args.out), args.train, args.val_per_class, args.test_per_class,
                                args.seed, tail_pool=args.tail_pool, progress=True)
    except DatasetFolderError as exc:
        parser.error(str(exc))
    print(f"synthetic set ready: {root}")
    return root


if __name__ == "__main__":
    main()
