"""Typed configuration of the YoloCurvSeg pipeline (loaded by ``common.config``; every key and value range is checked
here, before any data is written or any run folder is created).

One config describes one run of one method on one dataset and one labelled image:
``method`` = ``yolocurvseg`` (background -> curves -> CUT -> coarse -> fine), ``synthetic_only`` (no synthesizer, no
fine stage), ``pce_skeleton`` (partial CE on the fg+bg noisy skeleton) or ``full_supervision`` (all labels).

Vocabulary (the repository's): ``experiment``, ``seed``, ``runs_root``, ``data``, ``model`` (the segmenter),
``optim`` (the segmenter's optimiser and the schedule of its first stage: coarse, full supervision or pCE),
``runtime`` (``common.runtime.RuntimeConfig`` + the checkpoint/log cadence of the step loops), then one section per
paper component: ``skeleton``, ``background``, ``curves``, ``synthesizer`` (CUT keeps its own official optimiser),
``coarse``, ``fine`` (fine-tuning has its own ``steps`` and ``lr``), ``pce`` (the WSL baseline) and ``eval``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from common.runtime import RuntimeConfig, refuse_unsupported
from yolocurvseg.background import BackgroundAug
from yolocurvseg.model import SegmenterConfig
from yolocurvseg.sca import preset_with_overrides
from yolocurvseg.skeleton import SkeletonNoise
from yolocurvseg.synthesizer import CUTConfig

__all__ = ["Config", "DataConfig", "OptimConfig", "BackgroundConfig", "CurvesConfig", "SynthesizerConfig",
           "CoarseConfig", "FineConfig", "PCEConfig", "StepRuntimeConfig", "EvalConfig", "METHODS", "DATASET_NAMES"]

METHODS = ("yolocurvseg", "synthetic_only", "pce_skeleton", "full_supervision")
DATASET_NAMES = ("drive", "chasedb1", "dca1", "octa500", "corn", "h5")


def _at_least(section: str, minimum: float, **values: float) -> None:
    for key, value in values.items():
        if value < minimum:
            raise ValueError(f"{section}.{key} must be >= {minimum}, got {value}")


@dataclass
class DataConfig:
    """``dataset`` layout under ``root`` (see data.py). ``synthetic``: generate the hidden DRIVE-like domain there on
    first use (only into a folder the generator creates). ``verify``: check every listed file before any work
    (``header``: it exists and its header decodes; ``full``: it decodes; ``off``). ``labelled_case``: id of the single
    annotated training image ("" = the first); ``skeleton``: ``file`` (the released noisy skeleton
    ``<root>/skeleton/<id>.png``; a missing file is an error naming it) or ``simulate`` (an explicit choice: simulated
    from the image's full label, which the paper's setting does not have; logged in the run and the comparison
    table). The same rule applies to every skeleton the ``pce.images=all`` baseline uses. ``crop``: side of the
    random training crops of every segmenter stage. ``n_train``/``n_test``/``size``/``synth_seed`` describe the
    synthetic domain only."""

    dataset: Literal["drive", "chasedb1", "dca1", "octa500", "corn", "h5"] = "drive"
    root: str = "data/synthetic/yolocurvseg/drive_like"
    synthetic: bool = True
    verify: Literal["header", "full", "off"] = "header"
    n_train: int = 12
    n_test: int = 8
    size: int = 128
    synth_seed: int = 0
    labelled_case: str = ""
    skeleton: Literal["file", "simulate"] = "file"
    reader_kwargs: dict[str, str] = field(default_factory=dict)
    max_train_images: int = 0  # 0 = all unlabelled training images
    crop: int = 96

    def __post_init__(self) -> None:
        _at_least("data", 1, n_train=self.n_train, n_test=self.n_test)
        _at_least("data", 16, size=self.size)
        _at_least("data", 8, crop=self.crop)
        _at_least("data", 0, max_train_images=self.max_train_images)


@dataclass
class OptimConfig:
    """Adam with poly decay ``(1 - step / steps) ** poly_power`` for the segmenter. ``steps`` iterations of
    ``batch_size`` crops for its first stage (coarse on synthetic pairs; the ``full_supervision`` and
    ``pce_skeleton`` baselines use the same recipe); the fine stage reuses ``weight_decay``, ``batch_size`` and
    ``poly_power`` with its own ``fine.steps`` / ``fine.lr``."""

    lr: float = 1e-3
    weight_decay: float = 1e-4
    steps: int = 400
    batch_size: int = 8
    poly_power: float = 0.9

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"optim.lr must be > 0, got {self.lr}")
        _at_least("optim", 1, steps=self.steps, batch_size=self.batch_size)
        _at_least("optim", 0, weight_decay=self.weight_decay, poly_power=self.poly_power)


@dataclass
class BackgroundConfig:
    """Inpainting of the inflated noisy skeleton: dilation ``radius`` (px) and ``method``; ``renoise``: copy the
    labelled image's fine texture from outside the inpainted band into it (``compositor.renoise_band``); ``aug``
    diversifies the one extracted background."""

    radius: int = 4
    method: Literal["telea", "ns", "biharmonic"] = "telea"
    renoise: bool = True
    aug: BackgroundAug = field(default_factory=BackgroundAug)

    def __post_init__(self) -> None:
        _at_least("background", 0, radius=self.radius)


@dataclass
class CurvesConfig:
    """SCA ``preset`` (octa500, corn, drive, chasedb1, dca1) with field ``overrides`` (checked here against the SCA
    parameters); ``n_samples`` synthetic pairs. Appearance of the curves in the composite (``compositor.py``), fitted
    on the labelled image: ``contrast_model`` = ``calibre`` (contrast as a line in the local radius, multiplicative
    for dark curves) or ``median`` (one median contrast on the skeleton, additive; ``contrast`` > 0 fixes it);
    ``psf`` = ``fitted`` (Gaussian blur of the curve layer, width fitted on the vessel edge profile) or ``off``."""

    preset: Literal["octa500", "corn", "drive", "chasedb1", "dca1"] = "drive"
    overrides: dict[str, Any] = field(default_factory=dict)
    n_samples: int = 200
    contrast_model: Literal["calibre", "median"] = "calibre"
    psf: Literal["fitted", "off"] = "fitted"
    contrast: float = 0.0

    def __post_init__(self) -> None:
        preset_with_overrides(self.preset, dict(self.overrides))
        _at_least("curves", 1, n_samples=self.n_samples)
        _at_least("curves", 0, contrast=self.contrast)


@dataclass
class SynthesizerConfig:
    """CUT training: ``steps`` iterations of ``batch_size`` random ``crop`` px crops per domain; the optimiser is
    CUT's own (``cut.lr``, ``cut.beta1``, ``cut.beta2``: Adam 2e-4, 0.5, 0.999 in the official options)."""

    enabled: bool = True
    steps: int = 300
    batch_size: int = 2
    crop: int = 64
    cut: CUTConfig = field(default_factory=CUTConfig)

    def __post_init__(self) -> None:
        _at_least("synthesizer", 1, steps=self.steps, batch_size=self.batch_size)
        if self.crop < 16 or self.crop % 4:
            raise ValueError(f"synthesizer.crop must be a multiple of 4 and >= 16, got {self.crop}")
        if not self.cut.lr > 0:
            raise ValueError(f"synthesizer.cut.lr must be > 0, got {self.cut.lr}")


