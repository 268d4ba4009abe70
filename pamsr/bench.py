"""Benchmark: tiled inference (official ``src/model/__init__.py::forward_tile``) vs whole-image inference on a full
padded polar image (``make bench-pamsr``). Reports HR megapixels per second and peak memory for each mode, on the
machine it runs on, and the tiled/whole ratios of both; writes ``runs/bench/pamsr/<timestamp>/bench.{json,csv}``.

Peak memory comes from :mod:`common.memory`: on CUDA the allocator's peak since a reset; on CPU each mode runs in a
fresh process (:func:`common.memory.peak_in_fresh_process`) whose ``forward_memory_mb`` is the peak RSS during the
forwards above the RSS after building the model and the input.

    python bench.py [--model paper|cpu] [--scale 2] [--size 1024] [--repeats 3] [--overlap N]

``paper``: SwinIR-M (embed 180, 6x6 blocks; the official network); ``cpu``: the CPU-sized default network.
Defaults: the paper network on CUDA, the CPU network on a 512 px image on CPU.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import torch

from common.config import load_config
from common.memory import current_rss_mb, peak_in_fresh_process, peak_memory_mb, reset_peak_memory
from common.rundir import resolve_path, write_env_json
from common.runtime import pick_device
from pamsr.inference import default_overlap, forward_tiled
from pamsr.models import build_model, count_parameters
from pamsr.settings import PROJECT_DIR, Config

__all__ = ["MODES", "measure", "measure_in_this_process", "main"]

MODES = ("whole", "tiled")


@torch.no_grad()
def measure(model: torch.nn.Module, lr: torch.Tensor, scale: int, mode: str, tile: int, overlap: int,
            repeats: int, device: torch.device) -> dict[str, float]:
    """Time ``repeats`` forwards (after one warm-up) of ``mode`` (tiled | whole) -> throughput and peak memory."""
    def run() -> torch.Tensor:
        return forward_tiled(model, lr, scale, tile, overlap) if mode == "tiled" else model(lr)

    if device.type == "cuda":
        torch.cuda.empty_cache()
    reset_peak_memory(device)
    try:
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        tic = time.perf_counter()
        for _ in range(repeats):
            out = run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = (time.perf_counter() - tic) / repeats
    except torch.OutOfMemoryError:
        return {"mode": mode, "status": "out of memory", "seconds": float("nan"), "mpix_per_s": float("nan"),
                "peak_memory_mb": peak_memory_mb(device)}
    mpix = out.shape[-1] * out.shape[-2] / 1e6
    return {"mode": mode, "status": "ok", "seconds": seconds, "mpix_per_s": mpix / seconds,
            "peak_memory_mb": peak_memory_mb(device)}


def build(kind: str, scale: int, size: int, device: torch.device) -> tuple[torch.nn.Module, torch.Tensor]:
    """The benchmarked network (``paper_x2.yaml`` or ``default.yaml``) and a random ``(1, 1, size/s, size/s)`` LR."""
    config = "paper_x2.yaml" if kind == "paper" else "default.yaml"
    cfg = load_config(Config, PROJECT_DIR / "configs" / config)
    torch.manual_seed(0)
    model = build_model(cfg.model, scale, cfg.data.patch_size).to(device).eval()
    lr = torch.rand(1, 1, size // scale, size // scale, device=device)
    return model, lr


def measure_in_this_process(kind: str, scale: int, size: int, mode: str, tile: int, overlap: int, repeats: int,
                            device: torch.device) -> dict[str, float]:
    """One mode; ``forward_memory_mb`` = peak during the forwards minus the memory after setup (CPU: RSS; where the
    CPU peak cannot be reset, the process's lifetime peak minus the RSS after setup)."""
    model, lr = build(kind, scale, size, device)
    before = torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else current_rss_mb() or 0.0
    row = measure(model, lr, scale, mode, tile, overlap, repeats, device)
    row["forward_memory_mb"] = row["peak_memory_mb"] - before
    return row


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="PAMSR tiled vs whole-image inference benchmark")
    parser.add_argument("--model", choices=["paper", "cpu"], default=None)
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--size", type=int, default=None, help="padded HR side (official 1024)")
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--overlap", type=int, default=None, help="LR tile overlap (default: official 64 - 32 // s)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="runs/bench/pamsr")
    parser.add_argument("--only-mode", choices=MODES, default=None,
                        help="measure one mode in this process and print it as JSON (used for the fresh processes)")
    return parser.parse_args(argv)


def run_modes(args: argparse.Namespace, device: torch.device, kind: str, size: int, overlap: int) -> list[dict]:
    """Both modes (CPU: each in a fresh process), with the tiled/whole ratios of throughput and memory."""
    rows = []
    for mode in MODES:
        if device.type == "cuda":
            row = measure_in_this_process(kind, args.scale, size, mode, args.tile, overlap, args.repeats, device)
        else:
            row = peak_in_fresh_process("pamsr.bench", [
                "--only-mode", mode, "--model", kind, "--scale", str(args.scale), "--size", str(size),
                "--tile", str(args.tile), "--overlap", str(overlap), "--repeats", str(args.repeats), "--device", "cpu"])
        row |= {"model": kind, "scale": args.scale, "hr_size": size, "tile": args.tile, "overlap": overlap,
                "device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
        rows.append(row)
    whole = rows[0]
    for row in rows:
        row["speed_vs_whole"] = row["mpix_per_s"] / whole["mpix_per_s"]
        row["memory_vs_whole"] = row["forward_memory_mb"] / whole["forward_memory_mb"]
    return rows


def write_outputs(rows: list[dict], out_root: str, device: torch.device) -> Path:
    out = resolve_path(out_root) / datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(rows, indent=2))
    with (out / "bench.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_env_json(out / "env.json", device)
    print(f"wrote {out}")
    return out


def main(argv: Sequence[str] | None = None) -> Path | None:
    args = parse_args(argv)
    device = pick_device(args.device)
    kind = args.model or ("paper" if device.type == "cuda" else "cpu")
    size = args.size or (1024 if device.type == "cuda" else 512)
    overlap = default_overlap(args.scale, args.tile) if args.overlap is None else args.overlap
    if args.only_mode:
        row = measure_in_this_process(kind, args.scale, size, args.only_mode, args.tile, overlap, args.repeats, device)
        print(json.dumps(row), flush=True)
        return None
    params = count_parameters(build(kind, args.scale, 64, torch.device("cpu"))[0])
    rows = [row | {"params": params} for row in run_modes(args, device, kind, size, overlap)]
    for row in rows:
        print(json.dumps(row), flush=True)
    return write_outputs(rows, args.out, device)


if __name__ == "__main__":
    main()
