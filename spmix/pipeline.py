"""Data pipeline of an SPMix run: where the data is, the split, the file check, the saliency maps, the loaders.

``prepare_data`` runs these stages in order, all before the run folder is created:

1. ``locate_data``: a synthetic set is generated only into a folder the generator creates (``synthetic_set.py``
   through ``common.datasets.ensure_dataset``); a real root (``--data-root`` / ``data.synthetic=false``) must exist
   and is only ever read;
2. ``load_split``: the split file lives outside a real root (``data/splits/spmix/<root>-<hash>/``, or
   ``data.split_file``); a synthetic root keeps its own under ``<root>/splits/``;
3. ``verify_split``: every image every subset lists exists and decodes (``data.verify``), so a corrupt test image
   stops the run before any training;
4. ``prepare_saliency``: saliency maps of the training images (only for methods that use them), stored outside a
   real root (``data/saliency/spmix/<root>-<hash>/``, or ``saliency.root``).

``make_loaders`` builds the instance / class-balanced / validation loaders and ``seed_epoch`` makes every epoch's
data order and augmentation a function of (seed, epoch), so ``--resume auto`` continues exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from torch.utils.data import DataLoader

from spmix.data import ISICDataset, eval_transform, make_train_sampler, split_name, train_transforms
from spmix.engine import NEEDS_BALANCED
from spmix.settings import METHODS, SALIENCY_METHODS, Config

BALANCED_SALT = 17          # seed offset of the class-balanced loader
RANK_STRIDE = 1_000_003     # seed offset between torchrun ranks


@dataclass
class Prepared:
    """Everything a run needs from the data stages."""

    frame: pd.DataFrame          # image, label, path, part, subset
    data_root: Path
    split_file: Path
    saliency_root: Path | None   # None when the method reads no saliency
    checked: int                 # number of image files verified


@dataclass
class Loaders:
    primary: DataLoader          # instance (or class-balanced for re-sampling) training batches
    balanced: DataLoader | None  # class-balanced partner batches (SPMix, CMO)
    val: DataLoader


def locate_data(cfg: Config, progress: bool = False) -> Path:
    """Stage 1: the data root, generating the synthetic set on first use (only into a folder it creates)."""
    from common.rundir import resolve_path
    from spmix.synthetic_set import ensure_synthetic

    root = resolve_path(cfg.data.root)
    if cfg.data.synthetic:
        d = cfg.data
        return ensure_synthetic(root, d.synth_train, d.synth_val_per_class, d.synth_test_per_class,
                                tail_pool=d.synth_tail_pool, progress=progress)
    if not root.is_dir():
        raise FileNotFoundError(f"data.root={root} does not exist; point --data-root at the folder holding the "
                                f"unzipped ISIC 2018 Task 3 archives (layout in spmix/README.md)")
    return root


def split_file(cfg: Config, root: Path) -> Path:
    """Stage 2's file: ``data.split_file``, else inside a synthetic root, else ``data/splits/spmix/...``."""
    from common.datasets import split_path

    name = split_name(cfg.data.split, cfg.seed, cfg.data.holdout_per_class)
    if cfg.data.synthetic and not cfg.data.split_file:
        return root / "splits" / name
    return split_path("spmix", root, name, cfg.data.split_file or None)


def saliency_dir(cfg: Config, root: Path) -> Path:
    """Where the saliency maps of ``root`` live: ``saliency.root``, inside a synthetic root, else
    ``data/saliency/spmix/<root>-<hash>/`` (the same key as the split folder)."""
    from common.datasets import split_path
    from common.rundir import resolve_path

    if cfg.saliency.root:
        return resolve_path(cfg.saliency.root)
    if cfg.data.synthetic:
        return root / "saliency"
    return resolve_path("data/saliency/spmix") / split_path("spmix", root, "saliency").parent.name


def verify_split(cfg: Config, frame: pd.DataFrame) -> int:
    """Stage 3: every listed image exists and decodes (``data.verify``: header | full | off)."""
    from common.datasets import verify_files

    return verify_files(sorted(set(frame["path"])), cfg.data.verify, what="ISIC 2018 image")


