"""Typed configuration of PAMSR experiments (loaded from ``configs/*.yaml`` with :func:`common.config.load_config`).

Top level: ``experiment``, ``seed``, ``runs_root``, ``data``, ``model``, ``optim``, ``runtime`` plus one section per
component of the paper: ``registration`` (odd/even-row registration in preprocessing), ``displacement`` (the
displacement degradation used as training augmentation), ``patch_selection`` (gradient-based patch selection),
``loss`` (L1 + scanning-consistency loss) and ``eval`` (tiled inference and the metrics).

Defaults are the official recipe (``src/option.py`` and the ``proposed_x2`` preset of ``src/template.py``: Adam
1e-4, batch 8, LR patch 64, early stopping after 30 epochs without a new best validation PSNR, 5-fold split with
seed 55, fold 0). The embedded default config shrinks the network and the synthetic images so that it finishes on a
laptop CPU. Every value range is checked in ``__post_init__``, so a bad value stops the run before any work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from common.runtime import RuntimeConfig

__all__ = ["PROJECT_DIR", "RegistrationConfig", "DisplacementConfig", "PatchSelectionConfig", "SynthConfig",
           "DataConfig", "ModelConfig", "LossConfig", "OptimConfig", "EvalConfig", "RuntimeConfig", "Config"]

PROJECT_DIR = Path(__file__).resolve().parent


def _at_least(name: str, value: float, low: float) -> None:
    if value < low:
        raise ValueError(f"{name} must be >= {low:g}, got {value}")


@dataclass
class RegistrationConfig:
    """Odd/even-row registration (paper: "a registration module across odd and even rows in the preprocessing"; the
    official code has none, ours is an NCC search of the column shift of the odd rows, see ``registration.py``)."""

    max_shift: int = 8
    mode: Literal["global", "banded"] = "global"
    band: int = 64
    subpixel: bool = False
    presmooth: float = 1.0

    def __post_init__(self) -> None:
        _at_least("registration.max_shift", self.max_shift, 0)
        _at_least("registration.band", self.band, 1)
        _at_least("registration.presmooth", self.presmooth, 0)


@dataclass
class DisplacementConfig:
    """Displacement degradation (paper v1; not in the official code): odd LR rows shifted along the columns with
    probability ``p`` by a non-zero integer in ``[-max_shift, max_shift]``, training only (``enabled``)."""

    enabled: bool = True
    p: float = 0.5
    max_shift: int = 2
    banded: bool = False
    band: int = 16

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"displacement.p must lie in [0, 1], got {self.p}")
        _at_least("displacement.max_shift", self.max_shift, 0)
        _at_least("displacement.band", self.band, 1)


@dataclass
class PatchSelectionConfig:
    """Gradient-based patch selection (official ``--patch_select grad_window``) or uniform patches (``random``)."""

    mode: Literal["grad_window", "random"] = "grad_window"
    score: Literal["magnitude", "signed_official"] = "magnitude"


@dataclass
class SynthConfig:
    """Synthetic rotational-scan PAM set generated on first use when ``data.synthetic`` (see ``synth.py``).

    Odd-row displacement of a scan: sign ``shift_sign`` (1 or -1; 0 = random per scan) times a magnitude in
    ``[max_shift / 2, max_shift]``, plus a slow sinusoidal ``drift`` (px). Vessels: Gaussian blur ``blur`` px,
    minimum radius ``min_radius`` px, ``capillaries`` thin trees from the border, vessels only in a smooth random
    region of ``coverage`` of the disc (1 = everywhere). Noise: Gamma speckle with
    ``speckle_looks`` looks and additive Gaussian noise ``noise``."""

    n_samples: int = 12
    size: int = 488
    max_shift: int = 4
    shift_sign: int = 1
    drift: float = 0.3
    subpixel: bool = False
    noise: float = 0.005
    speckle_looks: float = 200.0
    blur: float = 0.4
    min_radius: float = 0.4
    capillaries: int = 12
    coverage: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        _at_least("data.synth.n_samples", self.n_samples, 1)
        _at_least("data.synth.size", self.size, 16)
        if self.size % 2:
            raise ValueError(f"data.synth.size must be even (a diameter through the centre), got {self.size}")
        _at_least("data.synth.max_shift", self.max_shift, 0)
        _at_least("data.synth.noise", self.noise, 0)
        _at_least("data.synth.drift", self.drift, 0)
        _at_least("data.synth.blur", self.blur, 0)
        _at_least("data.synth.min_radius", self.min_radius, 0.05)
        _at_least("data.synth.capillaries", self.capillaries, 0)
        if not 0 < self.coverage <= 1:
            raise ValueError(f"data.synth.coverage (fraction of the disc holding vessels) must be in (0, 1], "
                             f"got {self.coverage}")
        if self.shift_sign not in (-1, 0, 1):
            raise ValueError(f"data.synth.shift_sign must be -1, 0 (random per scan) or 1, got {self.shift_sign}")
        if self.speckle_looks <= 0:
            raise ValueError(f"data.synth.speckle_looks must be > 0, got {self.speckle_looks}")


@dataclass
class DataConfig:
    """Official folder layout ``<root>/<dataset>/<sample>/1_X1_X1.png`` (HR; LR is synthesised by decimation).

    ``synthetic``: generate the synthetic set into ``root`` on first use (only into a folder the generator created).
    ``verify``: check every listed image before any work (``header``: it decodes its header, ``full``: completely).
    ``test_dataset``: evaluate on another folder with the same sample names (default ``dataset``).
    ``clean_dataset``: folder of noise-free ground truth with the same sample names (the synthetic ``clean/``);
    where it exists the metrics ``psnr_clean`` / ``ssim_clean`` are added; ``null`` = none.
    ``unregistered_dataset``: the same scans without registration (the "no registration" ablation trains on it).
    ``val_fold``: the fold used for validation (best epoch, early stop); ``null`` = the test fold ``fold`` (official).
    """

    root: str = "data/synthetic/pamsr"
    synthetic: bool = True
    verify: Literal["header", "full", "off"] = "header"
    dataset: str = "reg_mid"
    test_dataset: str | None = None
    clean_dataset: str | None = "clean"
    unregistered_dataset: str = "mid_filter"
    scale: int = 2
    pad: int = 12
    median: bool = False
    normalise: Literal["independent", "joint"] = "independent"
    n_folds: int = 5
    fold: int = 0
    val_fold: int | None = None
    split_seed: int = 55
    patch_size: int = 64
    epoch_size: int = 1000
    synth: SynthConfig = field(default_factory=SynthConfig)
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.scale not in (2, 3, 4, 8):
            raise ValueError(f"data.scale must be one of 2, 3, 4, 8, got {self.scale}")
        _at_least("data.n_folds", self.n_folds, 2)
        if not 0 <= self.fold < self.n_folds:
            raise ValueError(f"data.fold must lie in [0, {self.n_folds}), got {self.fold}")
        if self.val_fold is not None and not 0 <= self.val_fold < self.n_folds:
            raise ValueError(f"data.val_fold must lie in [0, {self.n_folds}) or be null, got {self.val_fold}")
        _at_least("data.pad", self.pad, 0)
        _at_least("data.patch_size", self.patch_size, 4)
        _at_least("data.epoch_size", self.epoch_size, 1)
        _at_least("data.num_workers", self.num_workers, 0)


@dataclass
class ModelConfig:
    """``name: swinir | edsr | rcan | han | rdn | fd_unet | bicubic``; SwinIR-M values by default (official
    ``src/model/swinir.py``). EDSR/RCAN/HAN use ``n_resblocks``, ``n_feats`` (and ``n_resgroups``, ``reduction``);
    RDN ``rdn_blocks`` x ``rdn_layers`` layers of growth ``rdn_growth`` on ``n_feats`` features; FD-UNet ``n_feats``
    first-level features, ``unet_levels`` levels, dense blocks of ``rdn_layers`` layers.

    ``bicubic_skip`` (our deviation, off in the paper configs): output = bicubic(LR) + network(LR) with the last
    convolution zero-initialised, so that a short CPU run starts from bicubic instead of from noise.
    ``skip_zero`` (SwinIR with the bicubic skip, ours): which convolution is zero-initialised, ``final`` (the 3->1
    output adapter ``conv_final``) or ``last`` (``conv_last``, num_feat -> 3, so the random 3->1 adapter passes
    gradients to it from the first step). ``adapter_chans`` (SwinIR): channels of the official 1->3 / 3->1
    adapter convolutions (3, kept so RGB SwinIR weights load); 0 (ours) drops both adapters, so ``conv_first``
    reads the single-channel LR directly and ``conv_last`` writes the output (no 3-channel bottleneck)."""

    name: Literal["swinir", "edsr", "rcan", "han", "rdn", "fd_unet", "bicubic"] = "swinir"
    embed_dim: int = 180
    depths: list[int] = field(default_factory=lambda: [6, 6, 6, 6, 6, 6])
    num_heads: list[int] = field(default_factory=lambda: [6, 6, 6, 6, 6, 6])
    window_size: int = 8
    mlp_ratio: float = 2.0
    drop_path_rate: float = 0.1
    num_feat: int = 64
    adapter_chans: int = 3
    n_resblocks: int = 16
    n_feats: int = 64
    res_scale: float = 1.0
    n_resgroups: int = 10
    reduction: int = 16
    rdn_blocks: int = 16
    rdn_layers: int = 8
    rdn_growth: int = 64
    unet_levels: int = 4
    bicubic_skip: bool = False
    skip_zero: Literal["final", "last"] = "final"
    pretrained: str = "none"
    init_from: str | None = None

    def __post_init__(self) -> None:
        if len(self.depths) != len(self.num_heads) or not self.depths:
            raise ValueError(f"model.depths {self.depths} and model.num_heads {self.num_heads} need the same, "
                             f"non-zero length (one entry per residual Swin block)")
        bad = [h for h in self.num_heads if h < 1 or self.embed_dim % h]
        if bad:
            raise ValueError(f"model.embed_dim={self.embed_dim} must be divisible by every model.num_heads entry "
                             f"(got {self.num_heads})")
        _at_least("model.window_size", self.window_size, 1)
        _at_least("model.adapter_chans", self.adapter_chans, 0)
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"model.drop_path_rate must lie in [0, 1), got {self.drop_path_rate}")


@dataclass
class LossConfig:
    """``l1 * L1(SR, HR) + rec * scanning-consistency (Cartesian gradient) loss``; official weights 1 and 0.5."""

    l1: float = 1.0
    rec: float = 0.0

    def __post_init__(self) -> None:
        _at_least("loss.l1", self.l1, 0)
        _at_least("loss.rec", self.rec, 0)
        if self.l1 + self.rec <= 0:
            raise ValueError("loss.l1 + loss.rec must be > 0 (nothing to train otherwise)")


@dataclass
class OptimConfig:
    """Adam with MultiStepLR (``decay`` = milestones in epochs, official ``--decay 200 --gamma 0.5``) and early
    stopping after ``patience`` epochs without a new best validation PSNR.

    ``warmup_steps`` (ours; official 0): linear warm-up of the lr over the first optimiser steps. ``schedule:
    cosine`` (ours) replaces the milestones by a cosine decay to 0 over ``epochs``. The lr factor is applied per
    optimiser step. ``ema``: decay of an exponential moving average of the weights updated after every step
    (official ``Trainer_burst_ema`` keeps one with 0.999 but never saves it; here it is saved in the checkpoints
    and evaluated with ``eval.weights: ema``); 0 = off."""

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
    warmup_steps: int = 0
    schedule: Literal["multistep", "cosine"] = "multistep"
    ema: float = 0.0

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"optim.lr must be > 0, got {self.lr}")
        _at_least("optim.epochs", self.epochs, 1)
        _at_least("optim.batch_size", self.batch_size, 1)
        _at_least("optim.patience", self.patience, 1)
        _at_least("optim.weight_decay", self.weight_decay, 0)
        _at_least("optim.grad_clip", self.grad_clip, 0)
        _at_least("optim.warmup_steps", self.warmup_steps, 0)
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"optim.ema must lie in [0, 1) (0 = off), got {self.ema}")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"optim.gamma must lie in (0, 1], got {self.gamma}")
        if any(m < 1 for m in self.decay):
            raise ValueError(f"optim.decay milestones must be epochs >= 1, got {self.decay}")


@dataclass
class EvalConfig:
    """Tiled inference (official ``forward_tile``): LR tile and overlap; ``tile_overlap: null`` = 64 - 32 // s in
    test mode, ``val_tile_overlap`` during training-time validation (official 4). ``self_ensemble``: average the
    outputs of the 8 flips/transposes of the input (official ``--self_ensemble``, off in the templates);
    ``weights``: evaluate the trained weights or their moving average (``ema``, needs ``optim.ema > 0``)."""

    tile: int = 64
    tile_overlap: int | None = None
    val_tile_overlap: int = 4
    tiled: bool = True
    self_ensemble: bool = False
    weights: Literal["model", "ema"] = "model"
    cartesian: bool = True
    val_every: int = 1

    def __post_init__(self) -> None:
        _at_least("eval.tile", self.tile, 1)
        _at_least("eval.val_every", self.val_every, 1)
        for name, overlap in (("eval.tile_overlap", self.tile_overlap), ("eval.val_tile_overlap",
                                                                          self.val_tile_overlap)):
            if overlap is not None and not 0 <= overlap < self.tile:
                raise ValueError(f"{name} must lie in [0, eval.tile={self.tile}), got {overlap}")


@dataclass
class Config:
    experiment: str = "default"
    seed: int = 1
    runs_root: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)
    displacement: DisplacementConfig = field(default_factory=DisplacementConfig)
    patch_selection: PatchSelectionConfig = field(default_factory=PatchSelectionConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if self.data.synthetic and self.data.synth.n_samples < self.data.n_folds:
            raise ValueError(f"data.synth.n_samples={self.data.synth.n_samples} cannot be split into "
                             f"data.n_folds={self.data.n_folds} folds")
