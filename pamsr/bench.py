"""Benchmark: tiled inference (official ``forward_tile``) vs whole-image inference on a full padded polar image
(issue 7, ``make bench-pamsr``). Reports HR megapixels per second and peak memory for each mode, on the machine it
runs on, and the tiled/whole ratios of both; writes ``runs/bench/pamsr/<timestamp>/bench.{json,csv}``. On CPU each
mode runs in a fresh process so that its peak RSS is its own (``forward_memory_mb``: above the RSS after setup).

    python bench.py [--model paper|cpu] [--scale 2] [--size 1024] [--repeats 3] [--overlap N]

``paper``: SwinIR-M (embed 180, 6x6 blocks; the official network); ``cpu``: the CPU-sized default network.
Defaults: the paper network on CUDA, the CPU network on a 512 px image on CPU.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing as mp
import resource
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from pathlib import Path

import torch

from common.config import load_config
from common.rundir import resolve_path, write_env_json
from common.runtime import pick_device
from pamsr.inference import default_overlap, forward_tiled
from pamsr.models import build_model, count_parameters
from pamsr.settings import Config
from pamsr.train import PROJECT_DIR

__all__ = ["measure", "main"]


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (Linux: KiB)


@torch.no_grad()
def measure(model: torch.nn.Module, lr: torch.Tensor, scale: int, mode: str, tile: int, overlap: int,
            repeats: int, device: torch.device) -> dict[str, float]:
    """Time ``repeats`` forwards (after one warm-up) of ``mode`` (tiled | whole) -> throughput and peak memory."""
    def run() -> torch.Tensor:
        return forward_tiled(model, lr, scale, tile, overlap) if mode == "tiled" else model(lr)

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
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
                "peak_memory_mb": _peak_memory_mb(device)}
    mpix = out.shape[-1] * out.shape[-2] / 1e6
    return {"mode": mode, "status": "ok", "seconds": seconds, "mpix_per_s": mpix / seconds,
            "peak_memory_mb": _peak_memory_mb(device)}


def _setup(kind: str, scale: int, size: int, device: torch.device) -> tuple[torch.nn.Module, torch.Tensor]:
    config = "paper_x2.yaml" if kind == "paper" else "default.yaml"
    cfg = load_config(Config, PROJECT_DIR / "configs" / config)
    torch.manual_seed(0)
    model = build_model(cfg.model, scale, cfg.data.patch_size).to(device).eval()
    lr = torch.rand(1, 1, size // scale, size // scale, device=device)
    return model, lr


def _status_mb(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process from /proc (Linux), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def _measure_fresh_process(kind: str, scale: int, size: int, mode: str, tile: int, overlap: int, repeats: int
                           ) -> dict[str, float]:
    """CPU: one mode in a new process; ``forward_memory_mb`` = peak RSS during the forwards minus the RSS after
    building the model and the input (the peak counter is reset first via /proc/self/clear_refs; where that is not
    available, the process's lifetime peak is used instead)."""
    device = torch.device("cpu")
    model, lr = _setup(kind, scale, size, device)
    before = _status_mb("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        reset = True
    except OSError:
        reset = False
    row = measure(model, lr, scale, mode, tile, overlap, repeats, device)
    row["forward_memory_mb"] = (_status_mb("VmHWM") if reset else row["peak_memory_mb"]) - before
    return row


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description="PAMSR tiled vs whole-image inference benchmark")
    parser.add_argument("--model", choices=["paper", "cpu"], default=None)
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--size", type=int, default=None, help="padded HR side (official 1024)")
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--overlap", type=int, default=None, help="LR tile overlap (default: official 64 - 32 // s)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="runs/bench/pamsr")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    kind = args.model or ("paper" if device.type == "cuda" else "cpu")
    size = args.size or (1024 if device.type == "cuda" else 512)
    overlap = default_overlap(args.scale, args.tile) if args.overlap is None else args.overlap
    params = count_parameters(_setup(kind, args.scale, 64, torch.device("cpu"))[0])
    if device.type == "cuda":
        model, lr = _setup(kind, args.scale, size, device)
    rows = []
    for mode in ("whole", "tiled"):
        if device.type == "cuda":
            row = measure(model, lr, args.scale, mode, args.tile, overlap, args.repeats, device)
            row["forward_memory_mb"] = row["peak_memory_mb"]
        else:
            with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
                row = pool.submit(_measure_fresh_process, kind, args.scale, size, mode, args.tile, overlap,
                                  args.repeats).result()
        row |= {"model": kind, "params": params, "scale": args.scale, "hr_size": size,
                "tile": args.tile, "overlap": overlap, "device": str(device),
                "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
        rows.append(row)
    whole = rows[0]
    for row in rows:  # the ratios the issue asks for: tiled relative to whole-image inference, same run
        row["speed_vs_whole"] = row["mpix_per_s"] / whole["mpix_per_s"]
        row["memory_vs_whole"] = row["forward_memory_mb"] / whole["forward_memory_mb"]
        print(json.dumps(row), flush=True)
    out = resolve_path(args.out) / datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(rows, indent=2))
    with (out / "bench.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_env_json(out / "env.json", device)
    print(f"wrote {out}")
    return out

if __name__ == "__main__":
    main()