@dataclass
class CoarseConfig:
    """Coarse stage: the segmenter on the synthetic pairs (``optim`` schedule, CE + ``dice_weight`` * Dice). The
    ``full_supervision`` upper bound trains with the same recipe on the real labels."""

    enabled: bool = True
    dice_weight: float = 1.0

    def __post_init__(self) -> None:
        _at_least("coarse", 0, dice_weight=self.dice_weight)


@dataclass
class FineConfig:
    """Fine stage: pseudo-label the unlabelled real images with the previous model (flip TTA), keep
    ``p > fg_threshold`` as curve and ``p < bg_threshold`` as background, ignore the rest; fine-tune ``steps``
    iterations at ``lr`` (poly decay, ``optim.batch_size`` crops of which ``real_fraction`` pseudo-labelled real and
    the rest synthetic pairs); repeat ``rounds`` times."""

    enabled: bool = True
    steps: int = 200
    lr: float = 5e-4
    rounds: int = 1
    fg_threshold: float = 0.9
    bg_threshold: float = 0.1
    real_fraction: float = 0.5
    tta: bool = True
    dice_weight: float = 1.0

    def __post_init__(self) -> None:
        _at_least("fine", 1, steps=self.steps, rounds=self.rounds)
        _at_least("fine", 0, dice_weight=self.dice_weight)
        if not self.lr > 0:
            raise ValueError(f"fine.lr must be > 0, got {self.lr}")
        if not 0 <= self.bg_threshold < self.fg_threshold <= 1:
            raise ValueError(f"fine needs 0 <= bg_threshold < fg_threshold <= 1, got {self.bg_threshold}, "
                             f"{self.fg_threshold}")
        if not 0 <= self.real_fraction <= 1:
            raise ValueError(f"fine.real_fraction must be in [0, 1], got {self.real_fraction}")


