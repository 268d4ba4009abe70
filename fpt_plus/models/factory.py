"""Model construction by ``method`` and the learnable-parameter accounting of the official code (spec 6.1)."""

from __future__ import annotations

from torch import nn

from fpt_plus.models.fpt import build_fpt, build_side_only
from fpt_plus.models.lpm import reference_frozen_params
from fpt_plus.models.petl import build_petl
from fpt_plus.settings import FPT_METHODS, ExperimentConfig, LPMConfig

__all__ = ["build_model", "count_learnable", "learnable_percent"]


def build_model(cfg: ExperimentConfig, num_classes: int, *, preloaded: bool | None = None) -> nn.Module:
    """The network of ``cfg.method``. ``preloaded`` (default ``cfg.data.preload``): FPT variants are built without
    the LPM and linear probing takes cached features."""
    preloaded = cfg.data.preload if preloaded is None else preloaded
    if cfg.method in FPT_METHODS:
        return build_fpt(cfg, num_classes, cfg.method, with_lpm=not preloaded)
    if cfg.method == "side_only":
        return build_side_only(cfg, num_classes)
    return build_petl(cfg, num_classes, cfg.method, cached_features=preloaded)


def count_learnable(model: nn.Module) -> int:
    """Number of parameter elements with ``requires_grad``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def learnable_percent(method: str, learnable: int, lpm: LPMConfig) -> float:
    """Learnable share in percent with the official denominator: learnable / (learnable + frozen ViT incl. its
    1000-class head at the pre-training grid). Full fine-tuning is 100 % by definition; side-only counts against
    the same frozen denominator so its number is comparable to FPT+'s."""
    if method == "full_finetune":
        return 100.0
    return 100.0 * learnable / (learnable + reference_frozen_params(lpm))
