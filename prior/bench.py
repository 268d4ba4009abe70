"""Benchmark PRIOR: step time and peak memory per stage and method (ratios to global_only), batched vs
per-sample local alignment, and the Hungarian matching's share of a stage-3 step.

    python bench.py [--config configs/default.yaml] [--steps 3] [--batch 32] [key=value ...]
    python bench.py --config configs/mimic_cxr.yaml model.text.encoder=tiny --batch 8   # paper geometry

Each (method, stage) runs in a fresh process so CPU peaks do not mix (``common.memory``). Writes
``runs/bench/prior/<timestamp>/bench.json`` and ``bench.csv``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import pandas as pd
import torch

from common.config import load_config
from common.memory import peak_in_fresh_process, peak_memory_mb, reset_peak_memory
from common.rundir import resolve_path
from common.runtime import pick_device
from prior.models import build_model
from prior.models import decoders as decoders_module
from prior.models.alignment import LocalCrossAttention, intra_report_infonce, simsiam_patch_loss
from prior.settings import Config

__all__ = ["PROJECT_DIR", "measure_step", "local_alignment_timing", "main"]

PROJECT_DIR = Path(__file__).resolve().parent
_REPORT = ["There is a small right lower lobe consolidation.", "Moderate cardiomegaly.", "No pneumothorax.",
           "Small left pleural effusion.", "The mediastinal contours are normal.", "Bony structures are intact."]


def measure_step(cfg: Config, method: str, stage: int, steps: int, batch: int) -> dict:
    """Mean forward+backward+step time of ``stage`` for ``method`` on random images and a fixed report."""
    device = pick_device(cfg.runtime.device)
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.data.image_size, method, cfg.loss.global_weight_stage3).to(device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    images = torch.randn(batch, 1, cfg.data.image_size, cfg.data.image_size, device=device)
    reports = [_REPORT[: 4 + i % 3] for i in range(batch)]
    hungarian = {"seconds": 0.0}
    original = decoders_module.linear_sum_assignment

    def timed(cost):
        tic = time.perf_counter()
        out = original(cost)
        hungarian["seconds"] += time.perf_counter() - tic
        return out

    decoders_module.linear_sum_assignment = timed
    reset_peak_memory(device)
    times = []
    for k in range(steps + 1):
        tic = time.perf_counter()
        loss = model(images, reports, stage)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if k == 0:
            hungarian["seconds"] = 0.0  # warm-up step excluded
        else:
            times.append(time.perf_counter() - tic)
    step = sum(times) / len(times)
    return {"method": method, "stage": stage, "step_s": step, "peak_mb": peak_memory_mb(device),
            "hungarian_share": hungarian["seconds"] / steps / step, "device": str(device)}


def local_alignment_timing(embed: int = 128, patches: int = 64, batch: int = 32, repeats: int = 5) -> dict:
    """Batched (padded, masked) vs per-sample loop local alignment: forward + backward seconds."""
    torch.manual_seed(0)
    att = LocalCrossAttention(embed)
    predictor = torch.nn.Sequential(torch.nn.Linear(embed, embed // 2), torch.nn.ReLU(),
                                    torch.nn.Linear(embed // 2, embed))
    lengths = [4 + i % 9 for i in range(batch)]
    image = torch.randn(batch, patches, embed, requires_grad=True)
    text = torch.randn(batch, max(lengths), embed, requires_grad=True)
    mask = torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]
    scale = torch.tensor(100.0)

    def batched():
        out = att(image, text, mask)
        return simsiam_patch_loss(image, out.text_to_image, predictor) + intra_report_infonce(
            text, out.image_to_text, mask, scale)

    def looped():
        total = 0.0
        for i, n in enumerate(lengths):
            out = att(image[i : i + 1], text[i : i + 1, :n])
            total = total + simsiam_patch_loss(image[i : i + 1], out.text_to_image, predictor) + \
                intra_report_infonce(text[i : i + 1, :n], out.image_to_text, mask[i : i + 1, :n], scale)
        return total / batch

    result = {}
    for name, fn in (("batched", batched), ("per_sample", looped)):
        fn().backward()
        tic = time.perf_counter()
        for _ in range(repeats):
            fn().backward()
        result[f"local_{name}_s"] = (time.perf_counter() - tic) / repeats
    result["local_speedup"] = result["local_per_sample_s"] / result["local_batched_s"]
    return result


def _child(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    parser.add_argument("--method")
    parser.add_argument("--stage", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("overrides", nargs="*")
    a = parser.parse_args(argv)
    cfg = load_config(Config, a.config, a.overrides, search_dirs=[PROJECT_DIR])
    print(json.dumps(measure_step(cfg, a.method, a.stage, a.steps, a.batch)))


def main(argv: Sequence[str] | None = None) -> Path:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        _child(argv[1:])
        return Path()
    parser = argparse.ArgumentParser(description="Benchmark PRIOR's stages against global-only pre-training")
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--methods", default="prior,global_only")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    config = str(resolve_path(PROJECT_DIR / args.config)) if not Path(args.config).is_file() else args.config
    rows = []
    for method in args.methods.split(","):
        for stage in (1, 2, 3):
            rows.append(peak_in_fresh_process("prior.bench", ["--child", "--config", config, "--method", method,
                                                              "--stage", str(stage), "--steps", str(args.steps),
                                                              "--batch", str(args.batch), *args.overrides]))
    frame = pd.DataFrame(rows)
    base = frame[frame["method"] == "global_only"].set_index("stage")
    if len(base):
        frame["step_ratio_to_global_only"] = [r.step_s / base.loc[r.stage, "step_s"] for r in frame.itertuples()]
        frame["peak_ratio_to_global_only"] = [r.peak_mb / base.loc[r.stage, "peak_mb"] for r in frame.itertuples()]
    local = local_alignment_timing(batch=args.batch)
    out = resolve_path("runs/bench/prior") / datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "bench.csv", index=False)
    (out / "bench.json").write_text(json.dumps({"steps": rows, "local_alignment": local, "config": config,
                                                "overrides": args.overrides}, indent=2))
    print(frame.to_string(index=False))
    print(json.dumps(local))
    return out


if __name__ == "__main__":
    main()
