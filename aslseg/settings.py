"""Typed configuration of ASLseg (loaded by ``common.config``; every key validated before any work).

One config describes one run: ``method`` = ``aslseg`` (SSL round 0, then ``loop.rounds`` rounds of SAM fine-tuning,
adapter training, pseudo-labelling, selection and segmenter retraining), ``ssl`` (the segmenter of ``ssl.method``
alone, for ``ssl.pretrain_iters + ssl.self_iters`` iterations) or ``sam_zero_shot_gtbox`` (the SAM of
``sam.checkpoint`` prompted with one ground-truth box per tumour component, no target-domain tuning).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from common.runtime import RuntimeConfig as _BaseRuntime

__all__ = ["Config", "DataConfig", "ModelConfig", "SynthConfig", "OptimConfig", "SSLConfig", "SAMConfig",
           "SAMPretrainConfig", "PromptConfig", "AdapterConfig", "SelectionConfig", "LoopConfig", "EvalConfig",
           "RuntimeConfig",
           "SSL_METHODS", "METHODS"]

SSL_METHODS = ("bcp", "mean_teacher", "ua_mt", "supervised")
METHODS = ("aslseg", "ssl", "sam_zero_shot_gtbox")


def _positive(section: str, **values: float) -> None:
    for name, value in values.items():
        if value <= 0:
            raise ValueError(f"{section}.{name} must be > 0, got {value}")


def _non_negative(section: str, **values: float) -> None:
    for name, value in values.items():
        if value < 0:
            raise ValueError(f"{section}.{name} must be >= 0, got {value}")


def _fraction(section: str, **values: float) -> None:
    for name, value in values.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{section}.{name} must lie in [0, 1], got {value}")


@dataclass
class SynthConfig:
    """The synthetic LiTS-format set written by ``synth.py`` (OURS): ``n_volumes`` int16 CT volumes of
    ``size`` x ``size`` x (``min_slices`` .. ``max_slices``) from three sites. Tumour contrast: per-pixel
    contrast-to-noise ratio drawn from ``tumour_cnr``, the HU offset clipped to ``hypo_hu`` (hypodense, 80 %) or
    ``hyper_hu`` (hyperdense); in-plane radius (px at 128) log-uniform in ``tumour_radius``."""

    n_volumes: int = 40
    size: int = 128
    min_slices: int = 24
    max_slices: int = 48
    seed: int = 0
    layout: Literal["lits", "msd"] = "lits"
    tumour_cnr: tuple[float, float] = (2.5, 5.0)
    tumour_radius: tuple[float, float] = (4.0, 14.0)
    hypo_hu: tuple[float, float] = (35.0, 90.0)
    hyper_hu: tuple[float, float] = (30.0, 60.0)

    def __post_init__(self) -> None:
        _positive("data.synth", n_volumes=self.n_volumes, size=self.size, min_slices=self.min_slices)
        for name in ("tumour_cnr", "tumour_radius", "hypo_hu", "hyper_hu"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"data.synth.{name} must be [low, high] with 0 < low <= high, got {[low, high]}")
        if self.max_slices < self.min_slices:
            raise ValueError(f"data.synth.max_slices ({self.max_slices}) < min_slices ({self.min_slices})")
        if self.size < 32:
            raise ValueError(f"data.synth.size must be >= 32, got {self.size}")


@dataclass
class DataConfig:
    """``dataset``: ``lits`` (``volume-N.nii`` / ``segmentation-N.nii``) or ``msd`` (``Task03_Liver``), under
    ``root``. ``synthetic``: write the synthetic set there first (``data/synthetic/...`` only). The split is
    volume-level and seeded (``split_seed``, ``n_test``; ``split_file`` "" = ``data/splits/aslseg/<root key>.json``);
    ``labelled_fraction`` of the training volumes keep their tumour labels (per ``seed``). Slices: HU window
    ``hu_window`` -> [0, 1], ``roi`` = liver box + ``roi_margin`` px (``gt_liver``) or the whole slice (``none``),
    liver slices +- ``slice_margin``, resized to ``size`` x ``size``."""

    dataset: Literal["lits", "msd"] = "lits"
    root: str = "data/synthetic/aslseg/lits_like_v3"
    synthetic: bool = True
    synth: SynthConfig = field(default_factory=SynthConfig)
    split_file: str = ""
    split_seed: int = 0
    n_test: int = 10
    labelled_fraction: float = 0.1
    size: int = 64
    hu_window: tuple[float, float] = (-200.0, 250.0)
    roi: Literal["gt_liver", "none"] = "gt_liver"
    roi_margin: int = 10
    slice_margin: int = 2
    augment: bool = True
    max_train_volumes: int = 0  # 0 = all
    verify: Literal["header", "full", "off"] = "header"

    def __post_init__(self) -> None:
        _positive("data", size=self.size, n_test=self.n_test)
        _non_negative("data", roi_margin=self.roi_margin, slice_margin=self.slice_margin,
                      max_train_volumes=self.max_train_volumes)
        if not 0.0 < self.labelled_fraction <= 1.0:
            raise ValueError(f"data.labelled_fraction must lie in (0, 1], got {self.labelled_fraction}")
        if self.hu_window[1] <= self.hu_window[0]:
            raise ValueError(f"data.hu_window must be [low, high] with low < high, got {list(self.hu_window)}")
        if self.size % 16:
            raise ValueError(f"data.size must be a multiple of 16 (four stride-2 U-Net levels), got {self.size}")


@dataclass
class ModelConfig:
    """The segmenter: MONAI 2D ``UNet`` (1 input channel, 2 classes)."""

    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    strides: tuple[int, ...] = (2, 2, 2, 2)
    num_res_units: int = 2

    def __post_init__(self) -> None:
        if len(self.strides) != len(self.channels) - 1:
            raise ValueError("model.strides needs one entry fewer than model.channels")


@dataclass
class OptimConfig:
    """The segmenter's SGD (BCP ACDC script: lr 0.01, momentum 0.9, wd 1e-4, constant lr). ``batch_size`` images
    per step of which ``labelled_bs`` labelled; ``lr_step`` > 0 multiplies the lr by 0.1 every ``lr_step``
    iterations (UA-MT's LA script: 2500), 0 keeps it constant. ``lr_schedule: poly`` (OURS for BCP, whose ACDC
    script keeps the rate constant; the SSL4MIS scripts BCP builds on decay it) multiplies the lr by
    (1 - it / horizon) ^ ``lr_power`` over the run's whole segmenter schedule (all rounds)."""

    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 24
    labelled_bs: int = 12
    lr_step: int = 0
    lr_schedule: Literal["constant", "poly"] = "constant"
    lr_power: float = 0.9

    def __post_init__(self) -> None:
        _positive("optim", lr=self.lr, batch_size=self.batch_size, labelled_bs=self.labelled_bs)
        _non_negative("optim", weight_decay=self.weight_decay, lr_step=self.lr_step, momentum=self.momentum,
                      lr_power=self.lr_power)
        if self.labelled_bs > self.batch_size:
            raise ValueError(f"optim.labelled_bs ({self.labelled_bs}) > optim.batch_size ({self.batch_size})")
        if self.labelled_bs % 2 or (self.batch_size - self.labelled_bs) % 2:
            raise ValueError("optim.labelled_bs and batch_size - labelled_bs must be even (BCP halves a/b)")


