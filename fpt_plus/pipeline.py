"""The stages shared by train.py, eval.py, preload.py and reproduce.py, in the order a run meets them:

1. ``prepare_data``: synthetic data on first use (only in a folder the generator made), records of every split,
   every listed image checked (``data.verify``) before any run folder exists, mean/std (``auto`` = train split);
2. ``run_preload``: the frozen LPM's selected keys/values of every image cached once (FPT paper Sec. 2.4, official
   preload.py), refused when the cache was written for another variant/LPM/normalisation;
3. ``build_loaders``: train/val/test loaders with the inputs the model consumes (cache, features or images);
4. ``write_evaluation``: ``eval/summary.csv`` + ``eval/per_case.csv`` (one row per checkpoint and split), ROC and
   confusion figures; ``log_prediction_grid``: test inputs grouped by predicted grade, for TensorBoard.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from common.datasets import ensure_dataset, split_path, verify_files
from common.rundir import resolve_path
from common.runtime import (
    apply_threads,
    autocast,
    barrier,
    broadcast_object,
    dist_info,
    main_process_first,
    make_sampler,
    shard,
    unwrap_model,
)
from common.seed import loader_seed_kwargs
from common.tracking import Tracker, image_grid, plot_confusion_matrix, plot_roc, write_eval_tables
from fpt_plus.data import (
    SPLITS,
    ClassificationDataset,
    PreloadCache,
    Record,
    compute_mean_std,
    load_records,
    load_rgb,
    lpm_transform,
    side_transform,
)
from fpt_plus.models.lpm import FrozenLPM, compiled_lpm, num_selected, resolve_lpm_amp
from fpt_plus.settings import FPT_METHODS, Config

__all__ = ["DataBundle", "prepare_data", "lpm_threads", "preload_root", "uses_cache", "side_size", "cache_for",
           "model_inputs", "build_dataset", "make_loader", "run_preload", "build_loaders", "write_evaluation",
           "log_prediction_grid", "SCALARS", "PROJECT"]

PROJECT = "fpt_plus"
SCALARS = ("auc", "auc_prob", "accuracy", "balanced_accuracy", "f1_macro", "qwk", "kappa")


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


# --------------------------------------------------------------------------------------------- 1. data
def synthesize(cfg: Config) -> Path:
    """The synthetic dataset under ``data.root``, written on first use into a folder the generator creates."""
    from fpt_plus.synth import write_dataset

    root = resolve_path(cfg.data.root)
    params = {k: getattr(cfg.data.synth, k) for k in cfg.data.synth.__dataclass_fields__}
    with main_process_first():
        ensure_dataset(root, params, lambda folder: write_dataset(folder, cfg.data.synth,
                                                                   progress=cfg.runtime.progress),
                       what="synthetic fine-grained grading dataset")
    return root


def split_file(cfg: Config) -> Path | None:
    """The split CSV of the csv format: ``data.split_file`` or ``data/splits/fpt_plus/<root>/split.csv``."""
    if cfg.data.format != "csv":
        return None
    return split_path(PROJECT, resolve_path(cfg.data.root), "split.csv", cfg.data.split_file)


def prepare_data(cfg: Config) -> DataBundle:
    """Records of every split, each image checked (``data.verify``) before any work, and mean/std."""
    root = synthesize(cfg) if cfg.data.synthetic else resolve_path(cfg.data.root)
    records, classes = load_records(root, cfg.data.format, split_file(cfg), cfg.data.classes)
    verify_files([r.path for r in records], cfg.data.verify, what=f"{cfg.data.name} image")
    splits = {s: [r for r in records if r.split == s] for s in SPLITS}
    mean, std = cfg.data.mean, cfg.data.std
    if mean == "auto" or std == "auto":
        with main_process_first():  # rank 0 computes and stores them, the others read the stored values
            auto_mean, auto_std = auto_mean_std(cfg, splits["train"])
        mean = auto_mean if mean == "auto" else mean
        std = auto_std if std == "auto" else std
    return DataBundle(splits, classes, list(mean), list(std))


def preload_root(cfg: Config) -> Path:
    """Folder of the derived files of a data root (preload caches, mean/std record): ``data.preload_dir``'s parent;
    else ``<root>_preload/`` beside a synthetic set (the generator owns that place) and
    ``data/preload/fpt_plus/<root name>-<hash of the root>/`` for real data, never inside or beside a user's folder."""
    if cfg.data.preload_dir is not None:
        return resolve_path(cfg.data.preload_dir).parent
    root = resolve_path(cfg.data.root)
    if cfg.data.synthetic:
        return root.parent / f"{root.name}_preload"
    key = split_path(PROJECT, root).parent.name
    return resolve_path("data/preload") / PROJECT / key


