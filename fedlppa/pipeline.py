"""``prepare_sites``: the data of a run, checked before any work (synthetic set generated on first use, every h5
file of every listed Domain verified, each site read with its own label key). Centralised methods get one pooled
site (full masks for ``centralized_full``, each site's weak labels for ``centralized_weak``)."""

from __future__ import annotations

from pathlib import Path

from common.datasets import verify_files
from common.rundir import resolve_path
from fedlppa.data import DataError, SiteData, read_sites
from fedlppa.federation import SiteSpec
from fedlppa.settings import Config
from fedlppa.synth import ensure_synthetic

__all__ = ["data_root", "prepare_sites", "pooled_site", "evaluation_sites"]


def data_root(cfg: Config) -> Path:
    root = resolve_path(cfg.data.root)
    if cfg.data.synthetic:
        if cfg.data.synth.size != cfg.data.image_size:
            raise DataError(f"data.synth.size ({cfg.data.synth.size}) must equal data.image_size "
                            f"({cfg.data.image_size}) for the synthetic set")
        if len(cfg.data.synth.train_counts) != cfg.data.num_sites:
            raise DataError(f"data.synth.train_counts has {len(cfg.data.synth.train_counts)} sites, data.domains "
                            f"{cfg.data.num_sites}")
        ensure_synthetic(root, cfg.data.synth)
    return root


def evaluation_sites(cfg: Config) -> list[SiteData]:
    """Every configured site with its own weak labels (the test splits are what is scored)."""
    root = data_root(cfg)
    d = cfg.data
    files = [p for dom in d.domains for split in ("train", "test")
             for p in sorted((root / f"Domain{dom}" / split).glob("*.h5"))]
    verify_files(files, d.verify, what="FedLPPA h5")
    return read_sites(root, d.domains, d.sup_types, d.num_classes, d.in_channels)


def pooled_site(cfg: Config, sites: list[SiteData]) -> SiteSpec:
    """One site holding every site's training images: full masks (``centralized_full``) or weak labels."""
    full = cfg.federation.method == "centralized_full"
    train = []
    for site in sites:
        for case in site.train:
            if full and case.mask is None:
                raise DataError(f"centralized_full needs the `mask` key in the training files of "
                                f"Domain{site.domain}")
            label = case.mask if full else case.label
            train.append(type(case)(f"d{site.domain}_{case.stem}", case.image, label, case.mask))
    pooled = SiteData(0, 0, "mask" if full else "mixed", train, [c for s in sites for c in s.test])
    return SiteSpec(0, "mask" if full else sites[0].sup_type, pooled)


def prepare_sites(cfg: Config) -> tuple[list[SiteSpec], list[SiteData]]:
    """(training sites, evaluation sites). Federated and ``local`` runs train every site on its own data."""
    sites = evaluation_sites(cfg)
    if cfg.federation.method in ("centralized_full", "centralized_weak"):
        return [pooled_site(cfg, sites)], sites
    return [SiteSpec(k, s.sup_type, s) for k, s in enumerate(sites)], sites