@dataclass
class SSLConfig:
    """The semi-supervised segmenter. ``bcp``: ``pretrain_iters`` of labelled copy-paste, then ``self_iters`` of
    bidirectional copy-paste with the EMA teacher; ``mean_teacher`` / ``ua_mt`` / ``supervised``: ``pretrain_iters
    + self_iters`` iterations of their own loss. ``min_area``: pseudo-label components smaller than this (px at
    ``data.size``) are dropped (the official script keeps the largest one only)."""

    method: Literal["bcp", "mean_teacher", "ua_mt", "supervised"] = "bcp"
    pretrain_iters: int = 10000
    self_iters: int = 30000
    ema_decay: float = 0.99
    u_weight: float = 0.5
    mask_ratio: float = 2.0 / 3.0
    min_area: int = 10
    consistency: float = 0.1
    consistency_rampup: float = 40.0
    uncertainty_passes: int = 8
    teacher_noise: float = 0.1
    snapshot_iters: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _non_negative("ssl", pretrain_iters=self.pretrain_iters, self_iters=self.self_iters, min_area=self.min_area,
                      consistency=self.consistency)
        _fraction("ssl", ema_decay=self.ema_decay, u_weight=self.u_weight)
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"ssl.mask_ratio must lie in (0, 1), got {self.mask_ratio}")
        _positive("ssl", uncertainty_passes=self.uncertainty_passes)


