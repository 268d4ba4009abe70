"""``make bench-fpt``: training-step memory and time of every method at the paper's resolutions (LPM 512^2,
side 128^2, ViT-B/16, C = 5), as ratios to full fine-tuning measured in the same run, FPT+ at 512/1024/2048, the
online LPM forward (eager baseline vs our optimised path) and the preload cache size per image
(FPT+ paper Sec. IV-D, abstract: 1.03 % parameters, 3.18 % memory).

CUDA: ``torch.cuda.max_memory_allocated`` over one optimiser step (after a warm-up step that allocates the AdamW
state), everything in one process. CPU: each measurement in a fresh subprocess, reporting its peak RSS, plus the
bytes of tensors saved for backward (``profiling.saved_tensor_bytes``).

Eager LPM baseline = every block with explicit softmax attention and the full ``(B, H, N, N)`` matrix in tapped
blocks, all 12 blocks run; optimised = fused attention in untapped blocks, chunked attention (never the full matrix)
in tapped ones, blocks after the last tapped one skipped, optionally bf16 autocast.

    python bench.py [--device cpu|cuda] [--quick] [--batch N] [--out runs/bench]
    python bench.py --lpm-modes [--lpm-size 512 --lpm-batch 4]   # LPM forward only: ten modes + matmul peak

``--lpm-modes``: the FPT+ LPM forward (ViT-B/16, or ``--config``'s LPM) in the modes ``eager`` (the official code's
way: explicit attention with the full N x N matrix in every block, all blocks), ``fp32`` (ours), ``bf16`` (ours under
bf16 autocast; run only where the device has native bf16 units, see ``models/lpm.py:native_bf16``, unless
``--force-bf16``), ``fp32_compile`` / ``bf16_compile`` (``torch.compile`` of ours) and ``fp32_freeze`` /
``bf16_freeze`` (compiled with inductor's freezing: ``model.lpm.compile: freeze``); the untapped blocks run the
chunked softmax (``model.lpm.attention: chunked``), a ``_fused`` mode timm's fused attention instead. Each in a
fresh process, with
seconds per image, achieved GFLOP/s (of the full 12-block forward, so the modes are comparable), peak RSS and the
speed-up over ``eager``; plus a 2048^3 matmul in fp32 and bf16 as the machine's peak.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from fpt_plus.settings import Config, ModelConfig

__all__ = ["measure_step", "measure_lpm_forward", "main"]

PROJECT_DIR = Path(__file__).resolve().parent
TRAIN_METHODS = ("full_finetune", "linear_probe", "vpt", "adapter", "lora", "side_only", "side_only_hr", "fpt",
                 "fpt_plus", "fpt_plus_online")


_GEOMETRY: dict[str, str | None] = {"config": None}  # a YAML whose `model:` replaces the paper's ViT-B geometry


def _config(method: str, lpm_size: int) -> Config:
    """The paper's geometry (ViT-B/16, side 128/224) or that of ``--config``, with the LPM at ``lpm_size``."""
    from common.config import load_config

    method = "fpt_plus" if method == "fpt_plus_online" else method
    overrides = [f"model.method={method}"] + ([f"model.lpm.img_size={lpm_size}"] if lpm_size else [])
    if _GEOMETRY["config"] is None:
        cfg = Config(model=ModelConfig(method=method))
        cfg.model.lpm.img_size = lpm_size
        return cfg
    return load_config(Config, _GEOMETRY["config"], overrides, search_dirs=[PROJECT_DIR])


