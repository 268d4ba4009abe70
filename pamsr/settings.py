"""Typed configuration of PAMSR experiments (loaded from ``configs/*.yaml`` with :func:`common.config.load_config`).

Defaults are the official recipe (spec section 2: Adam 1e-4, batch 8, LR patch 64, early stopping after 30 epochs
without a new best validation PSNR, 5-fold split with seed 55, fold 0). The embedded default config shrinks the
network and the synthetic images so that it finishes on a laptop CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from common.runtime import RuntimeConfig

__all__ = ["RegistrationConfig", "DisplacementConfig", "SynthConfig", "DataConfig", "ModelConfig", "LossConfig",
           "OptimConfig", "EvalConfig", "RuntimeConfig", "Config"]


@dataclass
class RegistrationConfig:
    """Odd/even-row registration (spec 1.2, our design): NCC search of the column shift of odd rows."""

    max_shift: int = 8
    mode: Literal["global", "banded"] = "global"
    band: int = 64
    subpixel: bool = False
    presmooth: float = 1.0


@dataclass
class DisplacementConfig:
    """Displacement degradation (spec 1.3, our design): odd LR rows shifted along columns, training only."""

    p: float = 0.5
    max_shift: int = 2
    banded: bool = False
    band: int = 16

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"displacement.p must lie in [0, 1], got {self.p}")
        if self.max_shift < 0:
            raise ValueError(f"displacement.max_shift must be >= 0, got {self.max_shift}")


@dataclass
class SynthConfig:
    """Synthetic rotational-scan PAM set written by ``synth.py`` in the official layout."""

    n_samples: int = 12
    size: int = 488
    max_shift: int = 4
    subpixel: bool = False
    noise: float = 0.02
    speckle_looks: float = 12.0
    seed: int = 0


@dataclass
class DataConfig:
    """Official folder layout ``<root>/<dataset>/<sample>/1_X1_X1.png`` (HR; LR is synthesised by decimation)."""

    root: str = "data/synthetic/pamsr"
    synthetic: bool = True
    dataset: str = "reg_mid"
    test_dataset: str | None = None
    raw_dataset: str = "raw"
    scale: int = 2
    pad: int = 12
    median: bool = False
    normalise: Literal["independent", "joint"] = "independent"
    n_folds: int = 5
    fold: int = 0
    split_seed: int = 55
    patch_size: int = 64
    epoch_size: int = 1000
    patch_select: Literal["grad_window", "random"] = "grad_window"
    grad_score: Literal["magnitude", "signed_official"] = "magnitude"
    displacement_aug: bool = True
    displacement: DisplacementConfig = field(default_factory=DisplacementConfig)
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.scale not in (2, 3, 4, 8):
            raise ValueError(f"data.scale must be one of 2, 3, 4, 8, got {self.scale}")
        if not 0 <= self.fold < self.n_folds:
            raise ValueError(f"data.fold must lie in [0, {self.n_folds}), got {self.fold}")


@dataclass
class ModelConfig:
    """``name: swinir | edsr | rcan | bicubic``; SwinIR-M values by default."""

    name: Literal["swinir", "edsr", "rcan", "bicubic"] = "swinir"
    embed_dim: int = 180
    depths: list[int] = field(default_factory=lambda: [6, 6, 6, 6, 6, 6])
    num_heads: list[int] = field(default_factory=lambda: [6, 6, 6, 6, 6, 6])
    window_size: int = 8
    mlp_ratio: float = 2.0
    drop_path_rate: float = 0.1
    num_feat: int = 64
    n_resblocks: int = 16
    n_feats: int = 64
    res_scale: float = 1.0
    n_resgroups: int = 10
    reduction: int = 16
    pretrained: str = "none"
    init_from: str | None = None


@dataclass
class LossConfig:
    """``l1 * L1(SR, HR) + rec * scanning-consistency (Cartesian gradient) loss``; official weights 1 and 0.5."""

    l1: float = 1.0
    rec: float = 0.0


@dataclass
class OptimConfig:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    batch_size: int = 8
    epochs: int = 200
    decay: list[int] = field(default_factory=lambda: [200])
    gamma: float = 0.5
    patience: int = 30
    grad_clip: float = 0.0


@dataclass
class EvalConfig:
    """Tiled inference (official ``forward_tile``): LR tile and overlap; ``tile_overlap: null`` = 64 - 32 // s."""

    tile: int = 64
    tile_overlap: int | None = None
    val_tile_overlap: int = 4
    tiled: bool = True
    cartesian: bool = True
    val_every: int = 1


@dataclass
class Config:
    experiment: str = "default"
    seed: int = 1
    runs_root: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
