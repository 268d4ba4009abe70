"""Throughput of the two generation stages (curve generation and synthesis) for 512 x 512 images.

- curve generation: SCA growth (KD-tree) + anti-aliased rendering per dataset preset, images/s;
- synthesis: naive composite + CUT generator forward (official ``resnet_9blocks``, ngf 64, and our CPU config
  ngf 8 / 2 blocks), images/s, on the auto-selected device.

``python bench.py [--size 512] [--n-curves 5] [--n-synth 2]`` -> ``runs/bench/yolocurvseg/<timestamp>/bench.{json,csv}``
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from common.rundir import resolve_path, write_env_json
from common.runtime import apply_threads, pick_device
from common.synthetic import smooth_field
from yolocurvseg.background import composite
from yolocurvseg.sca import PRESETS, generate_curves, preset
from yolocurvseg.synthesizer import CUTConfig, CUTModel

__all__ = ["bench_curves", "bench_synthesis", "main"]


def bench_curves(size: int, n: int, name: str) -> dict[str, float]:
    p = preset(name)
    nodes = []
    start = time.perf_counter()
    for i in range(n):
        nodes.append(len(generate_curves((size, size), p, i).tree.pos))
    dt = time.perf_counter() - start
    return {"stage": "curves", "variant": name, "size": size, "images": n, "seconds": dt,
            "images_per_s": n / dt, "mean_nodes": float(np.mean(nodes))}


@torch.no_grad()
def bench_synthesis(size: int, n: int, ngf: int, n_blocks: int, device: torch.device) -> dict[str, float]:
    model = CUTModel(CUTConfig(ngf=ngf, ndf=ngf, n_blocks=n_blocks,
                               nce_layers=[0, 4, 8, 12, 12 + n_blocks - 1])).to(device).eval()
    bg = smooth_field((size, size), 20, 0)
    curves = generate_curves((size, size), preset("drive"), 0).intensity
    x = torch.from_numpy(composite(bg, curves, 0.2, "dark"))[None, None].to(device) * 2 - 1
    model.translate(x)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        img = composite(bg, curves, 0.2, "dark")
        model.translate(torch.from_numpy(img)[None, None].to(device) * 2 - 1)
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - start
    return {"stage": "synthesis", "variant": f"cut_ngf{ngf}_{n_blocks}blocks", "size": size, "images": n,
            "seconds": dt, "images_per_s": n / dt, "device": str(device)}


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description="YoloCurvSeg generation throughput (512 x 512)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--n-curves", type=int, default=5)
    parser.add_argument("--n-synth", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="runs/bench/yolocurvseg")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    device = pick_device(args.device)
    rows = [bench_curves(args.size, args.n_curves, name) for name in sorted(PRESETS)]
    rows += [bench_synthesis(args.size, args.n_synth, 64, 9, device),
             bench_synthesis(args.size, args.n_synth, 8, 2, device)]
    out = resolve_path(args.out) / datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out / "bench.csv", index=False)
    (out / "bench.json").write_text(json.dumps(rows, indent=2))
    write_env_json(out / "env.json", device)
    for r in rows:
        print(f"{r['stage']:9s} {r['variant']:22s} {r['images_per_s']:8.3f} images/s ({args.size}^2)")
    return out


if __name__ == "__main__":
    main()