def _batch(cfg: Config, method: str, batch: int, device: torch.device, cached: bool) -> dict[str, Any]:
    from fpt_plus.models.lpm import num_selected

    lpm = cfg.model.lpm
    out: dict[str, Any] = {"label": torch.randint(0, 5, (batch,), device=device)}
    variant = cfg.model.fpt if method == "fpt" else cfg.model.fpt_plus
    s = variant.side_img_size
    out["side"] = torch.randn(batch, 3, s, s, device=device)
    if cached:
        k = num_selected(lpm.img_size, lpm.patch_size, cfg.model.token_ratio)
        shape = (len(variant.layers), batch, lpm.num_heads, k, lpm.embed_dim // lpm.num_heads)
        out["keys"], out["values"] = torch.randn(shape, device=device), torch.randn(shape, device=device)
    else:
        out["lpm"] = torch.randn(batch, 3, lpm.img_size, lpm.img_size, device=device)
    return out


def measure_step(method: str, lpm_size: int, batch: int, device: torch.device, repeats: int = 2) -> dict[str, Any]:
    """Peak memory and time of one AdamW training step of ``method`` (random inputs, C = 5)."""
    from fpt_plus.models.factory import build_model, count_learnable, learnable_percent
    from fpt_plus.profiling import saved_tensor_bytes, time_steps

    cfg = _config(method, lpm_size)
    cached = method in ("fpt", "fpt_plus")
    model = build_model(cfg.model, 5, preloaded=cached).to(device)
    model.train()
    inputs = _batch(cfg, method, batch, device, cached)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.1)
    keys = model.input_keys

    def forward() -> torch.Tensor:
        logits = model(**{k: inputs[k] for k in keys})
        return torch.nn.functional.cross_entropy(logits, inputs["label"])

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        forward().backward()
        opt.step()

    step()  # allocates the optimiser state
    opt.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    loss, saved = saved_tensor_bytes(forward)
    loss.backward()
    opt.step()
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    seconds = time_steps(step, device, repeats=repeats, warmup=0)
    learnable = count_learnable(model)
    return {"method": method, "lpm_size": lpm_size, "side_size": (cfg.model.fpt if method == "fpt"
                                                                  else cfg.model.fpt_plus).side_img_size,
            "batch": batch, "learnable": learnable,
            "learnable_percent": learnable_percent(cfg.model.method, learnable, cfg.model.lpm),
            "peak_mib": peak / 2**20 if peak is not None else None, "saved_for_backward_mib": saved / 2**20,
            "step_s": seconds, "device": str(device)}


