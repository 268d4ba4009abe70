"""Data preparation and loaders of a UNO-QA run: synthetic set on first use, every listed image checked before any
work, outstanding-only training loaders (the anomaly setting of the paper: only outstanding images are seen).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from common.datasets import verify_files
from common.rundir import resolve_path
from octa_iqa.data import DataError, QualityDataset, Record, format_counts, load_records, split_outstanding
from octa_iqa.engine import cache_features, make_loader
from octa_iqa.model import LowQualityRepresentation
from octa_iqa.settings import Config
from octa_iqa.synth import generate_dataset

__all__ = ["PreparedData", "prepare_data", "TrainLoaders", "build_loaders", "cache_frozen_features",
           "assert_outstanding_only"]


@dataclass
class PreparedData:
    """The data root and the records of every split a run reads (all of them checked)."""

    root: Path
    train: list[Record]
    test: list[Record]
    extra: dict[str, list[Record]]


def _load_extra(cfg: Config) -> dict[str, list[Record]]:
    extra = {}
    for split in cfg.data.extra_splits:
        try:
            extra[split] = load_records(cfg.data, split)
        except DataError as exc:
            print(f"[data] extra split {split!r} not evaluated: {exc}", flush=True)
    return extra


def prepare_data(cfg: Config, with_train: bool = True) -> PreparedData:
    """Generate the synthetic set on first use (``data.synthetic``), read every split that is used and check each
    of its images (``data.verify``; all training images, not only the outstanding ones) before anything is
    trained or any run folder exists. ``with_train=False`` (evaluation) leaves the training split unread."""
    root = resolve_path(cfg.data.root)
    if cfg.data.synthetic:
        generate_dataset(root, cfg.data.synth)
    train = load_records(cfg.data, cfg.data.train_split) if with_train else []
    test = load_records(cfg.data, cfg.data.test_split)
    extra = _load_extra(cfg)
    every = [r.path for records in (train, test, *extra.values()) for r in records]
    verify_files(every, cfg.data.verify, what="OCTA image")
    return PreparedData(root, train, test, extra)


@dataclass
class TrainLoaders:
    """``train`` (shuffled, augmented when configured), ``fit`` (bank fitting) and ``hold`` (early stopping)."""

    train: DataLoader
    fit: DataLoader
    hold: DataLoader
    hold_records: list[Record]


def assert_outstanding_only(loader: DataLoader) -> None:
    """Refuse to train if any record behind the loader is not outstanding (label 2): the anomaly setting."""
    labels = {r.label for r in loader.dataset.records}
    if labels != {2}:
        raise RuntimeError(f"training loader holds labels {sorted(labels)}; UNO-QA trains on outstanding (2) only")


def build_loaders(cfg: Config, records: list[Record]) -> TrainLoaders:
    """Outstanding training images split into fit / held-out (seeded); non-outstanding ones are never read."""
    fit, hold = split_outstanding(records, cfg.data.holdout_fraction, cfg.data.split_seed)
    print(f"[train] outstanding only: fit {len(fit)}, held-out {len(hold)} "
          f"(ignored non-outstanding: {format_counts([r for r in records if r.label != 2])})", flush=True)
    bs, workers, pretrained = cfg.optim.batch_size, cfg.data.num_workers, cfg.model.pretrained
    loaders = TrainLoaders(
        train=make_loader(QualityDataset(fit, cfg.data, pretrained, augment=cfg.data.augment, seed=cfg.seed), bs,
                          True, cfg.seed, workers),
        fit=make_loader(QualityDataset(fit, cfg.data, pretrained), bs, False, cfg.seed, workers),
        hold=make_loader(QualityDataset(hold, cfg.data, pretrained), bs, False, cfg.seed, workers),
        hold_records=hold)
    for loader in (loaders.train, loaders.fit, loaders.hold):
        assert_outstanding_only(loader)
    return loaders


def cache_frozen_features(model: LowQualityRepresentation, cfg: Config, loaders: TrainLoaders,
                          device: torch.device) -> TrainLoaders:
    """The backbone is frozen from here on: its features are computed once for the un-augmented loaders (and for
    training too when ``data.augment`` is off)."""
    fit_cache = cache_features(model, loaders.fit, device, cfg.runtime.progress)
    hold_cache = cache_features(model, loaders.hold, device, cfg.runtime.progress)
    bs, workers = cfg.optim.batch_size, cfg.data.num_workers
    train = loaders.train if cfg.data.augment else make_loader(fit_cache, bs, True, cfg.seed, workers)
    return TrainLoaders(train=train, fit=make_loader(fit_cache, bs, False, cfg.seed, workers),
                        hold=make_loader(hold_cache, bs, False, cfg.seed, workers), hold_records=loaders.hold_records)
