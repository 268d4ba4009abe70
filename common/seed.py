"""Seeding and determinism for python, numpy, torch, DataLoader workers, albumentations and MONAI transforms.

Why per-worker reseeding matters: albumentations keeps its own generator (``Compose(seed=...)``) that ignores the
global seeds, and MONAI ``Randomizable`` transforms hold their own ``RandomState``; with ``num_workers > 0`` every
worker would otherwise start from the same copies and apply identical augmentations (Project-MONAI/MONAI#398).
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch

__all__ = ["seed_everything", "worker_init_fn", "make_generator", "loader_seed_kwargs", "reseed_transforms",
           "epoch_seed", "seed_loader_epoch"]

_MAX_SEED = 2**32 - 1


def seed_everything(seed: int, rank: int = 0, deterministic: bool = False) -> int:
    """Seed python, numpy and torch with ``seed + rank``; with ``deterministic`` also force deterministic kernels.

    Returns the effective seed. ``deterministic`` turns off cuDNN benchmarking, selects deterministic cuDNN
    algorithms and calls ``torch.use_deterministic_algorithms(True, warn_only=True)`` (ops without a deterministic
    implementation warn instead of failing); ``CUBLAS_WORKSPACE_CONFIG`` is set for deterministic cuBLAS.
    """
    effective = (int(seed) + int(rank)) % _MAX_SEED
    random.seed(effective)
    np.random.seed(effective)
    torch.manual_seed(effective)  # also seeds every CUDA device
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)
    return effective


def _children(obj: Any) -> list[Any]:
    if isinstance(obj, dict):
        return list(obj.values())
    if isinstance(obj, (list, tuple)):
        return list(obj)
    return list(getattr(obj, "__dict__", {}).values())


def reseed_transforms(obj: Any, seed: int) -> int:
    """Reseed every albumentations pipeline and MONAI Randomizable transform reachable from ``obj``.

    The search follows attributes, lists and dict values (depth <= 6) and stops at a reseeded object: an
    albumentations ``Compose`` passes its seed on to its children itself. Returns how many objects were reseeded.
    """
    try:
        from monai.transforms import Randomizable
    except ImportError:  # a project without MONAI still gets its albumentations pipelines reseeded
        Randomizable = ()

    seen: set[int] = set()
    count = 0

    def visit(item: Any, depth: int) -> None:
        nonlocal count
        if id(item) in seen or depth > 6 or isinstance(item, (str, bytes, int, float, np.ndarray, torch.Tensor)):
            return
        seen.add(id(item))
        sub_seed = (seed + 7919 * count) % _MAX_SEED
        if type(item).__module__.startswith("albumentations") and hasattr(item, "set_random_seed"):
            item.set_random_seed(sub_seed)
            count += 1
            return
        if isinstance(item, Randomizable):
            item.set_random_state(seed=sub_seed)
            count += 1
        for child in _children(item):
            visit(child, depth + 1)

    visit(obj, 0)
    return count


def worker_init_fn(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: derive python/numpy/transform seeds from the worker's torch seed.

    torch gives every worker ``base_seed + worker_id`` where ``base_seed`` comes from the loader's generator, so a
    seeded generator makes the workers' streams reproducible and distinct.
    """
    worker_seed = torch.initial_seed() % _MAX_SEED
    random.seed(worker_seed)
    np.random.seed(worker_seed)
    info = torch.utils.data.get_worker_info()
    if info is not None:
        reseed_transforms(info.dataset, worker_seed)


def make_generator(seed: int) -> torch.Generator:
    """A CPU generator for DataLoader shuffling and worker base seeds."""
    generator = torch.Generator()
    generator.manual_seed(int(seed) % _MAX_SEED)
    return generator


def loader_seed_kwargs(seed: int, rank: int = 0) -> dict[str, Any]:
    """``DataLoader(**loader_seed_kwargs(seed, rank))``: seeded generator plus the reseeding worker init."""
    return {"generator": make_generator(seed + 1000 * rank), "worker_init_fn": worker_init_fn}


def epoch_seed(seed: int, epoch: int, salt: int = 0) -> int:
    """A seed that is a pure function of ``(seed, epoch, salt)``: what an epoch draws never depends on history."""
    return int(np.random.SeedSequence([int(seed) % _MAX_SEED, int(epoch), int(salt)]).generate_state(1)[0])


def seed_loader_epoch(loader: torch.utils.data.DataLoader, seed: int, epoch: int) -> None:
    """Make one epoch of ``loader`` a function of ``(seed, epoch)`` only, so ``--resume`` replays it exactly.

    Reseeds the loader's generator (shuffling order and worker base seeds; workers then reseed their transforms
    through :func:`worker_init_fn`), calls ``set_epoch`` on a ``DistributedSampler`` (or any sampler / batch sampler
    that has it) and, when the loader has no workers, reseeds the dataset's albumentations / MONAI transforms in
    this process. Call it before iterating each epoch.
    """
    if loader.num_workers == 0:
        reseed_transforms(loader.dataset, epoch_seed(seed, epoch, salt=2))
    if loader.generator is not None:
        loader.generator.manual_seed(epoch_seed(seed, epoch))
    for sampler in (loader.sampler, getattr(loader, "batch_sampler", None)):
        if sampler is not None and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        inner = getattr(sampler, "sampler", None)
        if inner is not None and inner is not loader.sampler and hasattr(inner, "set_epoch"):
            inner.set_epoch(epoch)
        gen = getattr(sampler, "generator", None)
        if isinstance(gen, torch.Generator) and gen is not loader.generator:
            gen.manual_seed(epoch_seed(seed, epoch, salt=1))
