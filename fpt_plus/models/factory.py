"""Model construction by ``model.method`` and the learnable-parameter accounting of the official code
(official modules/builder.py, which prints the learnable ratio against the frozen ViT including its 1000-class head)."""

from __future__ import annotations

from torch import nn

from fpt_plus.models.fpt import build_fpt, build_side_only
from fpt_plus.models.lpm import reference_frozen_params
from fpt_plus.models.petl import build_petl
from fpt_plus.settings import FPT_METHODS, LPMConfig, ModelConfig

__all__ = ["build_model", "count_learnable", "learnable_percent"]


def build_model(m: ModelConfig, num_classes: int, *, preloaded: bool, lpm_amp: str = "off") -> nn.Module:
    """The network of ``m.method``. ``preloaded``: FPT variants are built without the LPM (they read cached keys and
    values) and linear probing takes cached features; ``lpm_amp`` autocasts the frozen LPM forward of FPT/FPT+."""
    if m.method in FPT_METHODS:
        return build_fpt(m, num_classes, m.method, with_lpm=not preloaded, lpm_amp=lpm_amp)
    if m.method in ("side_only", "side_only_hr"):
        return build_side_only(m, num_classes, high_resolution=m.method == "side_only_hr")
    return build_petl(m, num_classes, m.method, cached_features=preloaded)


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