@dataclass
class SAMConfig:
    """SAM (``segment-anything`` 1.0). ``arch``: ``tiny`` (CPU stand-in) or ``vit_b|vit_l|vit_h``; ``img_size`` 0 =
    the architecture's own (1024; tiny 128). ``checkpoint``: ``pretrained`` (the architecture's usual weights:
    for tiny the cached ``pretrain_sam.py`` result, for ViTs ``hub``), ``none`` (random), ``hub`` (explains what to
    download) or a path (``sam_vit_b_01ec64.pth``, ``medsam_vit_b.pth``). ``input_norm``: ``auto`` (MedSAM files
    -> ``unit``, else ``imagenet``), ``imagenet`` (SAM's mean/std on 0-255) or ``unit`` ([0, 1], MedSAM).
    ``finetune``: ``decoder`` (encoders frozen, embeddings cached), ``lora`` (SAMed) or ``full`` (MedSAM);
    ``lr`` 0 = the mode's default (decoder/full 1e-4, lora 5e-3). Training boxes: ground truth + the inference
    ``prompts.box_margin``, each edge moved in or out by up to ``box_jitter`` of the side, and, with probability
    ``pseudo_box_prob``, SSL predictions. ``mask_prompt``: ``none`` or ``ellipse`` (the ellipse inscribed in each
    box as SAM's dense mask prompt, OURS; a pre-trained tiny SAM must be pre-trained with the same value)."""

    arch: Literal["tiny", "vit_b", "vit_l", "vit_h"] = "tiny"
    img_size: int = 0
    checkpoint: str = "pretrained"
    input_norm: Literal["auto", "imagenet", "unit"] = "auto"
    finetune: Literal["decoder", "lora", "full"] = "decoder"
    steps: int = 200
    batch_size: int = 4
    lr: float = 0.0
    weight_decay: float = 0.01
    lora_rank: int = 4
    warmup: int = 250
    box_jitter: float = 0.02
    pseudo_box_prob: float = 0.3
    refit_each_round: bool = True
    mask_prompt: Literal["none", "ellipse"] = "none"

    def __post_init__(self) -> None:
        _non_negative("sam", img_size=self.img_size, steps=self.steps, lr=self.lr, weight_decay=self.weight_decay,
                      warmup=self.warmup, box_jitter=self.box_jitter)
        _positive("sam", batch_size=self.batch_size, lora_rank=self.lora_rank)
        _fraction("sam", pseudo_box_prob=self.pseudo_box_prob)
        if self.img_size and self.img_size % 16:
            raise ValueError(f"sam.img_size must be a multiple of 16, got {self.img_size}")


