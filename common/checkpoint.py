"""Checkpoints: plain dicts of state dicts, written atomically, loadable with ``torch.load(weights_only=True)``.

Layout of a checkpoint (``SCHEMA_VERSION`` 1)::

    {"schema_version": 1, "model": state_dict, "optimizer": ..., "scheduler": ..., "scaler": ...,
     "epoch": int, "step": int, "best_metric": float | None, "config": plain dict, "rng": {...}, "extra": {...}}

``epoch`` is the number of completed epochs, so a resumed run starts at ``epoch``.
"""

from __future__ import annotations

import errno
import os
import random
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.runtime import unwrap_model

SCHEMA_VERSION = 1

__all__ = [
    "SCHEMA_VERSION",
    "CheckpointError",
    "atomic_torch_save",
    "save_checkpoint",
    "load_checkpoint",
    "restore_training_state",
    "rng_state",
    "set_rng_state",
    "find_resume_checkpoint",
    "strip_prefixes",
    "load_init_weights",
]


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


def _save_error(path: Path, exc: OSError) -> CheckpointError:
    causes = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
              errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied"}
    cause = causes.get(exc.errno or -1, exc.strerror or str(exc))
    return CheckpointError(f"cannot write checkpoint {path}: {cause}. Free space or point runs_root at a writable "
                           f"folder; the previous {path.name}, if any, is intact.")


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then ``os.replace``: never a torn file.

    Temporary files that a killed save left behind (``.<name>.*.tmp``) are removed first; write errors become a
    :class:`CheckpointError` naming the file and the likely cause (full disk, read-only folder).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{path.name}.*.tmp"):
            stale.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _save_error(path, exc) from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _save_error(path, exc) from exc
        if isinstance(exc, RuntimeError) and ("inline_container" in str(exc) or "write failed" in str(exc)):
            raise _save_error(path, OSError(errno.ENOSPC, "write failed")) from exc
        raise
    return path


def rng_state() -> dict[str, Any]:
    """python / numpy / torch (CPU and CUDA) RNG states as tensors and builtins (weights_only-loadable)."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npy = state["numpy"]
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, *, model: torch.nn.Module, config: Mapping[str, Any], epoch: int, step: int,
                    best_metric: float | None = None, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None, scaler: torch.amp.GradScaler | None = None,
                    extra: Mapping[str, Any] | None = None) -> Path:
    """Save the full training state atomically. ``config`` must already be a plain dict (``common.config.to_dict``)."""
    state: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "model": unwrap_model(model).state_dict(),
        "epoch": int(epoch),
        "step": int(step),
        "best_metric": None if best_metric is None else float(best_metric),
        "config": dict(config),
        "rng": rng_state(),
        "extra": dict(extra or {}),
    }
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    return atomic_torch_save(state, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with ``weights_only=True``; errors name the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated file, foreign pickle, ...
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}. Is it complete and written by this "
                              f"repository? Foreign weights go through --init-weights or model.pretrained.") from exc
    if not isinstance(ckpt, dict) or "schema_version" not in ckpt:
        raise CheckpointError(f"{path} is not a training checkpoint of this repository (no schema_version); "
                              f"load plain weights with --init-weights instead")
    if ckpt["schema_version"] > SCHEMA_VERSION:
        raise CheckpointError(f"{path} has schema_version {ckpt['schema_version']}, newer than this code "
                              f"({SCHEMA_VERSION}); update the repository")
    return ckpt


def restore_training_state(ckpt: Mapping[str, Any], *, model: torch.nn.Module,
                           optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
                           scaler: torch.amp.GradScaler | None = None, restore_rng: bool = True
                           ) -> tuple[int, int, float | None]:
    """Load model/optimizer/scheduler/scaler/RNG from a checkpoint dict. Returns ``(epoch, step, best_metric)``."""
    unwrap_model(model).load_state_dict(ckpt["model"])
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if obj is not None and name in ckpt:
            obj.load_state_dict(ckpt[name])
    if restore_rng and "rng" in ckpt:
        set_rng_state(ckpt["rng"])
    return int(ckpt["epoch"]), int(ckpt["step"]), ckpt.get("best_metric")


def find_resume_checkpoint(resume: str | Path | None, experiment_dir: str | Path) -> Path | None:
    """``None`` -> None; ``auto`` -> newest ``<experiment_dir>/<timestamp>/checkpoints/last.pt`` (or None when the
    experiment never ran); a path -> that file (error when missing)."""
    if resume is None or str(resume) == "":
        return None
    if str(resume) == "auto":
        candidates = sorted(Path(experiment_dir).glob("*/checkpoints/last.pt"), key=lambda p: p.stat().st_mtime)
        return candidates[-1] if candidates else None
    path = Path(resume)
    if not path.is_file():
        raise CheckpointError(f"--resume {resume}: file not found (use --resume auto to pick the newest last.pt)")
    return path


def strip_prefixes(state_dict: Mapping[str, torch.Tensor], prefixes: tuple[str, ...] = ("module.", "_orig_mod.")
                   ) -> dict[str, torch.Tensor]:
    """Remove DDP/compile wrapper prefixes from every key (repeatedly, e.g. ``module._orig_mod.``)."""
    out = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in prefixes:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def load_init_weights(model: torch.nn.Module, path: str | Path, strict: bool = False) -> dict[str, list[str]]:
    """``--init-weights``: load only model weights from a checkpoint of ours or a bare state dict.

    Keys lose ``module.``/``_orig_mod.`` prefixes; tensors whose shape differs are skipped and reported.
    Returns ``{"missing": [...], "unexpected": [...], "shape_mismatch": [...]}``; with ``strict`` any of them raises.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"--init-weights {path}: file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        raw = torch.load(path, map_location="cpu", weights_only=True)
        state = raw.get("model", raw.get("state_dict", raw)) if isinstance(raw, dict) else raw
    state = strip_prefixes(state)
    target = unwrap_model(model)
    own = target.state_dict()
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    loadable = {k: v for k, v in state.items() if k not in mismatched}
    result = target.load_state_dict(loadable, strict=False)
    report = {"missing": list(result.missing_keys), "unexpected": list(result.unexpected_keys),
              "shape_mismatch": mismatched}
    if strict and any(report.values()):
        raise CheckpointError(f"--init-weights {path} does not match the model: {report}")
    return report
