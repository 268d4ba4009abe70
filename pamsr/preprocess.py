"""Preprocessing of real rotational-scan PAM data (paper: "a registration module across odd and even rows in the
preprocessing"; the official code has none, this is our design): register every
``<root>/<src>/<sample>/1_X1_X1.png`` (odd-row column shift by NCC, global or per band, optional sub-pixel), then
apply the 3x3 median filter, writing the official ``reg_mid`` layout and ``registration.csv`` (sample, estimated
shift, NCC) into a new folder ``<out>/<dst>`` (``--out`` defaults to ``--root``; a non-empty ``<dst>`` is refused, so
nothing is ever overwritten).

    python preprocess.py --root /data/pamsr --src raw --dst reg_mid [--out /data/pamsr_derived] [--subpixel]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from common.rundir import resolve_path
from pamsr.pipeline import register_folder
from pamsr.settings import RegistrationConfig

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description="Odd/even-row registration + 3x3 median of PAM polar scans")
    parser.add_argument("--root", required=True, help="dataset root holding <src>/<sample>/1_X1_X1.png")
    parser.add_argument("--src", default="raw")
    parser.add_argument("--dst", default="reg_mid")
    parser.add_argument("--out", default=None, help="root of the registered folder (default: --root)")
    parser.add_argument("--max-shift", type=int, default=8)
    parser.add_argument("--mode", choices=["global", "banded"], default="global")
    parser.add_argument("--band", type=int, default=64, help="rows per band in banded mode")
    parser.add_argument("--subpixel", action="store_true")
    parser.add_argument("--presmooth", type=float, default=1.0, help="column-wise Gaussian sigma before matching")
    parser.add_argument("--no-median", action="store_true", help="skip the 3x3 median (write registered only)")
    args = parser.parse_args(argv)
    reg = RegistrationConfig(args.max_shift, args.mode, args.band, args.subpixel, args.presmooth)
    out_root = resolve_path(args.out) if args.out else None
    out = register_folder(resolve_path(args.root), args.src, args.dst, reg, median=not args.no_median,
                          out_root=out_root)
    print(f"wrote {out} (see registration.csv)")
    return out


if __name__ == "__main__":
    main()