@dataclass
class SAMPretrainConfig:
    """``pretrain_sam.py``: the tiny SAM's stand-in for SAM's general knowledge, trained on on-the-fly shapes
    (never CT anatomy) and cached under ``cache_dir`` keyed by these values (and ``sam.mask_prompt``). Boxes are
    drawn like inference ones: tight + ``box_margin`` px (at the slice size; set it to ``prompts.box_margin``),
    each edge moved in or out by up to ``box_jitter`` px. ``eval_every`` > 0 records the held-out Dice every so
    many steps in the report (the learning curve). ``prompts_per_image``: prompts decoded per image embedding (the
    target, then the distractor objects, then the target again with another box)."""

    steps: int = 1500
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.01
    empty_box_prob: float = 0.1
    point_prob: float = 0.3
    box_margin: float = 3.0
    box_jitter: float = 3.0
    prompts_per_image: int = 1
    n_heldout: int = 64
    eval_every: int = 0
    seed: int = 1234
    cache_dir: str = "data/synthetic/aslseg/sam"

    def __post_init__(self) -> None:
        _positive("sam_pretrain", steps=self.steps, batch_size=self.batch_size, lr=self.lr, n_heldout=self.n_heldout,
                  prompts_per_image=self.prompts_per_image)
        _non_negative("sam_pretrain", box_margin=self.box_margin, box_jitter=self.box_jitter,
                      eval_every=self.eval_every)
        _fraction("sam_pretrain", empty_box_prob=self.empty_box_prob, point_prob=self.point_prob)


@dataclass
class PromptConfig:
    """One box (+ ``box_margin`` px at ``data.size``) per SSL tumour component >= ``min_area`` px; ``points``
    adds the component's innermost pixel as a positive click."""

    min_area: int = 10
    box_margin: int = 3
    points: bool = False

    def __post_init__(self) -> None:
        _non_negative("prompts", min_area=self.min_area, box_margin=self.box_margin)


@dataclass
class AdapterConfig:
    """Adaptation network (OURS): MONAI 2D UNet on (CT, SAM prob, SSL prob) -> tumour logits, trained on labelled
    slices whose ground truth, corrupted, plays the SSL prediction and SAM's prompt (Dice + CE, Adam).
    ``ssl_input``: what fills the SSL channel at pseudo-labelling time: ``mask`` (the binary SSL mask that also
    gives the boxes, as the binary corrupted masks of training) or ``prob`` (the SSL probability). ``training``:
    the SSL channel and SAM's prompt during training come from ``corrupt`` (corrupted ground truth), ``real`` (the
    segmenter's own predictions on the labelled slices, its real errors) or ``mixed`` (one copy of each)."""

    enabled: bool = True
    steps: int = 5000
    batch_size: int = 8
    lr: float = 1e-3
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    strides: tuple[int, ...] = (2, 2, 2, 2)
    num_res_units: int = 2
    morph_max: int = 3
    drop_prob: float = 0.2
    blob_prob: float = 0.2
    ssl_input: Literal["mask", "prob"] = "mask"
    training: Literal["corrupt", "real", "mixed"] = "corrupt"

    def __post_init__(self) -> None:
        _non_negative("adapter", steps=self.steps, morph_max=self.morph_max)
        _positive("adapter", batch_size=self.batch_size, lr=self.lr)
        _fraction("adapter", drop_prob=self.drop_prob, blob_prob=self.blob_prob)
        if len(self.strides) != len(self.channels) - 1:
            raise ValueError("adapter.strides needs one entry fewer than adapter.channels")


