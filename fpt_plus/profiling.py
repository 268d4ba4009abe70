"""Training-memory and step-time measurement shared by train.py (the comparison table) and bench.py (the memory
protocol is in the README's "Design notes").

CUDA: ``torch.cuda.max_memory_allocated`` around one optimiser step. CPU: a deterministic proxy, the bytes of every
tensor saved for backward (``torch.autograd.graph.saved_tensors_hooks``) plus parameters, gradients and AdamW state
of the learnable parameters, frozen parameters held by the model and the input batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["saved_tensor_bytes", "training_step_memory", "time_steps"]


def saved_tensor_bytes(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Run ``fn`` (a forward) and count the bytes of the distinct tensors autograd saves for backward."""
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        try:
            key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
            seen[key] = t.untyped_storage().nbytes()
        except (RuntimeError, NotImplementedError):  # tensors without storage (e.g. some views of wrappers)
            seen[(id(t), 0)] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


def _bytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def training_step_memory(model: nn.Module, step: Callable[[], torch.Tensor], device: torch.device
                         ) -> dict[str, float]:
    """Memory of one training step in MiB. ``step`` runs forward + loss and returns the loss (backward is done here).

    Returns ``{"peak_mib", "activations_mib", "params_mib", "method"}`` where ``method`` says how peak was measured.
    """
    learnable = [p for p in model.parameters() if p.requires_grad]
    frozen = [p for p in model.parameters() if not p.requires_grad]
    mib = 2.0 ** 20
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        loss, act = saved_tensor_bytes(step)
        loss.backward()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        how = "cuda.max_memory_allocated"
    else:
        loss, act = saved_tensor_bytes(step)
        loss.backward()
        peak = act + _bytes(frozen) + 4 * _bytes(learnable)  # weights + grads + AdamW exp_avg, exp_avg_sq
        how = "saved-for-backward + params/grads/AdamW"
    model.zero_grad(set_to_none=True)
    return {"peak_mib": peak / mib, "activations_mib": act / mib,
            "params_mib": (_bytes(frozen) + _bytes(learnable)) / mib, "method": how}


def time_steps(step: Callable[[], None], device: torch.device, repeats: int = 3, warmup: int = 1) -> float:
    """Median wall time of ``step`` in seconds (after warm-up), synchronising CUDA."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]
