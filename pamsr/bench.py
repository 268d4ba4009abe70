"""Benchmark of PAMSR inference (``make bench-pamsr``): whole-image vs tiled inference (official
``src/model/__init__.py::forward_tile``) over a grid of modes, on the machine it runs on. Every mode runs in a fresh
process (:func:`common.memory.peak_in_fresh_process`) and reports HR megapixels per second, the peak memory (CUDA:
the allocator's peak; CPU: peak RSS) and ``forward_memory_mb`` (the peak minus the memory after building model and
input), plus the ratios to the reference mode measured in the same run: whole image, fp32, eager, the attention
timm picks by default (for its Swin window attention: the materialised softmax(QK^T)V). Writes
``runs/bench/pamsr/<timestamp>/bench.{json,csv}`` (rewritten after every mode, so a stopped run keeps its rows).

Mode grid (each list comma-separated): ``--sizes`` (padded HR side), ``--overlaps`` (LR tile overlaps), whole image
(every precision x attention of the grid, or with ``--whole reference`` only the reference), ``--precisions``
(``fp32``, ``bf16``: bf16 only where torch reports hardware support, decided at run time, otherwise the row says
``unsupported``), ``--attention`` (``default``, ``fused``: timm's ``scaled_dot_product_attention`` path,
``materialised``), ``--compile`` (adds ``torch.compile`` of the reference mode), and ``--modes`` for single extra
modes ``size:overlap:precision:attention:compile`` (overlap ``whole`` or an int; compile ``off``, ``inductor``
or ``freezing`` = inductor with ``torch._inductor.config.freezing``: weights folded as constants, inference only).

Timing. One warm-up forward (eager: on one LR tile, which initialises the kernels without a second full-image
pass; compiled: on the timed shapes, i.e. the full image or one batch of ``--tile-batch`` tiles, which compiles;
``warmup_seconds``), then ``--repeats`` timed forwards. Tiled: every tile has the same shape and cost, so
``--timed-tiles N`` times only the first N tiles of the raster order and extrapolates the per-tile time to all tiles
of the image (``seconds``; ``seconds_measured`` is the timed part); the full-size output buffers are allocated as in
a full run, so the memory peak is that of a full run. ``--timed-tiles 0`` times every tile. Rows say which
(``timing``). ``--clock cpu`` times with the CPU seconds of the process instead of wall time (with ``--threads 1``:
the time on one otherwise idle core; for a machine shared with other jobs). bf16 and compiled rows (and, with
``--check-fp32``, every row) carry ``max_abs_diff_vs_fp32_eager``: the output difference on the first LR tile to
the eager fp32 network with the same weights.

    python bench.py [--model paper|cpu] [--sizes 1024] [--overlaps 8,16,48] [--precisions fp32,bf16]
                    [--attention default,fused] [--whole grid|reference] [--compile] [--modes 2048:8:fp32:default:off]
                    [--timed-tiles 4] [--tile-batch 4] [--repeats 1] [--threads 1] [--clock cpu]

``paper``: SwinIR-M (embed 180, 6x6 blocks; the official network); ``cpu``: the CPU-sized default network.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import torch

from common.config import load_config
from common.memory import current_rss_mb, peak_in_fresh_process, peak_memory_mb, reset_peak_memory
from common.rundir import resolve_path, write_env_json
from common.runtime import pick_device
from pamsr.inference import bf16_native, for_inference, forward_tiled, parse_inference_mode, tile_corners
from pamsr.models import build_model
from pamsr.settings import PROJECT_DIR, Config

__all__ = ["parse_mode", "measure", "measure_in_this_process", "mode_grid",
           "main"]

def mode(size: int, overlap: int | None, precision: str = "fp32", attention: str = "default",
         compiler: str = "off") -> dict:
    return {"size": size, "overlap": overlap, "precision": precision, "attention": attention, "compile": compiler}


def parse_mode(spec: str) -> dict:
    """``size:overlap:precision:attention:compile`` (overlap ``whole`` or an int) -> mode dict."""
    parts = spec.split(":")
    if len(parts) != 5:
        raise ValueError(f"mode {spec!r}: expected size:overlap:precision:attention:compile, "
                         f"e.g. 2048:8:fp32:default:off")
    size, overlap, rest = parts[0], parts[1], ":".join(parts[2:])
    try:
        inference = parse_inference_mode(rest)
    except ValueError as exc:
        raise ValueError(f"mode {spec!r}: {exc}") from None
    precision, attention, compiler = inference.values()
    return mode(int(size), None if overlap == "whole" else int(overlap), precision, attention, compiler)


@torch.no_grad()
def measure(model: torch.nn.Module, lr: torch.Tensor, scale: int, overlap: int | None, tile: int, repeats: int,
            device: torch.device, precision: str, compiled: bool = False, timed_tiles: int = 0,
            tile_batch: int = 16, clock: str = "wall") -> dict[str, float | str | int]:
    """Warm up, then time ``repeats`` forwards (``overlap None`` = whole image; tiled: the first ``timed_tiles``
    tiles, 0 = all, extrapolated to the whole image) -> seconds per image, HR MP/s, peak memory of the timed part.
    ``clock``: ``wall`` (elapsed time) or ``cpu`` (CPU seconds of this process, ``time.process_time``: with one
    thread the time an otherwise idle core would take, robust to other processes sharing the machine)."""
    h, w = lr.shape[-2:]
    n_total = len(tile_corners(h, w, tile, overlap)) if overlap is not None else 1
    n_timed = n_total if overlap is None or timed_tiles <= 0 else min(n_total, timed_tiles)

    def run(x: torch.Tensor, max_tiles: int | None = None) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            if overlap is None:
                return model(x)
            return forward_tiled(model, x, scale, tile, overlap, batch=tile_batch, max_tiles=max_tiles)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    now = time.process_time if clock == "cpu" else time.perf_counter
    try:
        tic = now()
        if not compiled:  # eager: one LR tile initialises the kernels; compiled: the timed shapes (compiles)
            run(lr[..., :tile, :tile])
        elif overlap is None:
            run(lr)
        else:
            run(lr, max_tiles=min(tile_batch, n_total))
        sync()
        warmup = now() - tic
        reset_peak_memory(device)
        tic, wall = now(), time.perf_counter()
        for _ in range(repeats):
            out = run(lr, max_tiles=None if n_timed == n_total else n_timed)
        sync()
        measured, wall = (now() - tic) / repeats, (time.perf_counter() - wall) / repeats
    except torch.OutOfMemoryError:
        return {"status": "out of memory", "seconds": float("nan"), "mpix_per_s": float("nan"),
                "peak_memory_mb": peak_memory_mb(device)}
    seconds = measured * n_total / n_timed
    mpix = out.shape[-1] * out.shape[-2] / 1e6
    timing = ("whole image" if overlap is None else
              f"all {n_total} tiles" if n_timed == n_total else
              f"first {n_timed} of {n_total} tiles timed, extrapolated (every tile costs the same)")
    return {"status": "ok", "clock": clock, "seconds": seconds, "seconds_measured": measured,
            "wall_seconds_measured": wall, "warmup_seconds": warmup,
            "mpix_per_s": mpix / seconds, "peak_memory_mb": peak_memory_mb(device), "tiles_total": n_total,
            "tiles_timed": n_timed, "timing": timing}


def build(kind: str, scale: int, size: int, device: torch.device) -> tuple[torch.nn.Module, torch.Tensor]:
    """The benchmarked network (``paper_x2.yaml`` or ``default.yaml``) and a random ``(1, 1, size/s, size/s)`` LR."""
    config = "paper_x2.yaml" if kind == "paper" else "default.yaml"
    cfg = load_config(Config, PROJECT_DIR / "configs" / config)
    torch.manual_seed(0)
    model = build_model(cfg.model, scale, cfg.data.patch_size).to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)  # inference; inductor freezing folds parameters that need no grad
    lr = torch.rand(1, 1, size // scale, size // scale, device=device)
    return model, lr


@torch.no_grad()
def output_error(model: torch.nn.Module, mode_: dict, args: argparse.Namespace, lr: torch.Tensor,
                 device: torch.device) -> float:
    """Max abs difference to the eager fp32 default-attention network on the first LR tile (compiled: the first
    tile batch, the shape it was compiled for); NaN for a compiled whole-image mode (a new shape would recompile)."""
    if mode_["overlap"] is None and mode_["compile"] != "off":
        return float("nan")
    n = args.tile_batch if mode_["compile"] != "off" else 1  # compiled: the warm-up's batch shape, no recompile
    corners = tile_corners(*lr.shape[-2:], args.tile, mode_["overlap"] or 0)[:n]
    tiles = torch.cat([lr[..., y:y + args.tile, x:x + args.tile] for y, x in corners], dim=0)
    reference = build(args.model, args.scale, args.tile * args.scale, device)[0]
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=mode_["precision"] == "bf16"):
        ours = model(tiles).float()
    return float((ours - reference(tiles)).abs().max())


def measure_in_this_process(mode_: dict, args: argparse.Namespace, device: torch.device) -> dict:
    """One mode; ``forward_memory_mb`` = peak during the timed forwards minus the memory after setup."""
    if mode_["precision"] == "bf16" and not bf16_native(device):
        return {**mode_, "status": "unsupported (no bf16 matmul support reported by torch)"}
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    model, lr = build(args.model, args.scale, mode_["size"], device)
    if mode_["compile"] != "off" and args.threads > 0:
        import torch._inductor.config as inductor_config

        inductor_config.compile_threads = args.threads
    model = for_inference(model, mode_["attention"], mode_["compile"])
    before = torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else current_rss_mb() or 0.0
    row = measure(model, lr, args.scale, mode_["overlap"], args.tile, args.repeats, device, mode_["precision"],
                  compiled=mode_["compile"] != "off", timed_tiles=args.timed_tiles, tile_batch=args.tile_batch,
                  clock=args.clock)
    row = {**mode_, **row, "forward_memory_mb": row["peak_memory_mb"] - before}
    if row["status"] == "ok" and (mode_["precision"] != "fp32" or mode_["compile"] != "off" or args.check_fp32):
        row["max_abs_diff_vs_fp32_eager"] = output_error(model, mode_, args, lr, device)  # after the memory peak
    return row


def mode_grid(args: argparse.Namespace) -> list[dict]:
    """Reference first (whole, fp32, default attention, eager), then every other combination asked for."""
    ref = mode(args.sizes[0], None)
    modes = [ref]
    for size in args.sizes:
        for overlap in [None, *args.overlaps]:
            for precision in args.precisions:
                for attention in args.attention:
                    candidate = mode(size, overlap, precision, attention)
                    if overlap is None and args.whole == "reference" and candidate != mode(size, None):
                        continue
                    if candidate not in modes:
                        modes.append(candidate)
    if args.compile:
        modes.append(ref | {"compile": "inductor"})
    return modes + [m for m in args.modes if m not in modes]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="PAMSR inference benchmark: whole vs tiled, precision, attention")
    parser.add_argument("--model", choices=["paper", "cpu"], default="paper")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--sizes", default="1024", help="padded HR sides, e.g. 512,1024,2048 (official 1024)")
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--overlaps", default="8,16,48", help="LR tile overlaps (official test mode at x2: 48)")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--attention", default="default")
    parser.add_argument("--whole", choices=["grid", "reference"], default="grid",
                        help="whole-image rows: every precision x attention, or only the reference")
    parser.add_argument("--compile", action="store_true", help="add torch.compile of the reference mode")
    parser.add_argument("--modes", default="", help="extra modes size:overlap:precision:attention:compile, ...")
    parser.add_argument("--timed-tiles", type=int, default=0, help="tiled: time the first N tiles (0 = all)")
    parser.add_argument("--tile-batch", type=int, default=16, help="tiles per forward (official: all at once)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads per mode (0 = torch default)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall time, or CPU seconds of the process (a shared CPU; use with --threads 1)")
    parser.add_argument("--check-fp32", action="store_true",
                        help="output difference to the eager fp32 network also for eager fp32 rows")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per mode (SwinIR-M tiles slowly on a CPU)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="runs/bench/pamsr")
    parser.add_argument("--one-mode", default=None, help=argparse.SUPPRESS)  # JSON mode, run in this process
    args = parser.parse_args(argv)
    args.sizes = [int(x) for x in args.sizes.split(",") if x]
    args.overlaps = [int(x) for x in args.overlaps.split(",") if x]
    args.precisions = [x for x in args.precisions.split(",") if x]
    args.attention = [x for x in args.attention.split(",") if x]
    bad = [x for x in args.precisions if x not in ("fp32", "bf16")] + [
        x for x in args.attention if x not in ("default", "fused", "materialised")]
    if bad:
        parser.error(f"unknown precision/attention {bad}; use fp32,bf16 and default,fused,materialised")
    if args.timed_tiles % args.tile_batch:
        parser.error(f"--timed-tiles {args.timed_tiles} must be a multiple of --tile-batch {args.tile_batch} "
                     f"(a smaller last batch would be a new shape for torch.compile)")
    try:
        args.modes = [parse_mode(x) for x in args.modes.split(",") if x]
    except ValueError as exc:
        parser.error(str(exc))
    return args


def child_args(args: argparse.Namespace, mode_: dict) -> list[str]:
    return ["--model", args.model, "--scale", str(args.scale), "--tile", str(args.tile), "--repeats",
            str(args.repeats), "--device", args.device, "--timed-tiles", str(args.timed_tiles), "--tile-batch",
            str(args.tile_batch), "--threads", str(args.threads), "--clock", args.clock,
            *(["--check-fp32"] if args.check_fp32 else []), "--one-mode", json.dumps(mode_)]


def write_outputs(rows: list[dict], out: Path, device: torch.device) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(rows, indent=2))
    with (out / "bench.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)
    write_env_json(out / "env.json", device)
    return out


def run_mode(mode_: dict, args: argparse.Namespace, device: torch.device) -> dict:
    """One mode in a fresh process (bf16 without support: answered here, no process needed); failures -> a row."""
    if mode_["precision"] == "bf16" and not bf16_native(device):  # decided at run time
        return measure_in_this_process(mode_, args, device)
    try:
        return peak_in_fresh_process("pamsr.bench", child_args(args, mode_), timeout=args.timeout)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:  # a failed mode is a row, not fatal
        return {**mode_, "status": f"failed: {type(exc).__name__}: {str(exc).strip().splitlines()[-1][:200]}"}


def main(argv: Sequence[str] | None = None) -> Path | None:
    args = parse_args(argv)
    device = pick_device(args.device)
    if args.one_mode:
        print(json.dumps(measure_in_this_process(json.loads(args.one_mode), args, device)), flush=True)
        return None
    params = sum(p.numel() for p in build(args.model, args.scale, 64, torch.device("cpu"))[0].parameters())
    out = resolve_path(args.out) / datetime.now().strftime("%Y%m%d-%H%M%S")
    print(f"bench: {args.model} network ({params:,} parameters), x{args.scale}, device {device}; tiled modes "
          + (f"time the first {args.timed_tiles} tiles and extrapolate" if args.timed_tiles > 0 else "time all tiles")
          + f"; clock: {'CPU seconds of the process' if args.clock == 'cpu' else 'wall time'}", flush=True)
    rows: list[dict] = []
    for mode_ in mode_grid(args):
        row = run_mode(mode_, args, device) | {"model": args.model, "params": params, "device": str(device)}
        ref = rows[0] if rows else row
        if row.get("status") == "ok" and ref.get("status") == "ok":
            row["speed_vs_reference"] = row["mpix_per_s"] / ref["mpix_per_s"]
            row["memory_vs_reference"] = row["forward_memory_mb"] / ref["forward_memory_mb"]
        rows.append(row)
        print(json.dumps(row), flush=True)
        write_outputs(rows, out, device)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
