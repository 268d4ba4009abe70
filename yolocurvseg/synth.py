"""Write the hidden-domain vessel dataset (``hidden_domain.py``) in the DRIVE layout, as the default config does on
first use.

``python synth.py [--out data/synthetic/yolocurvseg/drive_like] [--n-train 12] [--n-test 8] [--size 128] [--seed 0]``

The folder must be new, empty, or a set this generator wrote with the same parameters (its stamp file); anything
else (a real dataset, a set with other parameters) is refused and left untouched.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from yolocurvseg.hidden_domain import ensure_hidden_domain

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description="Write the hidden-domain vessel dataset in the DRIVE layout")
    parser.add_argument("--out", default="data/synthetic/yolocurvseg/drive_like")
    parser.add_argument("--n-train", type=int, default=12)
    parser.add_argument("--n-test", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if min(args.n_train, args.n_test) < 1 or args.size < 16:
        parser.error("--n-train and --n-test must be >= 1 and --size >= 16")
    root = ensure_hidden_domain(args.out, args.n_train, args.n_test, args.size, args.seed)
    print(f"hidden domain in {root}")
    return root


if __name__ == "__main__":
    main()
