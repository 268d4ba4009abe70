"""Benchmark of PAMSR inference (``make bench-pamsr``): whole-image vs tiled inference (official
``src/model/__init__.py::forward_tile``) over a grid of modes, on the machine it runs on. Every mode runs in a fresh
process (:func:`common.memory.peak_in_fresh_process`) and reports HR megapixels per second, the peak memory (CUDA:
the allocator's peak; CPU: peak RSS) and ``forward_memory_mb`` (the peak minus the memory after building model and
input), plus the ratios to the reference mode measured in the same run: whole image, fp32, eager, the attention
timm picks by default. Writes ``runs/bench/pamsr/<timestamp>/bench.{json,csv}``.

Mode grid (each list comma-separated): ``--sizes`` (padded HR side), ``--overlaps`` (LR tile overlaps; ``whole``
is always measured), ``--precisions`` (``fp32``, ``bf16``: bf16 only where torch reports hardware support, decided
at run time, otherwise the row says ``unsupported``), ``--attention`` (``default``, ``fused``: timm's
``scaled_dot_product_attention`` path, ``materialised``: the explicit softmax(QK^T)V), ``--compile`` (adds
``torch.compile`` of the reference mode).

    python bench.py [--model paper|cpu] [--sizes 512,1024] [--overlaps 8,16,48] [--precisions fp32,bf16]
                    [--attention default,fused,materialised] [--compile] [--repeats 1]

``paper``: SwinIR-M (embed 180, 6x6 blocks; the official network); ``cpu``: the CPU-sized default network.
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
from pamsr.inference import forward_tiled
from pamsr.models import build_model, count_parameters
from pamsr.settings import PROJECT_DIR, Config

__all__ = ["bf16_supported", "set_attention", "measure", "measure_in_this_process", "mode_grid", "main"]


def bf16_supported(device: torch.device) -> bool:
    """bf16 matmuls in hardware: CUDA ``is_bf16_supported``; CPU ``torch.backends.mkldnn`` with AVX512-BF16/AMX
    (``torch.cpu._is_avx512_bf16_supported`` where torch has it; else the reported CPU capability)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    if probe is not None:
        return bool(probe())
    return "AMX" in torch.backends.cpu.get_cpu_capability()


def set_attention(model: torch.nn.Module, attention: str) -> int:
    """Switch every timm attention module to the fused (``scaled_dot_product_attention``) or the materialised path;
    ``default`` leaves timm's choice. Returns the number of modules switched."""
    if attention == "default":
        return 0
    modules = [m for m in model.modules() if hasattr(m, "fused_attn")]
    for module in modules:
        module.fused_attn = attention == "fused"
    return len(modules)


@torch.no_grad()
def measure(model: torch.nn.Module, lr: torch.Tensor, scale: int, overlap: int | None, tile: int, repeats: int,
            device: torch.device, precision: str) -> dict[str, float]:
    """Time ``repeats`` forwards after one warm-up (``overlap None`` = whole image) -> seconds, MP/s, peak memory."""
    def run() -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            return forward_tiled(model, lr, scale, tile, overlap) if overlap is not None else model(lr)

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
        return {"status": "out of memory", "seconds": float("nan"), "mpix_per_s": float("nan"),
                "peak_memory_mb": peak_memory_mb(device)}
    mpix = out.shape[-1] * out.shape[-2] / 1e6
    return {"status": "ok", "seconds": seconds, "mpix_per_s": mpix / seconds, "peak_memory_mb": peak_memory_mb(device)}


