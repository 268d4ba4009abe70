"""Typed configuration of an SPMix experiment: YAML -> these dataclasses via ``common.config`` (paper Sec. III,
recipe of the official script ``main_isic.py``).

``method`` picks SPMix or one baseline; every method runs through the same training loop (``engine.py``) and
differs only in its sampler, mixing function and loss (:data:`METHODS`). Every value is checked here, in
``__post_init__``, so a bad value stops the run before any data is generated, read or written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from common.runtime import RuntimeConfig

CLASSES = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")  # column order of the ISIC 2018 Task 3 CSVs

Method = Literal["spmix", "ce", "resampling", "reweighting", "balanced_softmax", "mixup", "cutmix", "saliencymix",
                 "cmo", "resampling_mixup", "resampling_cutmix"]
Split = Literal["official", "pooled_holdout", "lesion_disjoint"]
LossName = Literal["ce", "reweighting", "balanced_softmax", "paco"]
SaliencyMethod = Literal["auto", "fine_grained", "spectral_residual"]
Backbone = Literal["vit_small_resnet50d_s16_224", "tiny_hybrid", "resnet50", "resnet18", "tiny_resnet"]
Dominant = Literal["balanced", "instance"]

# method -> (primary sampler, mixing, loss). loss None = ``loss.name`` (ce in the comparison, paco optional).
METHODS: dict[str, tuple[str, str, str | None]] = {
    "spmix": ("instance", "spmix", None),
    "ce": ("instance", "none", "ce"),
    "resampling": ("class_balanced", "none", "ce"),
    "reweighting": ("instance", "none", "reweighting"),
    "balanced_softmax": ("instance", "none", "balanced_softmax"),
    "mixup": ("instance", "mixup", "ce"),
    "cutmix": ("instance", "cutmix", "ce"),
    "saliencymix": ("instance", "saliencymix", "ce"),
    "cmo": ("instance", "cmo", "ce"),
    "resampling_mixup": ("class_balanced", "mixup", "ce"),     # separates the sampler from the mixing
    "resampling_cutmix": ("class_balanced", "cutmix", "ce"),
}
SALIENCY_METHODS = ("spmix", "saliencymix")  # methods that read saliency maps


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass
class AugmentConfig:
    """Training views of the released ``ISICImageFolder`` (crop, flip, jitter, RandAugment) and eval resizing."""

    crop_scale: tuple[float, float] = (0.08, 1.0)
    randaug_n: int = 2
    randaug_magnitude: float = 10.0
    randaug_ops: Literal["all", "geometric"] = "all"   # geometric: affine ops only (keeps colour cues intact)
    color_jitter: float = 0.4
    eval_resize_ratio: float = 256 / 224

    def __post_init__(self) -> None:
        lo, hi = self.crop_scale
        _require(0 < lo <= hi <= 1, f"augment.crop_scale={self.crop_scale} must satisfy 0 < low <= high <= 1")
        _require(self.randaug_n >= 0, f"augment.randaug_n={self.randaug_n} must be >= 0")
        _require(0 <= self.randaug_magnitude <= 10,
                 f"augment.randaug_magnitude={self.randaug_magnitude} must lie in [0, 10]")
        _require(self.color_jitter >= 0, f"augment.color_jitter={self.color_jitter} must be >= 0")
        _require(self.eval_resize_ratio >= 1, f"augment.eval_resize_ratio={self.eval_resize_ratio} must be >= 1")


@dataclass
class DataConfig:
    root: str = "data/synthetic/spmix"
    synthetic: bool = True               # generate the synthetic set under root on first use (never over real data)
    verify: Literal["header", "full", "off"] = "header"   # check every listed image before any work
    split: Split = "official"
    split_file: str = ""                 # "" -> data/splits/spmix/<root>-<hash>/<split>_seed<seed>.csv (real data)
    holdout_per_class: int = 46
    synth_train: int = 400
    synth_val_per_class: int = 20
    synth_test_per_class: int = 30
    synth_tail_pool: int = 1             # training contexts per tail class in the synthetic set (spurious context)
    img_size: int = 96
    num_workers: int = 0
    cache: bool = True                   # keep decoded images in memory (small data sets)
    head: tuple[str, ...] = ("NV",)      # reporting groups (per-class recall means)
    medium: tuple[str, ...] = ("MEL", "BKL", "BCC")
    tail: tuple[str, ...] = ("AKIEC", "VASC", "DF")
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        _require(self.holdout_per_class >= 1, f"data.holdout_per_class={self.holdout_per_class} must be >= 1")
        _require(self.synth_train >= 7 and self.synth_val_per_class >= 1 and self.synth_test_per_class >= 1,
                 "data.synth_train must be >= 7 and data.synth_val_per_class / synth_test_per_class >= 1")
        _require(1 <= self.synth_tail_pool <= 4, f"data.synth_tail_pool={self.synth_tail_pool} must lie in [1, 4] "
                                                 f"(3 tail classes share 12 contexts)")
        _require(self.img_size >= 16, f"data.img_size={self.img_size} must be >= 16")
        _require(self.num_workers >= 0, f"data.num_workers={self.num_workers} must be >= 0")
        for group in ("head", "medium", "tail"):
            unknown = [c for c in getattr(self, group) if c not in CLASSES]
            _require(not unknown, f"data.{group} lists unknown class(es) {unknown}; classes are {list(CLASSES)}")


@dataclass
class SaliencyConfig:
    method: SaliencyMethod = "auto"
    resolved: str = ""                   # filled in by the run: the detector that actually ran ("unused" if none)
    root: str = ""                       # "" -> <synthetic root>/saliency, or data/saliency/spmix/<root>-<hash>
    precompute: bool = True              # compute missing maps before training
    patch: int = 16
    tie_noise: float = 0.5

    def __post_init__(self) -> None:
        _require(self.resolved in ("", "unused", "fine_grained", "spectral_residual"),
                 f"saliency.resolved={self.resolved!r} is written by the run; leave it empty")
        _require(self.patch >= 1, f"saliency.patch={self.patch} must be >= 1")
        _require(self.tie_noise >= 0, f"saliency.tie_noise={self.tie_noise} must be >= 0")


@dataclass
class ModelConfig:
    backbone: Backbone = "tiny_hybrid"
    pretrained: str = "none"             # none | hub | /path/to/weights (ResNet stages for hybrids)
    tiny_channels: tuple[int, ...] = (16, 32, 64, 128)
    tiny_embed_dim: int = 96
    tiny_depth: int = 4
    tiny_heads: int = 3
    tiny_mlp_ratio: float = 3.0
    drop_path: float = 0.0
    proj_hidden: int = 4096
    proj_dim: int = 256
    pred_hidden: int = 4096

    def __post_init__(self) -> None:
        _require(len(self.tiny_channels) == 4 and min(self.tiny_channels) >= 2,
                 f"model.tiny_channels={self.tiny_channels} must list 4 widths >= 2")
        _require(self.tiny_embed_dim % self.tiny_heads == 0,
                 f"model.tiny_embed_dim={self.tiny_embed_dim} must be divisible by tiny_heads={self.tiny_heads}")
        _require(min(self.tiny_depth, self.proj_hidden, self.proj_dim, self.pred_hidden) >= 1,
                 "model.tiny_depth, proj_hidden, proj_dim and pred_hidden must be >= 1")
        _require(0 <= self.drop_path < 1, f"model.drop_path={self.drop_path} must lie in [0, 1)")


@dataclass
class SPMixConfig:
    """The mixing component (paper Sec. II-B, Eq. 1-3)."""

    alpha: float = 0.8
    dominant: Dominant = "balanced"      # balanced (paper) | instance (released code)
    level: Literal["auto", "token", "pixel"] = "auto"   # auto: token for hybrids, pixel for CNNs
    prob: float = 1.0
    start_epoch: int = 0
    stop_before_end: int = 0

    def __post_init__(self) -> None:
        _require(0.5 <= self.alpha <= 1.0, f"spmix.alpha={self.alpha} must lie in [0.5, 1]")
        _require(0 <= self.prob <= 1, f"spmix.prob={self.prob} must lie in [0, 1]")
        _require(self.start_epoch >= 0 and self.stop_before_end >= 0,
                 "spmix.start_epoch and spmix.stop_before_end must be >= 0")


@dataclass
class BaselineConfig:
    mixup_alpha: float = 1.0
    cutmix_alpha: float = 1.0
    saliencymix_alpha: float = 1.0
    cmo_alpha: float = 1.0
    cmo_prob: float = 0.5
    cmo_start_epoch: int = 3
    cmo_stop_before_end: int = 3

    def __post_init__(self) -> None:
        _require(min(self.mixup_alpha, self.cutmix_alpha, self.saliencymix_alpha, self.cmo_alpha) >= 0,
                 "baselines.*_alpha must be >= 0")
        _require(0 <= self.cmo_prob <= 1, f"baselines.cmo_prob={self.cmo_prob} must lie in [0, 1]")
        _require(self.cmo_start_epoch >= 0 and self.cmo_stop_before_end >= 0,
                 "baselines.cmo_start_epoch and cmo_stop_before_end must be >= 0")


@dataclass
class PaCoConfig:
    alpha: float = 0.05
    beta: float = 1.0
    gamma: float = 1.0
    temperature: float = 0.2
    queue: int = 8192
    faithful_code: bool = False          # released code's logits_k = logits_q quirk

    def __post_init__(self) -> None:
        _require(self.temperature > 0, f"loss.paco.temperature={self.temperature} must be > 0")
        _require(self.queue >= 0, f"loss.paco.queue={self.queue} must be >= 0")


@dataclass
class LossConfig:
    name: LossName = "ce"                # loss of spmix (the other methods fix theirs, see METHODS)
    cb_beta: float = 0.9999
    paco: PaCoConfig = field(default_factory=PaCoConfig)

    def __post_init__(self) -> None:
        _require(0 <= self.cb_beta < 1, f"loss.cb_beta={self.cb_beta} must lie in [0, 1)")


@dataclass
class OptimConfig:
    lr: float = 5e-6
    weight_decay: float = 0.1
    epochs: int = 500
    warmup_epochs: float = 10
    batch_size: int = 32                 # per process under torchrun
    eval_batch_size: int = 128
    grad_clip: float = 0.0
    select_metric: str = "balanced_accuracy"   # validation metric that picks best.pt

    def __post_init__(self) -> None:
        _require(self.lr > 0, f"optim.lr={self.lr} must be > 0")
        _require(self.weight_decay >= 0, f"optim.weight_decay={self.weight_decay} must be >= 0")
        _require(self.epochs >= 1, f"optim.epochs={self.epochs} must be >= 1")
        _require(0 <= self.warmup_epochs <= self.epochs,
                 f"optim.warmup_epochs={self.warmup_epochs} must lie in [0, optim.epochs={self.epochs}]")
        _require(self.batch_size >= 2 and self.eval_batch_size >= 1,
                 "optim.batch_size must be >= 2 (BatchNorm heads) and optim.eval_batch_size >= 1")
        _require(self.grad_clip >= 0, f"optim.grad_clip={self.grad_clip} must be >= 0")
        allowed = ("accuracy", "balanced_accuracy", "f1_macro", "auc", "head_recall", "medium_recall", "tail_recall")
        _require(self.select_metric in allowed, f"optim.select_metric={self.select_metric!r}: use one of {allowed}")


@dataclass
class Config:
    experiment: str = "default"
    seed: int = 0
    runs_root: str = "runs"
    method: Method = "spmix"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    saliency: SaliencyConfig = field(default_factory=SaliencyConfig)
    spmix: SPMixConfig = field(default_factory=SPMixConfig)
    baselines: BaselineConfig = field(default_factory=BaselineConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self) -> None:
        _require(self.seed >= 0, f"seed={self.seed} must be >= 0")
        _require(self.data.img_size % self.saliency.patch == 0,
                 f"data.img_size={self.data.img_size} must be a multiple of saliency.patch={self.saliency.patch}")
        if self.loss.name == "paco":
            _require(self.method == "spmix", f"loss.name=paco is the SPMix training loss; method={self.method} "
                                             f"fixes its own loss (use method=spmix)")
        if self.method == "spmix" and self.spmix.level == "token":
            _require(self.model.backbone in ("vit_small_resnet50d_s16_224", "tiny_hybrid"),
                     f"spmix.level=token needs a hybrid backbone, model.backbone={self.model.backbone} is a CNN")

    @property
    def loss_name(self) -> str:
        """The loss this method trains with."""
        return METHODS[self.method][2] or self.loss.name

    @property
    def groups(self) -> dict[str, tuple[str, ...]]:
        return {"head": self.data.head, "medium": self.data.medium, "tail": self.data.tail}