@dataclass
class SelectionConfig:
    """Reliable pseudo-labels (OURS): agreement a = Dice(refined, SSL) >= ``min_agreement`` and uncertainty u
    (mean binary entropy, bits, of the refined probability over the dilated union) <= ``max_uncertainty``;
    both empty with SSL max prob < ``neg_max_prob`` = reliable negative (<= ``neg_ratio`` per positive); at most
    ``max_fraction`` of the remaining candidates per round, ranked by a - u. ``mode``: ``reliable``, ``all``
    (every candidate, the no-selection ablation) or ``random`` (as many as ``reliable`` would pick, at random).
    ``rule``: ``threshold`` (the absolute a / u thresholds above) or ``quantile`` (relative to the round: the
    ``top_fraction`` of the scored candidates, those with a non-empty mask, ranked by a - u; the thresholds are
    then not used), so a round whose scores are all lower than another's still selects."""

    mode: Literal["reliable", "all", "random"] = "reliable"
    rule: Literal["threshold", "quantile"] = "threshold"
    top_fraction: float = 0.15
    min_agreement: float = 0.8
    max_uncertainty: float = 0.3
    neg_max_prob: float = 0.3
    neg_ratio: float = 1.0
    max_fraction: float = 0.5
    dilation: int = 3

    def __post_init__(self) -> None:
        _fraction("selection", top_fraction=self.top_fraction, min_agreement=self.min_agreement,
                  max_uncertainty=self.max_uncertainty,
                  neg_max_prob=self.neg_max_prob, max_fraction=self.max_fraction)
        _non_negative("selection", neg_ratio=self.neg_ratio, dilation=self.dilation)


@dataclass
class LoopConfig:
    """The ASLseg loop: ``rounds`` R of (SAM fine-tune, adapter, pseudo-label, select, ``retrain_iters`` more BCP
    iterations on the expanded labelled set; ``reinit`` restarts the segmenter from scratch instead).
    ``refiner``: ``sam`` (SAM + adapter), ``sam_raw`` (SAM without adapter), ``sam_gated`` (each SSL component
    replaced by SAM's answer in its box where the two agree with Dice >= ``gate_dice``, else kept),
    ``sam_mean`` (mean of the SSL and SAM probabilities) or ``teacher`` (no SAM: the EMA
    teacher's prediction, selected by student/teacher agreement). ``round0``: a ``checkpoints/ssl_<it>.pt``
    snapshot of an SSL run with the same seed and data to start from (the equal-budget baseline's own round 0)
    instead of training round 0 here."""

    rounds: int = 2
    retrain_iters: int = 10000
    reinit: bool = False
    refiner: Literal["sam", "sam_raw", "sam_gated", "sam_mean", "teacher"] = "sam"
    gate_dice: float = 0.7
    round0: str = ""

    def __post_init__(self) -> None:
        _non_negative("loop", rounds=self.rounds, retrain_iters=self.retrain_iters)
        _fraction("loop", gate_dice=self.gate_dice)


@dataclass
class EvalConfig:
    """Per-volume tumour metrics on the original grid (``surface``: HD95/ASD in mm)."""

    surface: bool = True
    batch_size: int = 32


@dataclass
class RuntimeConfig(_BaseRuntime):
    """``common.runtime.RuntimeConfig`` (device, amp, compile, deterministic, threads, progress) + checkpoint and
    log intervals (iterations). ``amp`` and ``compile`` are refused: no mixed-precision path is implemented."""

    progress: bool = False
    save_every: int = 200
    log_every: int = 50

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("runtime", save_every=self.save_every, log_every=self.log_every)
        if self.amp != "off":
            raise ValueError(f"runtime.amp={self.amp}: aslseg has no mixed-precision path; set runtime.amp=off")
        if self.compile:
            raise ValueError("runtime.compile is not supported by aslseg (many small models, short runs); "
                             "set runtime.compile=false")


@dataclass
class Config:
    experiment: str = "default"
    method: Literal["aslseg", "ssl", "sam_zero_shot_gtbox"] = "aslseg"
    seed: int = 0
    runs_root: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ssl: SSLConfig = field(default_factory=SSLConfig)
    sam: SAMConfig = field(default_factory=SAMConfig)
    sam_pretrain: SAMPretrainConfig = field(default_factory=SAMPretrainConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def __post_init__(self) -> None:
        if self.method == "aslseg" and self.loop.refiner == "teacher" and self.ssl.method == "supervised":
            raise ValueError("loop.refiner=teacher needs a teacher: ssl.method must be bcp, mean_teacher or ua_mt")