def _eager_lpm_forward(lpm: torch.nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference implementation: explicit attention everywhere, full N x N matrix in tapped blocks, all blocks."""
    from fpt_plus.models.lpm import select_tokens

    vit = lpm.vit
    x = vit.norm_pre(vit._pos_embed(vit.patch_embed(images)))
    keys, values = [], []
    for i, blk in enumerate(vit.blocks):
        attn = blk.attn
        b, n, c = x.shape
        qkv = attn.qkv(blk.norm1(x)).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        probs = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(-1)
        if i in lpm.layers:
            k_sel, v_sel, _ = select_tokens(probs.mean(-2), k, v, lpm.num_keep)
            keys.append(k_sel)
            values.append(v_sel)
        x = x + attn.proj((probs @ v).transpose(1, 2).reshape(b, n, c))
        x = x + blk.mlp(blk.norm2(x))
    return torch.stack(keys), torch.stack(values)


@torch.no_grad()
def measure_lpm_forward(mode: str, lpm_size: int, batch: int, device: torch.device, repeats: int = 2
                        ) -> dict[str, Any]:
    """Preload / online LPM forward of FPT+: ``eager`` | ``optimized`` | ``optimized_bf16``."""
    from common.runtime import autocast
    from fpt_plus.models.lpm import FrozenLPM
    from fpt_plus.profiling import time_steps

    cfg = _config("fpt_plus", lpm_size)
    lpm = FrozenLPM(cfg.model.lpm, cfg.model.fpt_plus.layers, cfg.model.token_ratio).to(device)
    images = torch.randn(batch, 3, lpm_size, lpm_size, device=device)
    amp = "bf16" if mode.endswith("bf16") else "off"

    def run() -> None:
        with autocast(device, amp):
            if mode == "eager":
                _eager_lpm_forward(lpm, images)
            else:
                lpm(images)

    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    seconds = time_steps(run, device, repeats=repeats, warmup=0)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"method": f"lpm_forward_{mode}", "lpm_size": lpm_size, "batch": batch, "peak_mib": peak,
            "step_s": seconds, "seconds_per_image": seconds / batch, "device": str(device)}


def lpm_forward_flops(lpm_size: int) -> float:
    """FLOPs of one image through every block of the configured LPM (2 per multiply-add): linear layers
    ``24 d^2 N`` and attention ``4 N^2 d`` per block, plus the patch embedding."""
    from fpt_plus.models.lpm import num_tokens

    lpm = _config("fpt_plus", lpm_size).model.lpm
    n, d = num_tokens(lpm_size, lpm.patch_size), lpm.embed_dim
    hidden = d * lpm.mlp_ratio
    per_block = 2 * n * (4 * d * d + 2 * d * hidden) + 4 * n * n * d
    return lpm.depth * per_block + 2 * (n - 1) * 3 * lpm.patch_size ** 2 * d


# precision [+ "fused": timm's SDPA in the untapped blocks instead of the config's attention] [+ compile | freeze]
LPM_MODES = ("eager", "fp32_fused", "fp32", "fp32_compile", "fp32_freeze", "bf16_fused", "bf16", "bf16_compile",
             "bf16_fused_freeze", "bf16_freeze")


@torch.no_grad()
def measure_lpm_mode(mode: str, lpm_size: int, batch: int, repeats: int = 2) -> dict[str, Any]:
    """One CPU/CUDA LPM forward mode (see the module docstring); run it in a fresh process."""
    from common.runtime import autocast
    from fpt_plus.models.lpm import FrozenLPM, compiled_lpm, native_bf16
    from fpt_plus.profiling import time_steps

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = _config("fpt_plus", lpm_size)
    parts = mode.split("_")
    cfg.model.lpm.compile = "on" if "compile" in parts else "freeze" if "freeze" in parts else "off"
    cfg.model.lpm.attention = "fused" if "fused" in parts else "chunked"
    lpm = FrozenLPM(cfg.model.lpm, cfg.model.fpt_plus.layers, cfg.model.token_ratio).to(device)
    images = torch.randn(batch, 3, lpm_size, lpm_size, device=device)
    amp = "bf16" if parts[0] == "bf16" else "off"
    forward = compiled_lpm(lpm, cfg.model.lpm.compile)

    def run() -> None:
        with autocast(device, amp):
            _eager_lpm_forward(lpm, images) if mode == "eager" else forward(images)

    t0 = time.perf_counter()
    run()  # warm-up (and compilation)
    first = time.perf_counter() - t0
    seconds = time_steps(run, device, repeats=repeats, warmup=0)
    return {"mode": mode, "attention": "explicit" if mode == "eager" else cfg.model.lpm.attention, "lpm_size": lpm_size,
            "batch": batch, "seconds_per_image": seconds / batch,
            "first_call_s": first, "gflops_per_s": lpm_forward_flops(lpm_size) * batch / seconds / 1e9,
            "native_bf16": native_bf16(device), "threads": torch.get_num_threads(), "device": str(device)}


def matmul_peak(size: int = 2048, repeats: int = 5) -> dict[str, float]:
    """Achieved GFLOP/s of a ``size^3`` matmul in fp32 and bf16 (the machine's practical peak): the fastest of
    ``repeats`` timed products after a warm-up, so that a burst of other work on the machine does not lower it."""
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        a @ b
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
        out[f"matmul_{name}_gflops_per_s"] = 2 * size ** 3 / best / 1e9
    return out


def run_lpm_modes(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every LPM mode in its own fresh process (bf16 modes only with native bf16 or ``--force-bf16``)."""
    from fpt_plus.models.lpm import native_bf16

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for mode in LPM_MODES:
        if mode.startswith("bf16") and not (native_bf16(device) or args.force_bf16):
            rows.append({"mode": mode, "skipped": f"no native bf16 on {device} (avx512_bf16/amx_bf16 absent); "
                                                  f"--force-bf16 runs it emulated"})
            continue
        rows.append(_in_subprocess("mode", mode, args.lpm_size, args.lpm_batch, args.repeats))
        print(json.dumps(rows[-1]), flush=True)
    eager = next((r for r in rows if r.get("mode") == "eager" and "seconds_per_image" in r), None)
    for r in rows:
        if eager and "seconds_per_image" in r:
            r["speedup_vs_eager"] = eager["seconds_per_image"] / r["seconds_per_image"]
    return rows


def _cache_size(lpm_size: int) -> dict[str, Any]:
    """Measured bytes of one FPT+ preload file (fp32 and fp16) at ``lpm_size``."""
    import tempfile

    from fpt_plus.data import PreloadCache
    from fpt_plus.models.lpm import num_selected

    cfg = _config("fpt_plus", lpm_size)
    lpm = cfg.model.lpm
    k = num_selected(lpm.img_size, lpm.patch_size, cfg.model.token_ratio)
    shape = (len(cfg.model.fpt_plus.layers), lpm.num_heads, k, lpm.embed_dim // lpm.num_heads)
    out: dict[str, Any] = {"lpm_size": lpm_size, "shape": list(shape)}
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in ("fp32", "fp16"):
            cache = PreloadCache(tmp, {"dtype": dtype})
            cache.save(f"img_{dtype}", torch.zeros(shape), torch.zeros(shape))
            out[f"{dtype}_mib"] = cache.path(f"img_{dtype}").stat().st_size / 2**20
    return out


def _in_subprocess(kind: str, name: str, size: int, batch: int, repeats: int) -> dict[str, Any]:
    """CPU: run one measurement in a fresh interpreter and add its peak RSS."""
    cmd = [sys.executable, str(PROJECT_DIR / "bench.py"), "--worker", kind, name, str(size), str(batch),
           str(repeats)]
    if _GEOMETRY["config"] is not None:
        cmd += ["--config", str(_GEOMETRY["config"])]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=PROJECT_DIR)
    if proc.returncode != 0:
        return {"method": name, "lpm_size": size, "batch": batch, "error": proc.stderr.strip().splitlines()[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _worker(kind: str, name: str, size: int, batch: int, repeats: int) -> None:
    import resource

    torch.manual_seed(0)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    device = torch.device("cpu")
    if kind == "mode":
        result = measure_lpm_mode(name, size, batch, repeats)
    else:
        result = (measure_step(name, size, batch, device, repeats) if kind == "step"
                  else measure_lpm_forward(name, size, batch, device, repeats))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["peak_rss_mib"] = peak / 1024
    result["peak_rss_above_start_mib"] = (peak - base) / 1024
    print(json.dumps(result))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Memory/speed benchmark of FPT+, FPT and the baselines.")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    parser.add_argument("--batch", type=int, default=None, help="training batch (default 16 on CUDA, 2 on CPU)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="FPT+ LPM sizes (default 512 1024 2048)")
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("--config", default=None,
                        help="take the model geometry from this YAML instead of the paper's ViT-B/16 (e.g. ci.yaml)")
    parser.add_argument("--lpm-modes", action="store_true", help="LPM forward modes + matmul peak only")
    parser.add_argument("--lpm-size", type=int, default=512, help="--lpm-modes: LPM input size")
    parser.add_argument("--lpm-batch", type=int, default=4, help="--lpm-modes: images per forward")
    parser.add_argument("--repeats", type=int, default=2, help="--lpm-modes: timed forwards per mode")
    parser.add_argument("--force-bf16", action="store_true", help="--lpm-modes: run bf16 without native units")
    parser.add_argument("--worker", nargs=5, default=None, help=argparse.SUPPRESS)
    return parser


def _record(rows: list[dict[str, Any]], kind: str, name: str, size: int, batch: int, device: torch.device,
            repeats: int) -> None:
    """One measurement (in process on CUDA, in a fresh subprocess on CPU), appended to ``rows`` and printed."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        try:
            row = (measure_step(name, size, batch, device, repeats) if kind == "step"
                   else measure_lpm_forward(name, size, batch, device, repeats))
        except torch.OutOfMemoryError:
            row = {"method": name, "lpm_size": size, "batch": batch, "error": "CUDA out of memory"}
        torch.cuda.empty_cache()
    else:
        row = _in_subprocess(kind, name, size, batch, repeats)
    rows.append(row)
    print(json.dumps(row), flush=True)


def _measure_all(device: torch.device, batch: int, repeats: int, sizes: list[int]) -> list[dict[str, Any]]:
    cuda = device.type == "cuda"
    rows: list[dict[str, Any]] = []
    base_size = 512 if _GEOMETRY["config"] is None else _config("fpt_plus", 0).model.lpm.img_size
    for method in TRAIN_METHODS:
        _record(rows, "step", method, base_size, batch, device, repeats)
    for size in sizes:
        if size != base_size:
            _record(rows, "step", "fpt_plus", size, batch, device, repeats)
    lpm_modes = ("eager", "optimized", "optimized_bf16") if cuda else ("eager", "optimized")
    for size in sizes:
        for mode in lpm_modes:
            if mode == "eager" and size > 1024:
                continue  # the full 12 x 16385^2 matrix per image is exactly what the chunked path avoids
            _record(rows, "lpm", mode, size, 1 if not cuda else 4, device, repeats)
    full = next((r for r in rows if r["method"] == "full_finetune" and "error" not in r), None)
    mem_key = "peak_mib" if cuda else "peak_rss_mib"
    for r in rows:
        if full and r.get(mem_key) and r["method"] in TRAIN_METHODS:
            r["memory_vs_full"] = r[mem_key] / full[mem_key]
            r["saved_vs_full"] = r["saved_for_backward_mib"] / full["saved_for_backward_mib"]
            r["time_vs_full"] = r["step_s"] / full["step_s"]
    return rows


def write_lpm_modes(args: argparse.Namespace) -> Path:
    """``--lpm-modes``: rows + matmul peak -> ``runs/bench/fpt_plus/<time>-lpm/lpm_modes.{json,csv}``."""
    import os

    import pandas as pd

    from common.rundir import resolve_path

    start = time.perf_counter()
    rows = run_lpm_modes(args)
    summary = {"cpu": _cpu_name(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
               "torch": torch.__version__, "lpm_size": args.lpm_size, "batch": args.lpm_batch,
               "gflop_per_image": lpm_forward_flops(args.lpm_size) / 1e9, **matmul_peak(), "rows": rows,
               "wall_s": time.perf_counter() - start}
    out = resolve_path(args.out) / "fpt_plus" / (datetime.now().strftime("%Y%m%d-%H%M%S") + "-lpm")
    out.mkdir(parents=True, exist_ok=True)
    (out / "lpm_modes.json").write_text(json.dumps(summary, indent=2))
    pd.DataFrame(rows).to_csv(out / "lpm_modes.csv", index=False)
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=1))
    print(f"LPM modes written to {out}")
    return out


def _cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


def main(argv: Sequence[str] | None = None) -> Path:
    args = _parser().parse_args(argv)
    if args.config is not None:
        from common.config import resolve_config_path

        _GEOMETRY["config"] = str(resolve_config_path(args.config, [PROJECT_DIR]))
    if args.worker:
        kind, name, size, batch, repeats = args.worker
        _worker(kind, name, int(size), int(batch), int(repeats))
        return Path(".")
    import pandas as pd

    from common.rundir import resolve_path

    if args.lpm_modes:
        return write_lpm_modes(args)
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    cuda = device.type == "cuda"
    batch = args.batch or (16 if cuda else 2)
    sizes = args.sizes or ([512, 1024, 2048] if cuda else ([512] if args.quick else [512, 1024]))
    start = time.perf_counter()
    rows = _measure_all(device, batch, 1 if args.quick else 3, sizes)
    summary = {
        "device": torch.cuda.get_device_name(device) if cuda else f"CPU ({torch.get_num_threads()} threads)",
        "torch": torch.__version__, "batch": batch, "quick": args.quick, "rows": rows,
        "cache_size_per_image": [_cache_size(s) for s in sizes], "wall_s": time.perf_counter() - start,
    }
    out = resolve_path(args.out) / "fpt_plus" / datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(summary, indent=2))
    pd.DataFrame(rows).to_csv(out / "bench.csv", index=False)
    print(f"benchmark ({summary['device']}, {summary['wall_s']:.0f} s) written to {out}")
    return out


if __name__ == "__main__":
    main()
