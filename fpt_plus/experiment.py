"""Glue shared by train.py, eval.py, preload.py and bench.py: data preparation, normalisation, preload-cache
identity and DataLoaders (spec 1.1, 1.8, 2, 3.1)."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from common.rundir import resolve_path
from common.runtime import main_process_first, make_sampler
from common.seed import loader_seed_kwargs
from fpt_plus.data import (
    ClassificationDataset,
    PreloadCache,
    Record,
    compute_mean_std,
    load_records,
    lpm_transform,
    side_transform,
)
from fpt_plus.models.lpm import num_selected
from fpt_plus.settings import FPT_METHODS, ExperimentConfig

__all__ = ["lpm_threads", "DataBundle", "prepare_data", "preload_root", "uses_cache", "side_size", "cache_for",
           "model_inputs", "make_loader", "build_dataset"]


@dataclass
class DataBundle:
    """Records per split, class names and the normalisation in use."""

    splits: dict[str, list[Record]]
    classes: list[str]
    mean: list[float]
    std: list[float]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def prepare_data(cfg: ExperimentConfig) -> DataBundle:
    """Generate the synthetic data on first use, read the records and resolve mean/std (``auto`` = train split)."""
    root = resolve_path(cfg.data.root)
    if cfg.data.synthetic:
        from fpt_plus.synth import ensure_dataset

        with main_process_first():
            ensure_dataset(root, cfg.data.synth)
    records, classes = load_records(root, cfg.data.format, cfg.data.split_file, cfg.data.classes)
    splits = {s: [r for r in records if r.split == s] for s in ("train", "val", "test")}
    mean, std = cfg.data.mean, cfg.data.std
    if mean == "auto" or std == "auto":
        with main_process_first():  # rank 0 computes and stores them, the others read the stored values
            auto_mean, auto_std = _auto_mean_std(cfg, splits["train"])
        mean = auto_mean if mean == "auto" else mean
        std = auto_std if std == "auto" else std
    return DataBundle(splits, classes, list(mean), list(std))


@contextlib.contextmanager
def lpm_threads(cfg: ExperimentConfig) -> Iterator[None]:
    """Use ``runtime.lpm_threads`` torch threads while the frozen LPM runs (big matmuls), then restore."""
    before = torch.get_num_threads()
    if cfg.runtime.lpm_threads > 0:
        torch.set_num_threads(cfg.runtime.lpm_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def preload_root(cfg: ExperimentConfig) -> Path:
    """Folder holding the preload caches (one sub-folder per variant) and the mean/std record."""
    if cfg.data.preload_dir is not None:
        return resolve_path(cfg.data.preload_dir).parent
    root = resolve_path(cfg.data.root)
    return root.parent / f"{root.name}_preload"


def _auto_mean_std(cfg: ExperimentConfig, train: list[Record]) -> tuple[list[float], list[float]]:
    """Mean/std over the train split at the LPM size, remembered in ``<preload root>/mean_std.json``."""
    key = {"images": [r.key for r in train[: cfg.data.mean_std_images or None]], "size": cfg.model.lpm.img_size}
    digest = hashlib.sha1(json.dumps(key).encode()).hexdigest()
    path = preload_root(cfg) / "mean_std.json"
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("digest") == digest:
            return stored["mean"], stored["std"]
    mean, std = compute_mean_std(train, cfg.model.lpm.img_size, cfg.data.mean_std_images)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"digest": digest, "mean": mean, "std": std}))
    except OSError:  # a read-only location: recompute next time
        pass
    return mean, std


def uses_cache(cfg: ExperimentConfig) -> bool:
    """FPT variants and linear probing read cached LPM outputs when ``data.preload`` is on."""
    return cfg.data.preload and cfg.method in (*FPT_METHODS, "linear_probe")


def side_size(cfg: ExperimentConfig) -> int:
    variant = cfg.model.fpt if cfg.method == "fpt" else cfg.model.fpt_plus
    return variant.side_img_size


def cache_for(cfg: ExperimentConfig, bundle: DataBundle, variant: str | None = None) -> PreloadCache:
    """The preload cache identity of an FPT variant: folder and the meta.json that must match."""
    variant = variant or cfg.method
    if variant not in FPT_METHODS:
        raise ValueError(f"preloading caches FPT/FPT+ keys and values; method `{variant}` has none")
    lpm = cfg.model.lpm
    layers = list(getattr(cfg.model, variant).layers)
    folder = resolve_path(cfg.data.preload_dir) if cfg.data.preload_dir is not None else preload_root(cfg) / variant
    meta: dict[str, Any] = {
        "variant": variant, "layers": layers, "lpm": lpm.name, "img_size": lpm.img_size,
        "patch_size": lpm.patch_size, "embed_dim": lpm.embed_dim, "depth": lpm.depth, "num_heads": lpm.num_heads,
        "head_dim": lpm.embed_dim // lpm.num_heads, "pretrained": lpm.pretrained,
        "init_seed": lpm.init_seed if lpm.pretrained == "none" else None,
        "token_ratio": cfg.model.token_ratio, "token_imp": cfg.model.token_imp,
        "num_keep": num_selected(lpm.img_size, lpm.patch_size, cfg.model.token_ratio),
        "dtype": cfg.data.preload_dtype, "mean": bundle.mean, "std": bundle.std, "lpm_amp": cfg.runtime.lpm_amp,
    }
    return PreloadCache(folder, meta)


def model_inputs(cfg: ExperimentConfig, model: torch.nn.Module) -> tuple[str, ...]:
    """Dataset item fields the model consumes (``keys`` implies ``values``)."""
    from common.runtime import unwrap_model

    return tuple(unwrap_model(model).input_keys)


def build_dataset(cfg: ExperimentConfig, bundle: DataBundle, split: str, inputs: tuple[str, ...], *,
                  train: bool, cache: PreloadCache | None = None, features: torch.Tensor | None = None,
                  records: list[Record] | None = None) -> ClassificationDataset:
    """Dataset of one split with the side/LPM transforms of the method (augmentation only when ``train``)."""
    lpm_size = cfg.model.lpm.img_size
    side_tf = side_transform(side_size(cfg), bundle.mean, bundle.std, train=train) if "side" in inputs else None
    if "lpm" in inputs:
        petl_train = train and cfg.method not in (*FPT_METHODS, "linear_probe")
        aug = cfg.data.lpm_train_aug if petl_train else "none"
        lpm_tf = (side_transform(lpm_size, bundle.mean, bundle.std, train=True) if aug == "weak"
                  else lpm_transform(lpm_size, bundle.mean, bundle.std, flip=aug == "flip"))
    else:
        lpm_tf = None
    return ClassificationDataset(records if records is not None else bundle.splits[split], inputs, side_tf=side_tf,
                                 lpm_tf=lpm_tf, cache=cache, features=features,
                                 cache_images=cfg.data.cache_images and train)


def make_loader(dataset: ClassificationDataset, batch_size: int, *, train: bool, seed: int, num_workers: int = 0,
                split_across_ranks: bool = True) -> DataLoader:
    """Shuffled, drop_last loader for training; ordered otherwise. Under torchrun each rank reads its share
    (DistributedSampler) unless ``split_across_ranks`` is False (every rank needs the whole dataset, or the caller
    already sharded it)."""
    sampler = make_sampler(dataset, shuffle=train, seed=seed, drop_last=train) if split_across_ranks else None
    drop_last = train and len(dataset) >= batch_size
    return DataLoader(dataset, batch_size=batch_size, shuffle=train and sampler is None, sampler=sampler,
                      drop_last=drop_last, num_workers=num_workers, pin_memory=torch.cuda.is_available(),
                      persistent_workers=False, **loader_seed_kwargs(seed))
