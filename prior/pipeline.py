"""Data preparation shared by the entry points: the synthetic set on first use, dataset folders, file checks,
seeded split files (under ``data/splits/prior/``, never inside a data root) and the loaders."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from common.datasets import split_path, verify_files
from common.rundir import resolve_path
from common.runtime import make_sampler
from common.seed import loader_seed_kwargs
from prior.data import (
    FIVE_CLASSES,
    MimicStudy,
    PretrainDataset,
    build_5x200,
    collate_pretrain,
    dataset_dir,
    read_5x200,
    read_mimic,
)
from prior.settings import Config
from prior.synth import ensure_synthetic

__all__ = ["PretrainData", "prepare_data", "pretrain_loader", "data_folder", "zeroshot_set", "retrieval_reports",
           "retrieval_studies", "nested_fractions"]

FIVE_IDX = [("Atelectasis", 8), ("Cardiomegaly", 2), ("Consolidation", 6), ("Edema", 5), ("Pleural Effusion", 10)]


@dataclass
class PretrainData:
    train: list[MimicStudy]
    test: list[MimicStudy]
    root: Path


def data_folder(cfg: Config, name: str) -> Path:
    """The folder of dataset ``name`` (mimic, chexpert, rsna, siim, covidx, object_cxr); the synthetic set is
    generated into ``data.root`` first when ``data.synthetic``."""
    root = resolve_path(cfg.data.root)
    if cfg.data.synthetic:
        ensure_synthetic(root, cfg.data.synth)
    return dataset_dir(root, getattr(cfg.data, f"{name}_dir"))


def prepare_data(cfg: Config) -> PretrainData:
    """MIMIC-CXR train (+ test for retrieval) studies, every listed image checked before any run folder exists."""
    root = data_folder(cfg, "mimic")
    train = read_mimic(root, ("train",), cfg.data.min_sentences)
    test = read_mimic(root, ("test",), cfg.data.min_sentences)
    if len(train) < cfg.optim.batch_size:
        raise ValueError(f"{root}: {len(train)} training studies, fewer than optim.batch_size={cfg.optim.batch_size}")
    verify_files([p for s in train + test for p in s.images], cfg.data.verify, what="MIMIC-CXR image")
    return PretrainData(train, test, root)


def pretrain_loader(cfg: Config, studies: list[MimicStudy], rank: int = 0) -> DataLoader:
    a = cfg.augment
    dataset = PretrainDataset(studies, cfg.data.image_size, cfg.data.mean, cfg.data.std, augment=True,
                              degrees=a.degrees, hflip=a.hflip, hflip_p=a.hflip_p, seed=cfg.seed)
    sampler = make_sampler(dataset, shuffle=True, seed=cfg.seed, drop_last=True)
    return DataLoader(dataset, batch_size=cfg.optim.batch_size, shuffle=sampler is None, sampler=sampler,
                      drop_last=True, num_workers=cfg.data.num_workers, collate_fn=collate_pretrain,
                      **loader_seed_kwargs(cfg.seed, rank))


def zeroshot_set(cfg: Config, per_class: int | None = None, seed: int = 114514) -> tuple[list[Path], np.ndarray]:
    """The CheXpert 5x200 set: ``chexpert_5x200.json`` in the CheXpert folder when present (the official file),
    else built with ``seed`` into ``data/splits/prior/`` (the synthetic set: ``n_5x200_per_class`` per class)."""
    root = data_folder(cfg, "chexpert")
    official = root / "chexpert_5x200.json"
    if official.is_file():
        return read_5x200(official, root)
    per_class = per_class or (cfg.data.synth.n_5x200_per_class if cfg.data.synthetic else 200)
    path = split_path("prior", root, f"chexpert_5x{per_class}_seed{seed}.json")
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(build_5x200(root, seed, per_class)))
    return read_5x200(path, root)


def retrieval_studies(cfg: Config, data: PretrainData) -> list[MimicStudy]:
    """The candidate studies of retrieval: the MIMIC test studies, plus those of the other ``eval.retrieval_splits``
    (only their reports are read; neither split is seen in pre-training)."""
    extra = tuple(s for s in cfg.eval.retrieval_splits if s != "test")
    more = read_mimic(data.root, extra, cfg.data.min_sentences, verbose=False) if extra else []
    return (data.test if "test" in cfg.eval.retrieval_splits else []) + more


def retrieval_reports(studies: list[MimicStudy]) -> tuple[list[list[str]], np.ndarray]:
    """MIMIC test reports positive for exactly one of the five zero-shot classes, and that class."""
    reports, labels = [], []
    for s in studies:
        pos = [k for k, (_, col) in enumerate(FIVE_IDX) if s.labels[col] == 1]
        if len(pos) == 1:
            reports.append(s.sentences)
            labels.append(pos[0])
    if not reports:
        raise ValueError(f"no MIMIC test report is positive for exactly one of {FIVE_CLASSES}")
    return reports, np.asarray(labels)


def nested_fractions(n: int, fractions: list[float], seed: int) -> dict[float, np.ndarray]:
    """Nested seeded subsets: the first ``ceil(f * n)`` indices of one permutation for every fraction ``f``."""
    order = np.random.default_rng(seed).permutation(n)
    return {f: np.sort(order[: max(1, int(np.ceil(f * n)))]) for f in fractions}