def auto_mean_std(cfg: Config, train: list[Record]) -> tuple[list[float], list[float]]:
    """Mean/std over the train split at the LPM size, remembered in ``<preload root>/mean_std.json``."""
    key = {"images": [r.key for r in train[: cfg.data.mean_std_images or None]], "size": cfg.model.lpm.img_size}
    digest = hashlib.sha1(json.dumps(key).encode()).hexdigest()
    path = preload_root(cfg) / "mean_std.json"
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("digest") == digest:
            return stored["mean"], stored["std"]
    mean, std = compute_mean_std(train, cfg.model.lpm.img_size, cfg.data.mean_std_images, cfg.runtime.progress)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"digest": digest, "mean": mean, "std": std}))
    except OSError:  # a read-only location: recompute next time
        pass
    return mean, std


@contextlib.contextmanager
def lpm_threads(cfg: Config) -> Iterator[None]:
    """``runtime.lpm_threads`` torch threads while the frozen LPM runs (0 = torch's default), then the run's own."""
    before = torch.get_num_threads()
    apply_threads(cfg.runtime.lpm_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def device_of(cfg: Config) -> torch.device:
    """The device ``runtime.device`` names (``auto``: CUDA when present), for decisions made before a run starts."""
    from common.runtime import pick_device

    return pick_device(cfg.runtime.device)


def uses_cache(cfg: Config) -> bool:
    """FPT variants and linear probing read cached LPM outputs when ``data.preload`` is on."""
    return cfg.data.preload and cfg.model.method in (*FPT_METHODS, "linear_probe")


def side_size(cfg: Config) -> int:
    variant = cfg.model.fpt if cfg.model.method == "fpt" else cfg.model.fpt_plus
    return variant.side_img_size


def model_inputs(model: torch.nn.Module) -> tuple[str, ...]:
    """Dataset item fields the model consumes (``keys`` implies ``values``)."""
    return tuple(unwrap_model(model).input_keys)


def build_dataset(cfg: Config, bundle: DataBundle, split: str, inputs: tuple[str, ...], *,
                  train: bool, cache: PreloadCache | None = None, features: torch.Tensor | None = None,
                  records: list[Record] | None = None) -> ClassificationDataset:
    """Dataset of one split with the side/LPM transforms of the method (augmentation only when ``train``)."""
    lpm_size = cfg.model.lpm.img_size
    side_tf = side_transform(side_size(cfg), bundle.mean, bundle.std, train=train) if "side" in inputs else None
    if "lpm" in inputs:
        petl_train = train and cfg.model.method not in (*FPT_METHODS, "linear_probe")
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
    """Shuffled, drop_last loader for training (reseed it per epoch with ``common.seed.seed_loader_epoch``);
    ordered otherwise. Under torchrun each rank reads its share (DistributedSampler) unless ``split_across_ranks``
    is False (every rank needs the whole dataset, or the caller already sharded it)."""
    sampler = make_sampler(dataset, shuffle=train, seed=seed, drop_last=train) if split_across_ranks else None
    drop_last = train and len(dataset) >= batch_size
    return DataLoader(dataset, batch_size=batch_size, shuffle=train and sampler is None, sampler=sampler,
                      drop_last=drop_last, num_workers=num_workers, pin_memory=torch.cuda.is_available(),
                      persistent_workers=False, **loader_seed_kwargs(seed))


# --------------------------------------------------------------------------------------------- 2. preload
def cache_for(cfg: Config, bundle: DataBundle, variant: str | None = None) -> PreloadCache:
    """The preload cache identity of an FPT variant: folder and the meta.json that must match."""
    variant = variant or cfg.model.method
    if variant not in FPT_METHODS:
        raise ValueError(f"preloading caches FPT/FPT+ keys and values; method `{variant}` has none")
    lpm = cfg.model.lpm
    layers = list(getattr(cfg.model, variant).layers)
    meta: dict[str, Any] = {
        "variant": variant, "layers": layers, "lpm": lpm.name, "img_size": lpm.img_size,
        "patch_size": lpm.patch_size, "embed_dim": lpm.embed_dim, "depth": lpm.depth, "num_heads": lpm.num_heads,
        "head_dim": lpm.embed_dim // lpm.num_heads, "pretrained": cfg.model.pretrained,
        "init_seed": lpm.init_seed if cfg.model.pretrained == "none" else None,
        "token_ratio": cfg.model.token_ratio, "token_imp": cfg.model.token_imp,
        "num_keep": num_selected(lpm.img_size, lpm.patch_size, cfg.model.token_ratio),
        "dtype": cfg.data.preload_dtype, "mean": bundle.mean, "std": bundle.std,
        "lpm_amp": resolve_lpm_amp(cfg.model.lpm.amp, device_of(cfg)),
    }
    if cfg.data.preload_dir is not None:
        folder = resolve_path(cfg.data.preload_dir)
    else:  # one folder per variant and LPM weights: FPT+ on a random LPM never meets the pre-trained LPM's cache
        weights = hashlib.sha1(json.dumps([meta["lpm"], meta["pretrained"], meta["init_seed"]]).encode()).hexdigest()
        folder = preload_root(cfg) / f"{variant}-{weights[:8]}"
    return PreloadCache(folder, meta)


def run_preload(cfg: Config, bundle: DataBundle, variant: str | None = None, device: torch.device | None = None,
                lpm: FrozenLPM | None = None) -> PreloadCache:
    """Write the cache of ``variant`` (default ``model.method``) for every split; files that exist are kept."""
    variant = variant or cfg.model.method
    cache = cache_for(cfg, bundle, variant)
    if dist_info().is_main and not (cache.folder / "meta.json").is_file():
        cache.write_meta()
    barrier()  # under torchrun: meta.json exists before any rank checks it
    cache.check_meta()
    records = [r for split in SPLITS for r in bundle.splits[split]]
    # rank 0 decides what is missing (the others would race with its writes), every rank writes its share
    missing = broadcast_object([i for i, r in enumerate(records) if not cache.path(r.key).is_file()])
    todo = shard([records[i] for i in missing])
    if todo:
        write_cache(cfg, variant, bundle, cache, todo, device or torch.device("cpu"), lpm)
    barrier()  # the cache is complete before any rank trains from it
    return cache


def write_cache(cfg: Config, variant: str, bundle: DataBundle, cache: PreloadCache, todo: list[Record],
                device: torch.device, lpm: FrozenLPM | None) -> None:
    """Run the frozen LPM over ``todo`` (no augmentation) and save each image's selected keys/values."""
    from tqdm import tqdm

    if lpm is None:
        m = cfg.model
        lpm = FrozenLPM(m.lpm, getattr(m, variant).layers, m.token_ratio, m.token_imp, pretrained=m.pretrained)
    lpm = lpm.to(device)
    forward = compiled_lpm(lpm, cfg.model.lpm.compile)
    dataset = build_dataset(cfg, bundle, "train", ("lpm",), train=False, records=todo)
    loader = make_loader(dataset, cfg.data.preload_batch_size, train=False, seed=cfg.seed,
                         num_workers=cfg.data.num_workers, split_across_ranks=False)  # ``todo`` is this rank's shard
    with lpm_threads(cfg), torch.no_grad():
        for batch in tqdm(loader, desc=f"preload {variant}", leave=False, disable=not cfg.runtime.progress):
            with autocast(device, resolve_lpm_amp(cfg.model.lpm.amp, device)):
                keys, values = forward(batch["lpm"].to(device))  # (L, B, H, k, d)
            keys, values = keys.float().cpu(), values.float().cpu()
            for j, i in enumerate(batch["index"].tolist()):
                cache.save(todo[i].key, keys[:, j], values[:, j])


# --------------------------------------------------------------------------------------------- 3. loaders
@torch.no_grad()
def cached_features(model: torch.nn.Module, cfg: Config, bundle: DataBundle, split: str, device: torch.device
                    ) -> torch.Tensor:
    """Linear probing: CLS features ``(N, D)`` of one split from the frozen LPM (no augmentation), computed once."""
    from tqdm import tqdm

    dataset = build_dataset(cfg, bundle, split, ("lpm",), train=False)
    loader = make_loader(dataset, cfg.data.preload_batch_size, train=False, seed=cfg.seed,
                         num_workers=cfg.data.num_workers, split_across_ranks=False)  # every rank needs all features
    model.eval()
    with lpm_threads(cfg):
        amp = resolve_lpm_amp(cfg.model.lpm.amp, device)
        feats = [_encode(model, batch["lpm"].to(device), amp)
                 for batch in tqdm(loader, desc=f"features {split}", leave=False, disable=not cfg.runtime.progress)]
    return torch.cat(feats)


def _encode(model: torch.nn.Module, images: torch.Tensor, amp: str) -> torch.Tensor:
    with autocast(images.device, amp):
        return model.encode(images).float().cpu()


def build_loaders(cfg: Config, bundle: DataBundle, model: torch.nn.Module, device: torch.device
                  ) -> dict[str, DataLoader]:
    """Train/val/test loaders with the inputs the model consumes; builds the preload cache when it is missing."""
    inputs = model_inputs(model)
    cache = None
    features: dict[str, torch.Tensor | None] = {s: None for s in SPLITS}
    if "keys" in inputs:
        cache = run_preload(cfg, bundle, device=device)
    if "features" in inputs:
        features = {s: cached_features(unwrap_model(model), cfg, bundle, s, device) for s in SPLITS}
    loaders = {}
    for split in SPLITS:
        train = split == "train"
        ds = build_dataset(cfg, bundle, split, inputs, train=train, cache=cache, features=features[split])
        bs = cfg.optim.batch_size if train else cfg.optim.eval_batch_size
        loaders[split] = make_loader(ds, bs, train=train, seed=cfg.seed, num_workers=cfg.data.num_workers)
    return loaders


# --------------------------------------------------------------------------------------------- 4. evaluation
def _merge(path: Path, new: Any, keys: Sequence[str]) -> Any:
    """Rows of an existing table whose ``keys`` differ from every new row, followed by the new rows."""
    import pandas as pd

    if not path.is_file():
        return new
    old = pd.read_csv(path)
    if not set(keys) <= set(old.columns):
        return new
    replaced = old.set_index(list(keys)).index.isin(new.set_index(list(keys)).index)
    return pd.concat([old[~replaced], new], ignore_index=True)


def write_evaluation(eval_dir: Path, figures_dir: Path, tag: str, split: str, metrics: dict[str, Any],
                     indices: np.ndarray, labels: np.ndarray, logits: np.ndarray, records: Sequence[Record],
                     classes: Sequence[str]) -> None:
    """Rows ``(checkpoint=tag, split)`` of ``eval/summary.csv`` and ``eval/per_case.csv`` (rows of other checkpoints
    or splits are kept), plus ``roc_<tag>.png`` and ``confusion_<tag>.png``."""
    import pandas as pd

    from common.metrics import softmax_np

    row = {"checkpoint": tag, "split": split, **{k: metrics[k] for k in SCALARS}}
    row.update({f"auc_{name}": v for name, v in zip(classes, metrics["auc_per_class"])})
    probs = softmax_np(logits)
    per_case = pd.DataFrame({"checkpoint": tag, "split": split, "image": [records[i].key for i in indices],
                             "label": labels, "pred": probs.argmax(1)})
    for c, name in enumerate(classes):
        per_case[f"prob_{name}"] = probs[:, c]
    keys = ("checkpoint", "split")
    summary = _merge(eval_dir / "summary.csv", pd.DataFrame([row]), keys)
    write_eval_tables(eval_dir, summary.to_dict("records"), _merge(eval_dir / "per_case.csv", per_case, keys))
    if dist_info().is_main:
        plot_roc(labels, logits, figures_dir / f"roc_{tag}.png", class_names=list(classes))
        plot_confusion_matrix(metrics["confusion_matrix"], list(classes), figures_dir / f"confusion_{tag}.png")


def _bordered(image: np.ndarray, correct: bool, width: int = 3) -> np.ndarray:
    color = np.array([0, 200, 0] if correct else [230, 0, 0], np.uint8)
    out = np.empty((image.shape[0] + 2 * width, image.shape[1] + 2 * width, 3), np.uint8)
    out[:] = color
    out[width:-width, width:-width] = image
    return out


def log_prediction_grid(tracker: Tracker, records: Sequence[Record], indices: np.ndarray, labels: np.ndarray,
                        logits: np.ndarray, num_classes: int, size: int, step: int, png: Path, per_row: int = 8
                        ) -> None:
    """Test images (resized to ``size``), one row per predicted class, framed green when right and red when wrong,
    to TensorBoard (``test/inputs_by_prediction``) and ``png``."""
    from torchvision.transforms import v2

    if not tracker.enabled or len(indices) == 0:
        return
    resize = v2.Resize((size, size), antialias=True)
    preds = logits.argmax(1)
    rows = []
    for c in range(num_classes):
        chosen = np.flatnonzero(preds == c)[:per_row]
        tiles = [_bordered(resize(load_rgb(records[indices[j]].path)).permute(1, 2, 0).numpy(), labels[j] == c)
                 for j in chosen]
        rows.append(tiles or [np.full((size + 6, size + 6, 3), 255, np.uint8)])
    tracker.log_image("test/inputs_by_prediction", image_grid(rows), step, png_path=png)
