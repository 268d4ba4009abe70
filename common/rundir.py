"""Run directories and repository-rooted paths.

``runs/`` and ``data/`` resolve to the repository root whatever the working directory, so
``cd fpt_plus && python train.py`` and ``make reproduce-fpt`` write to the same place. A run lives in
``runs/<project>/<experiment>/<timestamp>/`` with ``config.yaml``, ``env.json``, ``metrics.csv``, ``tb/``,
``checkpoints/``, ``eval/`` and ``figures/``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from common.config import dump_config
from common.runtime import broadcast_object, dist_info

__all__ = ["repo_root", "resolve_path", "RunDir", "create_run_dir", "write_env_json", "latest_run", "git_sha",
           "RunFolderError", "check_writable", "OpenedRun", "open_run", "newest_checkpoint"]

_ENV_PACKAGES = ("torch", "torchvision", "timm", "monai", "numpy", "albumentations", "scikit-learn",
                 "scikit-image", "opencv-python-headless", "opencv-contrib-python-headless", "pandas", "flwr",
                 "segment-anything", "transformers")


def repo_root() -> Path:
    """The repository root: the folder above ``common/`` that holds ``pyproject.toml`` (editable install), else cwd."""
    here = Path(__file__).resolve().parent.parent
    if (here / "pyproject.toml").is_file():
        return here
    return Path.cwd()


def resolve_path(path: str | Path) -> Path:
    """Absolute paths stay; relative paths are taken from the repository root (``data/...``, ``runs/...``)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else repo_root() / path


@dataclass(frozen=True)
class RunDir:
    """The folders of one run; all exist once created."""

    path: Path

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def eval(self) -> Path:
        return self.path / "eval"

    @property
    def figures(self) -> Path:
        return self.path / "figures"

    @property
    def tb(self) -> Path:
        return self.path / "tb"

    @property
    def metrics_csv(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def experiment_dir(self) -> Path:
        return self.path.parent


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_root(), capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def write_env_json(path: str | Path, device: torch.device | str | None = None, extra: dict[str, Any] | None = None
                   ) -> Path:
    """Versions of python and the key packages, git SHA, device and GPU name."""
    versions = {}
    for name in _ENV_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
        "git_sha": git_sha(),
        "device": str(device) if device is not None else None,
        "cuda_available": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "world_size": dist_info().world_size,
        "argv": sys.argv,
    }
    env.update(extra or {})
    path = Path(path)
    path.write_text(json.dumps(env, indent=2))
    return path


def create_run_dir(project: str, experiment: str, config: Any = None, *, root: str | Path = "runs",
                   device: torch.device | str | None = None, timestamp: str | None = None,
                   existing: str | Path | None = None) -> RunDir:
    """Create ``<root>/<project>/<experiment>/<timestamp>/`` with its sub-folders, ``config.yaml`` and ``env.json``.

    ``root`` is resolved from the repository root. ``existing`` reuses a run folder (resume). In a torchrun job
    rank 0 chooses the folder and writes the files; every rank gets the same path back.
    """
    info = dist_info()
    if existing is not None:
        path = Path(existing)
    else:
        stamp = timestamp or datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        path = resolve_path(root) / project / experiment / stamp
    path = Path(broadcast_object(str(path)))
    run = RunDir(path)
    if info.is_main:
        for folder in (run.path, run.checkpoints, run.eval, run.figures, run.tb):
            folder.mkdir(parents=True, exist_ok=True)
        if config is not None:
            dump_config(config, run.path / "config.yaml")
        write_env_json(run.path / "env.json", device)
    return run


def latest_run(project: str, experiment: str, root: str | Path = "runs", require: str | None = None) -> Path | None:
    """Newest run folder of an experiment (optionally one containing the relative file ``require``)."""
    base = resolve_path(root) / project / experiment
    runs = sorted((p for p in base.glob("*") if p.is_dir()), key=lambda p: p.name)
    if require is not None:
        runs = [p for p in runs if (p / require).exists()]
    return runs[-1] if runs else None


class RunFolderError(RuntimeError):
    """The runs folder cannot be written; the message names the config key and the fix."""


def check_writable(folder: str | Path, key: str = "runs_root") -> Path:
    """Create ``folder`` if needed and prove it is writable (a probe file), before any work is done."""
    folder = resolve_path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise RunFolderError(f"{key}={folder} is not writable ({exc.strerror or exc}); point {key} at a folder "
                             f"you can write, e.g. `{key}=/tmp/runs`") from exc
    return folder


@dataclass(frozen=True)
class OpenedRun:
    """A run folder and, when resuming, the checkpoint to continue from."""

    run: RunDir
    resume_from: Path | None


def open_run(project: str, cfg: Any, *, resume: str | Path | None = None, device: torch.device | str | None = None,
             experiment: str | None = None) -> OpenedRun:
    """Create a run folder, or reopen the one a resumed checkpoint lives in, and say which on stdout.

    ``cfg`` is the project's root ``Config`` (``experiment`` and ``runs_root`` are read from it; ``experiment``
    overrides the name). ``resume``: ``None`` (fresh), ``auto`` (newest ``last.pt`` of the experiment; fresh when
    there is none, and the message says so) or a path to a checkpoint, whose run folder is reused.
    ``config.yaml`` is written again on resume so that it matches the run's current config.
    """
    from common.checkpoint import find_resume_checkpoint  # checkpoint imports runtime only; no cycle either way

    name = experiment or cfg.experiment
    runs_root = check_writable(cfg.runs_root)
    experiment_dir = runs_root / project / name
    checkpoint = find_resume_checkpoint(resume, experiment_dir)
    info = dist_info()
    if checkpoint is None:
        run = create_run_dir(project, name, cfg, root=runs_root, device=device)
        if info.is_main:
            why = f" (--resume auto: no last.pt under {experiment_dir})" if str(resume) == "auto" else ""
            print(f"[{project}] new run {run.path}{why}")
        return OpenedRun(run, None)
    run = create_run_dir(project, name, cfg, root=runs_root, device=device, existing=checkpoint.parent.parent)
    if info.is_main:
        print(f"[{project}] resuming {run.path} from {checkpoint}")
    return OpenedRun(run, checkpoint)


def newest_checkpoint(project: str, experiment: str, root: str | Path = "runs",
                      names: Sequence[str] = ("best.pt", "last.pt")) -> Path | None:
    """``--checkpoint auto``: the newest run of the experiment holding one of ``names`` (first name preferred)."""
    base = resolve_path(root) / project / experiment
    for run in sorted((p for p in base.glob("*") if p.is_dir()), key=lambda p: p.name, reverse=True):
        for name in names:
            if (run / "checkpoints" / name).is_file():
                return run / "checkpoints" / name
    return None
