"""Benchmark at paper sizes (``make bench-joinedtrans``): training-step time and peak memory of the Swin-B coarse
model vs JOINED's CNN (timm ``resnest50d`` + 3 UNet++ decoders), and inference time of the full pipeline (coarse ->
448 px fine -> fovea) vs the coarse stage alone, as ratios. Writes ``runs/bench/joinedtrans-<time>.json``.

    python bench.py [--device auto] [--batch 4] [--steps 3] [--size 256]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from datetime import datetime

import numpy as np
import torch

from common.memory import peak_memory_mb, reset_peak_memory
from common.rundir import resolve_path
from common.runtime import pick_device
from joinedtrans.data import Case, Loaded
from joinedtrans.model import JoinedTrans, build_fine_model, build_fovea_model, build_model, count_parameters
from joinedtrans.pipeline import infer
from joinedtrans.settings import Config, ModelConfig

__all__ = ["time_training_step", "time_inference", "main"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training_step(model_cfg: ModelConfig, size: int, batch: int, steps: int, device: torch.device) -> dict:
    """Mean seconds per Adam step (forward, losses of all branches, backward) and peak memory (MiB)."""
    model = build_model(model_cfg, size).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, size, size, device=device)
    reset_peak_memory(device)
    times = []
    for _ in range(steps + 1):
        _sync(device)
        tic = time.perf_counter()
        out = model(x)
        loss = sum(v.mean() for v in out.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)
        times.append(time.perf_counter() - tic)
    return {"params": count_parameters(model), "step_s": float(np.mean(times[1:])), "peak_mb": peak_memory_mb(device)}


def time_inference(cfg: Config, image_size: int, repeats: int, device: torch.device) -> dict:
    """Seconds per image: full pipeline vs coarse only, on a random ``image_size`` px image."""
    coarse = build_model(cfg.model, cfg.coarse.size)
    full = JoinedTrans(coarse, build_fine_model(cfg.fine), build_fovea_model(cfg.fovea)).to(device)
    only = JoinedTrans(coarse).to(device)
    image = np.random.default_rng(0).integers(0, 255, (image_size, image_size, 3), dtype=np.uint8)
    item = Loaded(Case("bench", None, None, None, "refuge", "bench"), image, np.full(image.shape[:2], 255, np.uint8))
    out = {}
    for name, pipe in (("full", full), ("coarse_only", only)):
        infer(pipe, [item], cfg, [0.5] * 3, [0.25] * 3, device)  # warm-up
        tic = time.perf_counter()
        for _ in range(repeats):
            infer(pipe, [item], cfg, [0.5] * 3, [0.25] * 3, device)
        out[f"{name}_s"] = (time.perf_counter() - tic) / repeats
    return out


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="JOINEDTrans benchmark: Swin-B vs JOINED CNN, pipeline vs coarse")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=1634, help="REFUGE validation images are 1634 px")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    swin = time_training_step(ModelConfig(), args.size, args.batch, args.steps, device)
    cnn = time_training_step(ModelConfig(encoder="cnn", name="resnest50d"), args.size, args.batch, args.steps,
                             device)
    inference = time_inference(Config(), args.image_size, max(1, args.steps), device)
    result = {"device": str(device), "batch": args.batch, "size": args.size, "swin_b": swin, "joined_cnn": cnn,
              "step_time_ratio_swin_over_cnn": swin["step_s"] / cnn["step_s"],
              "peak_memory_ratio_swin_over_cnn": swin["peak_mb"] / max(cnn["peak_mb"], 1e-9),
              "inference": inference,
              "inference_ratio_full_over_coarse": inference["full_s"] / inference["coarse_only_s"]}
    path = resolve_path("runs/bench") / f"joinedtrans-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
