"""Training and evaluation loops of the YoloCurvSeg stages (no CLI, no file-layout decisions).

- :func:`train_steps`: an iteration loop shared by the CUT synthesizer (§"Synthesizer") and the segmenter stages
  (§"Two-stage coarse-to-fine segmenter"), with a callback for logging/checkpointing;
- :func:`predict_probs`: curve probability ``(H, W)`` of one image (MONAI sliding window, optional flip TTA);
- :func:`pseudo_labels`: the fine-stage rule (OURS, spec §2.5): ``p > fg_threshold`` -> 1, ``p < bg_threshold`` ->
  0, otherwise ignored (2); outside the FOV -> 0;
- :func:`evaluate_cases`: per-case metrics (``curve_metrics``) and their mean.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from tqdm import tqdm

from yolocurvseg.curve_metrics import curve_metrics
from yolocurvseg.data import LoadedCase, standardize
from yolocurvseg.model import IGNORE

__all__ = ["poly_lambda", "train_steps", "predict_probs", "pseudo_labels", "evaluate_cases"]


def poly_lambda(total: int, power: float = 0.9) -> Callable[[int], float]:
    """Poly learning-rate factor ``(1 - step / total) ** power`` for ``LambdaLR``."""
    return lambda step: max(1.0 - step / max(total, 1), 0.0) ** power


def train_steps(step_fn: Callable[[int], dict[str, float]], start: int, total: int,
                on_step: Callable[[int, dict[str, float]], None] | None = None, desc: str = "train",
                progress: bool = False) -> dict[str, float]:
    """Run ``step_fn(step)`` for ``step = start .. total - 1``; ``on_step(step + 1, losses)`` after each step.
    Returns the running mean of every loss over the steps run here."""
    sums: dict[str, float] = {}
    n = 0
    for step in tqdm(range(start, total), desc=desc, disable=not progress, leave=False):
        losses = step_fn(step)
        for k, v in losses.items():
            if not np.isfinite(v):
                raise FloatingPointError(f"{desc}: non-finite {k} = {v} at step {step}; lower the learning rate")
            sums[k] = sums.get(k, 0.0) + float(v)
        n += 1
        if on_step is not None:
            on_step(step + 1, losses)
    return {k: v / max(n, 1) for k, v in sums.items()}


@torch.no_grad()
def predict_probs(model: torch.nn.Module, image: np.ndarray, roi: int, device: torch.device, tta: bool = False
                  ) -> np.ndarray:
    """Curve probability ``(H, W)`` float32 of a grey image ``(H, W)`` in [0, 1] (standardized per image)."""
    model.eval()
    x = standardize(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]).to(device)
    flips: Sequence[tuple[int, ...]] = [(), (-1,), (-2,)] if tta else [()]
    acc = torch.zeros(x.shape[-2:], device=device)
    for dims in flips:
        xi = x.flip(dims) if dims else x
        logits = sliding_window_inference(xi, (roi, roi), sw_batch_size=4, predictor=model, overlap=0.25,
                                          mode="gaussian", padding_mode="reflect")
        p = logits.softmax(dim=1)[0, 1]
        acc += p.flip([d + 2 if d < 0 else d for d in dims]) if dims else p
    return (acc / len(flips)).cpu().numpy().astype(np.float32)


def pseudo_labels(prob: np.ndarray, fov: np.ndarray, fg_threshold: float, bg_threshold: float) -> np.ndarray:
    """uint8 ``(H, W)``: 1 where ``prob > fg_threshold``, 0 where ``prob < bg_threshold`` or outside the FOV,
    ``IGNORE`` (2) elsewhere."""
    out = np.full(prob.shape, IGNORE, np.uint8)
    out[prob > fg_threshold] = 1
    out[prob < bg_threshold] = 0
    out[~np.asarray(fov, bool)] = 0
    return out


def evaluate_cases(model: torch.nn.Module, cases: list[LoadedCase], roi: int, device: torch.device,
                   threshold: float = 0.5, tta: bool = False, surface: bool = True
                   ) -> tuple[list[dict[str, float | str]], dict[str, float]]:
    """Per-case metric rows (with ``case_id``) and their mean over cases."""
    rows: list[dict[str, float | str]] = []
    for case in cases:
        if case.label is None:
            raise ValueError(f"case {case.case_id} has no label; evaluation needs the test labels")
        prob = predict_probs(model, case.image, roi, device, tta)
        rows.append({"case_id": case.case_id, **curve_metrics(prob > threshold, case.label > 0, case.fov, surface)})
    keys = [k for k in rows[0] if k != "case_id"] if rows else []
    summary = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    return rows, summary
