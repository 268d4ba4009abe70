"""Precompute static saliency maps into a PNG tree parallel to the images (paper Sec. II-A)::

    python -m spmix.saliency_maps --images DIR --out DIR [--method fine_grained] [--overwrite]

``train.py`` does the same for the images a split lists when ``saliency.precompute`` is true; this command is for
preparing maps ahead of time (e.g. on a CPU machine before a GPU run). ``--out`` must not be inside a real data
folder that should stay untouched: pass a folder of its own and ``saliency.root=<that folder>`` to training.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from spmix.saliency import METHODS, precompute_tree


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description="Precompute static saliency maps into a parallel PNG tree")
    parser.add_argument("--images", required=True, help="folder with the RGB images (searched recursively)")
    parser.add_argument("--out", required=True, help="output folder for <same relative path>.png saliency maps")
    parser.add_argument("--method", default="auto", choices=METHODS)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    record = precompute_tree(args.images, args.out, args.method, args.overwrite, progress=True)
    print(json.dumps(record))
    return record


if __name__ == "__main__":
    main()