def prepare_saliency(cfg: Config, frame: pd.DataFrame, root: Path) -> Path | None:
    """Stage 4: saliency maps of the training images (methods in ``SALIENCY_METHODS``); records in
    ``cfg.saliency.resolved`` the detector that ran (or produced the stored maps)."""
    from spmix.saliency import precompute_maps, read_saliency_record, resolve_method

    if cfg.method not in SALIENCY_METHODS:
        cfg.saliency.resolved = "unused"
        return None
    resolved = resolve_method(cfg.saliency.method)
    sal_root = saliency_dir(cfg, root)
    record = read_saliency_record(sal_root)
    if record is not None and record.get("method") != resolved:
        raise RuntimeError(f"saliency maps in {sal_root} were computed with {record.get('method')}, but "
                           f"saliency.method={cfg.saliency.method} resolves to {resolved}. Delete that folder, point "
                           f"saliency.root elsewhere, or set saliency.method={record.get('method')}")
    if cfg.saliency.precompute:
        train_paths = sorted({Path(p) for p in frame.loc[frame["subset"] == "train", "path"]})
        precompute_maps(train_paths, root, sal_root, resolved, progress=cfg.runtime.progress)
    cfg.saliency.resolved = resolved
    return sal_root


def prepare_data(cfg: Config, with_saliency: bool = True) -> Prepared:
    """Stages 1-4 in order (4 only ``with_saliency``); raises before any training on a missing, foreign or
    corrupt input."""
    from spmix.data import load_split
    from spmix.saliency import resolve_method

    resolve_method(cfg.saliency.method)  # an unavailable detector fails before any data is written
    root = locate_data(cfg, progress=cfg.runtime.progress)
    path = split_file(cfg, root)
    frame = load_split(root, cfg.data.split, cfg.seed if cfg.data.split != "official" else 0,
                       cfg.data.holdout_per_class, path=path)
    checked = verify_split(cfg, frame)
    sal_root = prepare_saliency(cfg, frame, root) if with_saliency else None
    return Prepared(frame, root, path, sal_root, checked)


def subset(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    part = frame[frame["subset"] == name].reset_index(drop=True)
    if part.empty:
        raise ValueError(f"the split has no `{name}` images")
    return part


def make_loaders(cfg: Config, prep: Prepared, two_views: bool) -> Loaders:
    """Training loaders (one or two views per image) and the validation loader; under torchrun every loader reads
    this rank's share."""
    from common.runtime import dist_info, make_sampler
    from common.seed import loader_seed_kwargs

    rank = dist_info().rank
    q, k = train_transforms(cfg.data.img_size, cfg.data.augment)
    ds = ISICDataset(subset(prep.frame, "train"), [q, k] if two_views else [q], prep.data_root, prep.saliency_root,
                     cfg.data.cache)
    sampler_kind, mixing, _ = METHODS[cfg.method]
    kw = dict(batch_size=cfg.optim.batch_size, num_workers=cfg.data.num_workers, drop_last=True)
    sampler = make_train_sampler(ds.labels, sampler_kind, cfg.seed)
    primary = DataLoader(ds, sampler=sampler, shuffle=sampler is None, **kw, **loader_seed_kwargs(cfg.seed, rank))
    balanced = None
    if mixing in NEEDS_BALANCED:
        seed = cfg.seed + BALANCED_SALT
        balanced = DataLoader(ds, sampler=make_train_sampler(ds.labels, "class_balanced", seed), **kw,
                              **loader_seed_kwargs(seed, rank))
    val_ds = ISICDataset(subset(prep.frame, "val"), [eval_transform(cfg.data.img_size, cfg.data.augment)],
                         cache=cfg.data.cache)
    val = DataLoader(val_ds, batch_size=cfg.optim.eval_batch_size, num_workers=cfg.data.num_workers,
                     sampler=make_sampler(val_ds, shuffle=False))
    return Loaders(primary, balanced, val)


def seed_epoch(loaders: Loaders, seed: int, epoch: int) -> None:
    """Shuffling, class-balanced draws, worker seeds and the augmentation RNG of ``epoch`` as a function of
    (seed, epoch, rank) only: a resumed run sees exactly the batches an uninterrupted one would."""
    from common.runtime import dist_info
    from common.seed import epoch_seed, reseed_transforms, seed_loader_epoch

    rank = dist_info().rank
    seed_loader_epoch(loaders.primary, seed + RANK_STRIDE * rank, epoch)
    if loaders.balanced is not None:
        seed_loader_epoch(loaders.balanced, seed + BALANCED_SALT + RANK_STRIDE * rank, epoch)
    reseed_transforms(loaders.primary.dataset, epoch_seed(seed + RANK_STRIDE * rank, epoch, salt=2))


def eval_loader(cfg: Config, frame: pd.DataFrame) -> DataLoader:
    """Plain (single-process) loader of ``frame`` with the evaluation transform."""
    ds = ISICDataset(frame, [eval_transform(cfg.data.img_size, cfg.data.augment)], cache=False)
    return DataLoader(ds, batch_size=cfg.optim.eval_batch_size, num_workers=cfg.data.num_workers)
