"""Peak memory for benchmarks: CUDA ``max_memory_allocated``, CPU peak resident set size of this process.

CPU peaks are per process, so a benchmark that compares two modes measures each in a fresh process
(:func:`peak_in_fresh_process`) or resets the kernel's high-water mark first (:func:`reset_peak_memory`, Linux
``/proc/self/clear_refs``; where that is not allowed the reset reports ``False`` and the peak is the process's).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["reset_peak_memory", "peak_memory_mb", "current_rss_mb", "peak_in_fresh_process"]

_PROC_STATUS = Path("/proc/self/status")


def _status_mb(field: str) -> float | None:
    try:
        for line in _PROC_STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB -> MB
    except OSError:
        return None
    return None


def current_rss_mb() -> float | None:
    """Resident set size of this process now (Linux), in MiB; ``None`` where /proc is absent."""
    return _status_mb("VmRSS")


def reset_peak_memory(device: torch.device | str) -> bool:
    """Reset the peak counter: CUDA's allocator statistics, or the CPU high-water mark (``VmHWM``). Returns whether
    the reset took effect (False on CPU where ``/proc/self/clear_refs`` cannot be written)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_memory_mb(device: torch.device | str) -> float:
    """Peak since the last reset, in MiB: ``torch.cuda.max_memory_allocated`` on CUDA, else ``VmHWM`` (peak RSS;
    ``ru_maxrss`` where /proc is absent)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) / 2**20
    hwm = _status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_in_fresh_process(module: str, args: Sequence[str] = (), timeout: float = 600) -> dict:
    """Run ``python -m module args...`` in a new interpreter and parse the JSON object its last stdout line prints.

    The child measures itself (e.g. ``peak_memory_mb`` before and after its workload), so one mode's allocations
    never raise another mode's peak.
    """
    out = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    lines = [line for line in out.stdout.splitlines() if line.strip().startswith("{")]
    if not lines:
        raise RuntimeError(f"{module} printed no JSON line; stdout was:\n{out.stdout[-2000:]}")
    return json.loads(lines[-1])
