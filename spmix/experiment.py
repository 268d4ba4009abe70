"""Typed configuration of an SPMix experiment (YAML -> dataclasses via common.config), spec §2 recipe.

``method`` picks SPMix or one baseline; every method runs through the same training loop (engine.py) and differs
only in its sampler, mixing function and loss (:data:`METHODS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.runtime import RuntimeConfig as BaseRuntimeConfig
from spmix.data import AugmentConfig
from spmix.model import ModelConfig

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
}


@dataclass
class DataConfig:
    root: str = "data/synthetic/spmix"
    synthetic: bool = True               # generate the synthetic set under root on first use
    synth_train: int = 700
    synth_val_per_class: int = 8
    synth_test_per_class: int = 30
    split: str = "official"              # official | spmix_repo | lesion_disjoint
    holdout_per_class: int = 46
    img_size: int = 96
    batch_size: int = 32
    eval_batch_size: int = 128
    num_workers: int = 0
    cache: bool = True                   # keep decoded images in memory (small data sets)


@dataclass
class SaliencyConfig:
    method: str = "auto"                 # auto | fine_grained | spectral_residual
    resolved: str = ""                   # written by train.py: the method that actually ran
    root: str = ""                       # "" -> <data.root>/saliency
    precompute: bool = True              # compute missing maps before training
    patch: int = 16
    tie_noise: float = 0.5


@dataclass
class SPMixConfig:
    alpha: float = 0.8
    dominant: str = "balanced"           # balanced (paper) | instance (released code)
    level: str = "auto"                  # auto (token for hybrids, pixel for CNNs) | token | pixel
    prob: float = 1.0
    start_epoch: int = 0
    stop_before_end: int = 0


@dataclass
class BaselineConfig:
    mixup_alpha: float = 1.0
    cutmix_alpha: float = 1.0
    saliencymix_alpha: float = 1.0
    cmo_alpha: float = 1.0
    cmo_prob: float = 0.5
    cmo_start_epoch: int = 3
    cmo_stop_before_end: int = 3


@dataclass
class PaCoConfig:
    alpha: float = 0.05
    beta: float = 1.0
    gamma: float = 1.0
    temperature: float = 0.2
    queue: int = 8192
    faithful_code: bool = False          # released code's logits_k = logits_q quirk


@dataclass
class LossConfig:
    name: str = "ce"                     # ce | balanced_softmax | reweighting | paco (for spmix / mixing methods)
    cb_beta: float = 0.9999
    paco: PaCoConfig = field(default_factory=PaCoConfig)


@dataclass
class OptimConfig:
    lr: float = 5e-6
    weight_decay: float = 0.1
    epochs: int = 500
    warmup_epochs: float = 10
    grad_clip: float = 0.0


@dataclass
class RuntimeConfig(BaseRuntimeConfig):
    """``runtime:``: device, amp (off | bf16 | fp16), compile, deterministic, plus:"""

    threads: int = 0                     # 0 = torch default


@dataclass
class EvalConfig:
    head: tuple[str, ...] = ("NV",)
    medium: tuple[str, ...] = ("MEL", "BKL", "BCC")
    tail: tuple[str, ...] = ("AKIEC", "VASC", "DF")
    select_metric: str = "balanced_accuracy"


@dataclass
class Config:
    experiment: str = "default"
    method: str = "spmix"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    saliency: SaliencyConfig = field(default_factory=SaliencyConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    spmix: SPMixConfig = field(default_factory=SPMixConfig)
    baselines: BaselineConfig = field(default_factory=BaselineConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    runs_root: str = "runs"
    save_every_epoch: bool = True


def validate(cfg: Config) -> None:
    """Cross-field checks that typed loading cannot do; raise ConfigError naming the key."""
    from common.config import ConfigError
    from spmix.data import CLASSES, SPLITS
    from spmix.losses import LOSSES
    from spmix.mixing import DOMINANT_RULES

    if cfg.method not in METHODS:
        raise ConfigError(f"method={cfg.method!r} is unknown; use one of {list(METHODS)}")
    if cfg.loss.name not in LOSSES:
        raise ConfigError(f"loss.name={cfg.loss.name!r} is unknown; use one of {LOSSES}")
    if cfg.data.split not in SPLITS:
        raise ConfigError(f"data.split={cfg.data.split!r} is unknown; use one of {SPLITS}")
    if cfg.spmix.dominant not in DOMINANT_RULES:
        raise ConfigError(f"spmix.dominant={cfg.spmix.dominant!r} is unknown; use one of {DOMINANT_RULES}")
    if cfg.spmix.level not in ("auto", "token", "pixel"):
        raise ConfigError(f"spmix.level={cfg.spmix.level!r} is unknown; use auto, token or pixel")
    if not 0.5 <= cfg.spmix.alpha <= 1.0:
        raise ConfigError(f"spmix.alpha={cfg.spmix.alpha} must lie in [0.5, 1]")
    if cfg.data.img_size % cfg.saliency.patch:
        raise ConfigError(f"data.img_size={cfg.data.img_size} must be a multiple of "
                          f"saliency.patch={cfg.saliency.patch}")
    for group in ("head", "medium", "tail"):
        unknown = [c for c in getattr(cfg.eval, group) if c not in CLASSES]
        if unknown:
            raise ConfigError(f"eval.{group} lists unknown class(es) {unknown}; classes are {CLASSES}")
    mixing = METHODS[cfg.method][1]
    if cfg.loss.name == "paco" and mixing not in ("spmix", "none"):
        raise ConfigError(f"loss.name=paco needs hard labels; method={cfg.method} mixes labels")
