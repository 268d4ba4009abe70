"""Cost of SAM fine-tuning per mode and of pseudo-labelling, on random weights (nothing is downloaded).

- one AdamW step of SAM ViT-B per ``sam.finetune`` mode (``decoder`` from a cached embedding, ``lora``,
  ``full``) at 512 px on CPU / 1024 px on CUDA, each in a fresh process: seconds and peak memory, and both as
  ratios to ``full``;
- pseudo-labelling one slice with the tiny SAM (encoder + one decoder call with 3 boxes) + adapter, against one
  segmenter (U-Net) forward pass.

``python bench.py [--size 512] [--steps 2] [--modes decoder,lora,full]``
-> ``runs/bench/aslseg/<time>/bench.{json,csv}``
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from datetime import datetime

import numpy as np
import pandas as pd
import torch

from common.memory import peak_in_fresh_process, peak_memory_mb, reset_peak_memory
from common.rundir import resolve_path, write_env_json

__all__ = ["bench_mode", "bench_pseudo_label", "main"]


def bench_mode(mode: str, size: int, steps: int) -> dict[str, float]:
    """Time and peak memory of ``steps`` fine-tuning steps of a random ViT-B SAM in ``mode`` (this process)."""
    from segment_anything import sam_model_registry

    from aslseg.sam_model import SAMSegmenter, add_lora, count_trainable, resize_sam, set_trainable
    from aslseg.sam_tuning import SAMExample, sam_train_step

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sam = resize_sam(sam_model_registry["vit_b"](checkpoint=None), size)
    if mode == "lora":
        add_lora(sam, 4)
    model = SAMSegmenter(sam).to(device)
    params = set_trainable(model.sam, mode)
    opt = torch.optim.AdamW(params, lr=1e-4)
    image = torch.rand(1, 1, 256, 256)
    target = np.zeros((256, 256), np.float32)
    target[100:140, 90:150] = 1
    example = [SAMExample(0, np.array([85.0, 95.0, 155.0, 145.0], np.float32), target)]
    emb = None
    if mode == "decoder":
        with torch.no_grad():
            emb = model.embed(image.to(device)).cpu()
    reset_peak_memory(device)
    start = time.perf_counter()
    for _ in range(steps):
        sam_train_step(model, opt, image, example, embeddings=emb)
    seconds = (time.perf_counter() - start) / steps
    return {"mode": mode, "size": size, "device": device.type, "trainable": count_trainable(model.sam),
            "seconds_per_step": seconds, "peak_mb": peak_memory_mb(device)}


@torch.no_grad()
def bench_pseudo_label(n: int = 10) -> dict[str, float]:
    from aslseg.adapter import build_adapter, refine
    from aslseg.sam_model import SAMSegmenter, build_tiny_sam
    from aslseg.semisup import build_segmenter
    from aslseg.settings import AdapterConfig, ModelConfig

    sam, unet, adapter = SAMSegmenter(build_tiny_sam()).eval(), build_segmenter(ModelConfig()).eval(), \
        build_adapter(AdapterConfig()).eval()
    image = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    boxes = np.array([[5, 5, 20, 20], [30, 30, 50, 45], [10, 40, 25, 60]], np.float32)
    x = torch.from_numpy(image)[None, None]
    start = time.perf_counter()
    for _ in range(n):
        unet(x)
    t_unet = (time.perf_counter() - start) / n
    start = time.perf_counter()
    for _ in range(n):
        prob = sam.predict(torch.from_numpy(image)[None], boxes)
        refine(adapter, image[None], prob[None], prob[None], torch.device("cpu"))
    t_pl = (time.perf_counter() - start) / n
    return {"unet_forward_s": t_unet, "pseudo_label_s": t_pl, "ratio": t_pl / t_unet}


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="SAM fine-tuning modes and pseudo-labelling cost")
    parser.add_argument("--size", type=int, default=0, help="SAM input size (0 = 512 on CPU, 1024 on CUDA)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--modes", default="decoder,lora,full")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    size = args.size or (1024 if torch.cuda.is_available() else 512)
    if args.child:  # one mode, measured in this fresh process
        print(json.dumps(bench_mode(args.child, size, args.steps)))
        return {}
    modes = [bench_mode_fresh(m, size, args.steps) for m in args.modes.split(",")]
    full = next((m for m in modes if m["mode"] == "full"), None)
    for m in modes:
        if full is not None:
            m["time_vs_full"] = m["seconds_per_step"] / full["seconds_per_step"]
            m["memory_vs_full"] = m["peak_mb"] / full["peak_mb"]
    result = {"finetune": modes, "pseudo_label": bench_pseudo_label()}
    out = resolve_path("runs/bench/aslseg") / datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=2))
    pd.DataFrame(modes).to_csv(out / "bench.csv", index=False)
    write_env_json(out / "env.json")
    print(pd.DataFrame(modes).to_string(index=False))
    print(json.dumps(result["pseudo_label"]), f"-> {out}")
    return result


def bench_mode_fresh(mode: str, size: int, steps: int) -> dict:
    return peak_in_fresh_process("aslseg.bench", ["--child", mode, "--size", str(size), "--steps", str(steps)],
                                 timeout=1800)


if __name__ == "__main__":
    main()