def build(kind: str, scale: int, size: int, device: torch.device) -> tuple[torch.nn.Module, torch.Tensor]:
    """The benchmarked network (``paper_x2.yaml`` or ``default.yaml``) and a random ``(1, 1, size/s, size/s)`` LR."""
    config = "paper_x2.yaml" if kind == "paper" else "default.yaml"
    cfg = load_config(Config, PROJECT_DIR / "configs" / config)
    torch.manual_seed(0)
    model = build_model(cfg.model, scale, cfg.data.patch_size).to(device).eval()
    lr = torch.rand(1, 1, size // scale, size // scale, device=device)
    return model, lr


def measure_in_this_process(mode: dict, args: argparse.Namespace, device: torch.device) -> dict:
    """One mode; ``forward_memory_mb`` = peak during the forwards minus the memory after setup."""
    if mode["precision"] == "bf16" and not bf16_supported(device):
        return {**mode, "status": "unsupported (no bf16 matmul support reported by torch)"}
    model, lr = build(args.model, args.scale, mode["size"], device)
    set_attention(model, mode["attention"])
    if mode["compile"]:
        model = torch.compile(model)
    before = torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else current_rss_mb() or 0.0
    row = measure(model, lr, args.scale, mode["overlap"], args.tile, args.repeats, device, mode["precision"])
    return {**mode, **row, "forward_memory_mb": row["peak_memory_mb"] - before}


def mode_grid(args: argparse.Namespace) -> list[dict]:
    """Reference first (whole, fp32, default attention, eager), then every other combination asked for."""
    ref = {"size": args.sizes[0], "overlap": None, "precision": "fp32", "attention": "default", "compile": False}
    modes = [ref]
    for size in args.sizes:
        for overlap in [None, *args.overlaps]:
            for precision in args.precisions:
                for attention in args.attention:
                    mode = {"size": size, "overlap": overlap, "precision": precision, "attention": attention,
                            "compile": False}
                    if mode != ref:
                        modes.append(mode)
    if args.compile:
        modes.append(ref | {"compile": True})
    return modes


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="PAMSR inference benchmark: whole vs tiled, precision, attention")
    parser.add_argument("--model", choices=["paper", "cpu"], default="paper")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--sizes", default="1024", help="padded HR sides, e.g. 512,1024,2048 (official 1024)")
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--overlaps", default="8,16,48", help="LR tile overlaps (official test mode at x2: 48)")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--attention", default="default")
    parser.add_argument("--compile", action="store_true", help="add torch.compile of the reference mode")
    parser.add_argument("--repeats", type=int, default=1)
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
    return args


def child_args(args: argparse.Namespace, mode: dict) -> list[str]:
    return ["--model", args.model, "--scale", str(args.scale), "--tile", str(args.tile), "--repeats",
            str(args.repeats), "--device", args.device, "--one-mode", json.dumps(mode)]


def write_outputs(rows: list[dict], out_root: str, device: torch.device) -> Path:
    out = resolve_path(out_root) / datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(rows, indent=2))
    with (out / "bench.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)
    write_env_json(out / "env.json", device)
    print(f"wrote {out}")
    return out


def main(argv: Sequence[str] | None = None) -> Path | None:
    args = parse_args(argv)
    device = pick_device(args.device)
    if args.one_mode:
        print(json.dumps(measure_in_this_process(json.loads(args.one_mode), args, device)), flush=True)
        return None
    params = count_parameters(build(args.model, args.scale, 64, torch.device("cpu"))[0])
    rows = []
    for mode in mode_grid(args):
        if mode["precision"] == "bf16" and not bf16_supported(device):  # decided at run time; no process needed
            row = measure_in_this_process(mode, args, device)
        else:
            row = peak_in_fresh_process("pamsr.bench", child_args(args, mode), timeout=args.timeout)
        row |= {"model": args.model, "params": params, "device": str(device)}
        ref = rows[0] if rows else row
        if row.get("status") == "ok" and ref.get("status") == "ok":
            row["speed_vs_reference"] = row["mpix_per_s"] / ref["mpix_per_s"]
            row["memory_vs_reference"] = row["forward_memory_mb"] / ref["forward_memory_mb"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return write_outputs(rows, args.out, device)


if __name__ == "__main__":
    main()
