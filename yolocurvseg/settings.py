"""Typed configuration of the YoloCurvSeg pipeline (loaded by ``common.config``; every key validated up front).

One config describes one run of one method on one dataset and one labelled image:
``method`` = ``yolocurvseg`` (background -> curves -> CUT -> coarse -> fine), ``synthetic_only`` (no synthesizer, no
fine stage), ``pce_skeleton`` (partial CE on the fg+bg noisy skeleton) or ``full_supervision`` (all labels).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from yolocurvseg.background import BackgroundAug
from yolocurvseg.model import SegmenterConfig
from yolocurvseg.skeleton import SkeletonNoise
from yolocurvseg.synthesizer import CUTConfig

__all__ = ["Config", "DataConfig", "BackgroundConfig", "CurvesConfig", "SynthesizerConfig", "StageConfig",
           "FineConfig", "PCEConfig", "RuntimeConfig", "EvalConfig", "METHODS"]

METHODS = ("yolocurvseg", "synthetic_only", "pce_skeleton", "full_supervision")


@dataclass
class DataConfig:
    """``dataset`` layout under ``root`` (see data.py). ``synthetic``: generate the hidden DRIVE-like domain there on
    first use. ``labelled_case``: id of the single annotated training image ("" = the first); ``skeleton``:
    ``file`` (``<root>/skeleton/<id>.png``, required), ``simulate`` (from the label) or ``auto`` (file if present)."""

    dataset: str = "drive"
    root: str = "data/synthetic/yolocurvseg/drive_like"
    synthetic: bool = True
    n_train: int = 12
    n_test: int = 8
    size: int = 128
    synth_seed: int = 0
    labelled_case: str = ""
    skeleton: Literal["auto", "file", "simulate"] = "auto"
    reader_kwargs: dict[str, str] = field(default_factory=dict)
    max_train_images: int = 0  # 0 = all unlabelled training images


@dataclass
class BackgroundConfig:
    radius: int = 4
    method: Literal["telea", "ns", "biharmonic"] = "telea"
    aug: BackgroundAug = field(default_factory=BackgroundAug)


@dataclass
class CurvesConfig:
    """SCA ``preset`` (octa500, corn, drive, chasedb1, dca1) with field ``overrides``; ``n_samples`` synthetic pairs;
    ``contrast`` of the naive composite (0 = estimated on the labelled image's skeleton)."""

    preset: str = "drive"
    overrides: dict[str, Any] = field(default_factory=dict)
    n_samples: int = 200
    contrast: float = 0.0


@dataclass
class SynthesizerConfig:
    enabled: bool = True
    steps: int = 300
    batch_size: int = 2
    crop: int = 64
    cut: CUTConfig = field(default_factory=CUTConfig)


@dataclass
class StageConfig:
    """One segmenter training stage (iterations, Adam with poly decay, random crops)."""

    enabled: bool = True
    steps: int = 400
    batch_size: int = 8
    crop: int = 96
    lr: float = 1e-3
    weight_decay: float = 1e-4
    dice_weight: float = 1.0


@dataclass
class FineConfig(StageConfig):
    """Fine stage: pseudo-label the unlabelled real images with the previous model (flip TTA), keep
    ``p > fg_threshold`` as curve and ``p < bg_threshold`` as background, ignore the rest; fine-tune on batches
    with ``real_fraction`` pseudo-labelled real crops and the rest synthetic pairs; repeat ``rounds`` times."""

    steps: int = 200
    lr: float = 5e-4
    rounds: int = 1
    fg_threshold: float = 0.9
    bg_threshold: float = 0.1
    real_fraction: float = 0.5
    tta: bool = True


@dataclass
class PCEConfig:
    """Weakly supervised baseline: pCE on the fg+bg noisy skeleton (release recipe) of ``images`` = ``one`` (the
    labelled image, same annotation budget as YoloCurvSeg) or ``all`` training images."""

    images: Literal["one", "all"] = "one"
    bg_dilation: int = 6


@dataclass
class RuntimeConfig:
    device: str = "auto"
    deterministic: bool = False
    save_every: int = 100
    log_every: int = 25
    progress: bool = False
    threads: int = 0  # 0 = torch default


@dataclass
class EvalConfig:
    roi: int = 128
    threshold: float = 0.5
    tta: bool = False
    surface: bool = True


@dataclass
class Config:
    experiment: str = "default"
    method: Literal["yolocurvseg", "synthetic_only", "pce_skeleton", "full_supervision"] = "yolocurvseg"
    seed: int = 0
    runs_root: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    skeleton: SkeletonNoise = field(default_factory=SkeletonNoise)
    background: BackgroundConfig = field(default_factory=BackgroundConfig)
    curves: CurvesConfig = field(default_factory=CurvesConfig)
    synthesizer: SynthesizerConfig = field(default_factory=SynthesizerConfig)
    model: SegmenterConfig = field(default_factory=SegmenterConfig)
    coarse: StageConfig = field(default_factory=StageConfig)
    fine: FineConfig = field(default_factory=FineConfig)
    supervised: StageConfig = field(default_factory=StageConfig)
    pce: PCEConfig = field(default_factory=PCEConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
