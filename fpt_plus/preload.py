"""Preloading (FPT paper Sec. 2.4; spec 1.8): run the frozen LPM once per image and cache the selected keys and
values of the tapped layers as safetensors ``(L, H, k, d)`` (fp32 by default, fp16 optional).

Training from the cache never builds the LPM. Files that already exist are kept (re-running resumes an
interrupted preload); a cache written for another variant/LPM/normalisation is refused (meta.json).

    python preload.py --config configs/default.yaml [method=fpt] [data.preload_dtype=fp16]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from common.config import build_arg_parser, parse_cli
from common.runtime import autocast, barrier, broadcast_object, dist_info, pick_device, shard
from fpt_plus.data import PreloadCache
from fpt_plus.experiment import DataBundle, build_dataset, cache_for, lpm_threads, make_loader, prepare_data
from fpt_plus.models.lpm import FrozenLPM
from fpt_plus.settings import FPT_METHODS, ExperimentConfig

__all__ = ["run_preload", "main"]

PROJECT_DIR = Path(__file__).resolve().parent


def run_preload(cfg: ExperimentConfig, bundle: DataBundle, variant: str | None = None,
                device: torch.device | None = None, lpm: FrozenLPM | None = None, progress: bool = False
                ) -> PreloadCache:
    """Write the cache of ``variant`` (default ``cfg.method``) for every split; returns the cache."""
    variant = variant or cfg.method
    cache = cache_for(cfg, bundle, variant)
    if dist_info().is_main and not (cache.folder / "meta.json").is_file():
        cache.write_meta()
    barrier()  # under torchrun: meta.json exists before any rank checks it
    cache.check_meta()
    records = [r for split in ("train", "val", "test") for r in bundle.splits[split]]
    # rank 0 decides what is missing (the others would race with its writes), every rank writes its share
    missing = broadcast_object([i for i, r in enumerate(records) if not cache.path(r.key).is_file()])
    todo = shard([records[i] for i in missing])
    if todo:
        _write_cache(cfg, variant, bundle, cache, todo, device, lpm, progress)
    barrier()  # the cache is complete before any rank trains from it
    return cache


def _write_cache(cfg: ExperimentConfig, variant: str, bundle: DataBundle, cache: PreloadCache, todo: list,
                 device: torch.device | None, lpm: FrozenLPM | None, progress: bool) -> None:
    """Run the frozen LPM over ``todo`` (no augmentation) and save each image's selected keys/values."""
    device = device or pick_device(cfg.runtime.device)
    if lpm is None:
        v = getattr(cfg.model, variant)
        lpm = FrozenLPM(cfg.model.lpm, v.layers, cfg.model.token_ratio, cfg.model.token_imp).to(device)
    dataset = build_dataset(cfg, bundle, "train", ("lpm",), train=False, records=todo)
    loader = make_loader(dataset, cfg.data.preload_batch_size, train=False, seed=cfg.seed,
                         num_workers=cfg.data.num_workers, split_across_ranks=False)  # ``todo`` is this rank's shard
    if progress:
        from tqdm import tqdm

        loader = tqdm(loader, desc=f"preload {variant}", leave=False)
    with lpm_threads(cfg):
        for batch in loader:
            with autocast(device, cfg.runtime.lpm_amp):
                keys, values = lpm(batch["lpm"].to(device))  # (L, B, H, k, d)
            keys, values = keys.float().cpu(), values.float().cpu()
            for j, i in enumerate(batch["index"].tolist()):
                cache.save(todo[i].key, keys[:, j], values[:, j])


def main(argv: Sequence[str] | None = None) -> PreloadCache:
    parser = build_arg_parser("Cache the frozen LPM's selected keys/values (FPT / FPT+ preloading).", training=False)
    cfg, _ = parse_cli(ExperimentConfig, argv, parser, search_dirs=[PROJECT_DIR])
    if cfg.method not in FPT_METHODS:
        parser.error(f"method={cfg.method}: preloading applies to fpt_plus and fpt only")
    bundle = prepare_data(cfg)
    cache = run_preload(cfg, bundle, progress=True)
    print(f"preload cache: {cache.folder} ({cache.shape()} per image, {cfg.data.preload_dtype})")
    return cache


if __name__ == "__main__":
    main()