@dataclass
class PCEConfig:
    """Weakly supervised baseline: pCE on the fg+bg noisy skeleton (release recipe) of ``images`` = ``one`` (the
    labelled image, same annotation budget as YoloCurvSeg) or ``all`` training images; ``optim`` schedule."""

    images: Literal["one", "all"] = "one"
    bg_dilation: int = 6

    def __post_init__(self) -> None:
        _at_least("pce", 1, bg_dilation=self.bg_dilation)


@dataclass
class StepRuntimeConfig(RuntimeConfig):
    """``common.runtime.RuntimeConfig`` plus the two keys of this project's step loops (no epochs here):
    ``last.pt`` every ``save_every`` steps (and at the end of every stage), a ``metrics.csv`` row every ``log_every``
    steps. ``amp`` (``off|bf16|fp16``) autocasts the segmenter's training forward (CUT and inference stay fp32);
    bf16 needs native support on the device, fp16 needs CUDA (both checked before any work); ``compile`` is
    refused."""

    save_every: int = 100
    log_every: int = 25

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least("runtime", 1, save_every=self.save_every, log_every=self.log_every)


@dataclass
class EvalConfig:
    """Sliding-window inference over ``roi`` px windows, curve = ``p > threshold``, optional flip TTA; ``surface``
    adds HD95. ``min_component``: post-processing of every method alike, 8-connected predicted components of fewer
    pixels are removed inside the FOV (0 = off; the metrics then also report ``betti0_error_raw``, before it)."""

    roi: int = 128
    threshold: float = 0.5
    tta: bool = False
    surface: bool = True
    min_component: int = 0

    def __post_init__(self) -> None:
        _at_least("eval", 8, roi=self.roi)
        _at_least("eval", 0, min_component=self.min_component)
        if not 0 < self.threshold < 1:
            raise ValueError(f"eval.threshold must be in (0, 1), got {self.threshold}")


@dataclass
class Config:
    experiment: str = "default"
    method: Literal["yolocurvseg", "synthetic_only", "pce_skeleton", "full_supervision"] = "yolocurvseg"
    seed: int = 0
    runs_root: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: SegmenterConfig = field(default_factory=SegmenterConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    runtime: StepRuntimeConfig = field(default_factory=StepRuntimeConfig)
    skeleton: SkeletonNoise = field(default_factory=SkeletonNoise)
    background: BackgroundConfig = field(default_factory=BackgroundConfig)
    curves: CurvesConfig = field(default_factory=CurvesConfig)
    synthesizer: SynthesizerConfig = field(default_factory=SynthesizerConfig)
    coarse: CoarseConfig = field(default_factory=CoarseConfig)
    fine: FineConfig = field(default_factory=FineConfig)
    pce: PCEConfig = field(default_factory=PCEConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        refuse_unsupported(self.runtime, compile=False, project="yolocurvseg")
        if len(self.model.strides) != len(self.model.channels) - 1:
            raise ValueError(f"model.strides needs len(model.channels) - 1 = {len(self.model.channels) - 1} "
                             f"entries, got {len(self.model.strides)}")
        factor = math.prod(self.model.strides)
        for key, value in (("data.crop", self.data.crop), ("eval.roi", self.eval.roi)):
            if value % factor:
                raise ValueError(f"{key} = {value} must be a multiple of prod(model.strides) = {factor}")
