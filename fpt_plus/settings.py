"""Typed configuration of the FPT / FPT+ reproduction (official code: configs/network/*.yaml, configs/dataset/*.yaml,
configs/train_config.yaml, configs/solver/adamw.yaml).

Every YAML file under ``configs/`` is loaded into :class:`Config` by ``common.config``; an unknown key, a wrong type,
a missing value or a value out of range stops the run before any work with a message naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from common.runtime import RuntimeConfig as BaseRuntimeConfig

Method = Literal["fpt_plus", "fpt", "side_only", "side_only_hr", "linear_probe", "full_finetune", "vpt", "adapter",
                 "lora"]
METHODS: tuple[str, ...] = ("fpt_plus", "fpt", "side_only", "side_only_hr", "linear_probe", "full_finetune", "vpt",
                            "adapter", "lora")
FPT_METHODS: tuple[str, ...] = ("fpt_plus", "fpt")
LPM_METHODS: tuple[str, ...] = ("linear_probe", "full_finetune", "vpt", "adapter", "lora")


@dataclass
class LPMConfig:
    """The frozen large pre-trained model (a timm ViT built from explicit dims; official modules/frozen_vit.py)."""

    name: str = "vit_base_patch16_384"  # timm architecture whose weights `pretrained` points at
    img_size: int = 512  # input resolution of the LPM branch (position embeddings interpolated to it)
    pretrain_img_size: int = 384  # resolution of the released weights (sets the official parameter denominator)
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    init_seed: int = 0  # seed of the random initialisation when model.pretrained=none (same LPM for every method)
    attn_chunk: int = 0  # query-chunk size of tapped-layer attention; 0 = auto (bounded memory)
    amp: Literal["off", "bf16", "auto"] = "off"  # autocast of the frozen LPM forward; auto = bf16 where the device
    # has native bf16 matrix units (decided at run time: models/lpm.py:native_bf16), else fp32
    attention: Literal["auto", "fused", "chunked"] = "auto"  # kernel of the untapped blocks' attention: timm's
    # fused SDPA, or the tapped blocks' chunked softmax (bounded memory); auto = chunked when compiled on CPU
    compile: Literal["off", "on", "freeze"] = "off"  # torch.compile of the frozen LPM forward (preload and online);
    # freeze = with inductor's freezing: the frozen weights become constants (folded, pre-packed for oneDNN on CPU)


@dataclass
class VariantConfig:
    """One fine-grained prompt tuning variant (FPT+ or FPT; official configs/network/{FPT+,FPT}.yaml)."""

    layers: list[int] = field(default_factory=lambda: [6, 7, 8, 9, 10, 11])  # tapped LPM blocks (0-indexed)
    side_img_size: int = 128
    prompt_reduction: int = 1  # prompt dim = LPM width / prompt_reduction (FPT+ 1, FPT 8)
    prompt_norm: bool = True
    prompt_proj: bool = False


@dataclass
class ModelConfig:
    """Networks: which method, the LPM, the two FPT variants, the side network and the PETL baselines."""

    method: Method = "fpt_plus"
    pretrained: str = "none"  # weights of the LPM: none (random, init_seed) | hub | /path/to/weights (.safetensors)
    lpm: LPMConfig = field(default_factory=LPMConfig)
    fpt_plus: VariantConfig = field(default_factory=VariantConfig)
    fpt: VariantConfig = field(default_factory=lambda: VariantConfig(
        layers=list(range(12)), side_img_size=224, prompt_reduction=8, prompt_norm=False, prompt_proj=True))
    num_prompts: int = 16
    side_reduction: int = 8  # side width = LPM width / side_reduction
    token_ratio: float = 0.2
    token_imp: Literal["global", "class_token"] = "global"
    fusion_dropout: float = 0.5
    vpt_prompts: int = 16  # VPT-deep prompts per layer (0.17 % for ViT-B, C = 5)
    adapter_bottleneck: int = 48  # Houlsby adapters, two per block (2.02 % for ViT-B)
    lora_rank: int = 16  # LoRA on q and v (0.68 % for ViT-B)
    lora_alpha: float = 16.0


@dataclass
class SynthConfig:
    """Synthetic fine-grained grading task written by ``synth.py`` (see its docstring)."""

    image_size: int = 192
    num_train: int = 400
    num_val: int = 100
    num_test: int = 200
    num_grades: int = 5
    seed: int = 1234
    lesion_radius: list[int] = field(default_factory=lambda: [7, 10])
    texture_amplitude: list[float] = field(default_factory=lambda: [0.05, 0.09])

    def __post_init__(self) -> None:
        if self.num_grades < 2 or self.image_size < 16 or self.image_size % 2:
            raise ValueError(f"data.synth: num_grades={self.num_grades} must be >= 2, image_size={self.image_size} "
                             f"even and >= 16")
        for split in ("train", "val", "test"):
            count = getattr(self, f"num_{split}")
            if count < self.num_grades:
                raise ValueError(f"data.synth.num_{split}={count} must be at least num_grades={self.num_grades} so "
                                 f"every class folder exists in every split")
        for key in ("lesion_radius", "texture_amplitude"):
            low_high = getattr(self, key)
            if len(low_high) != 2 or not 0 <= low_high[0] <= low_high[1]:
                raise ValueError(f"data.synth.{key}={low_high} must be [low, high] with 0 <= low <= high")
        if self.texture_amplitude[1] >= 0.25:
            raise ValueError(f"data.synth.texture_amplitude={self.texture_amplitude} must stay below 0.25 (the "
                             f"untextured image is clamped to [a_max, 1 - a_max] so that no pixel clips)")


@dataclass
class DataConfig:
    """Where the images are and how they are read (official data/builder.py: ImageFolder per split)."""

    root: str = "data/synthetic/fpt_plus/default"
    name: str = "synthetic"  # dataset name (for the record)
    format: Literal["imagefolder", "csv"] = "imagefolder"
    split_file: str | None = None  # csv format: (image, label, split); None = data/splits/fpt_plus/<root>/split.csv
    classes: list[str] | None = None  # None = class folders of train/ in alphabetical order
    synthetic: bool = False  # generate the synthetic dataset under `root` (only into a folder the generator made)
    verify: Literal["header", "full", "off"] = "header"  # check every listed image before any work
    synth: SynthConfig = field(default_factory=SynthConfig)
    mean: list[float] | str = "auto"  # per-channel mean in [0, 1], or auto = computed over the train split
    std: list[float] | str = "auto"
    preload: bool = True  # FPT variants and linear probing train from cached LPM outputs
    preload_dir: str | None = None  # cache of this variant; None = data/preload/fpt_plus/<root>/<method>
    preload_dtype: Literal["fp32", "fp16"] = "fp32"
    preload_batch_size: int = 16
    mean_std_images: int = 1000  # images of the train split used for mean/std = auto (0 = all)
    num_workers: int = 0
    cache_images: bool = False  # keep decoded images in memory (small datasets; per DataLoader worker)
    lpm_train_aug: Literal["weak", "flip", "none"] = "weak"  # augmentation of the LPM input of the PETL baselines


@dataclass
class OptimConfig:
    """Recipe of the official code (configs/train_config.yaml, configs/solver/adamw.yaml, train.py)."""

    epochs: int = 20
    batch_size: int = 16
    lr: float = 2e-4
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_epochs: float = 0.0
    grad_clip: float = 1.0
    eval_every: int = 1
    save_every: int = 10
    eval_batch_size: int = 32
    method_lr: dict[str, float] = field(default_factory=dict)  # per-method learning rate (else `lr`)
    method_warmup_epochs: dict[str, float] = field(default_factory=dict)  # per-method warm-up (else `warmup_epochs`)
    lpm_epochs: int = 0  # reproduce.py: epochs of the rows that run the LPM in training (0 = `epochs`)

    def lr_for(self, method: str) -> float:
        return self.method_lr.get(method, self.lr)

    def warmup_for(self, method: str) -> float:
        return self.method_warmup_epochs.get(method, self.warmup_epochs)

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "eval_every", "eval_batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"optim.{key}={getattr(self, key)} must be >= 1")
        if self.lr <= 0:
            raise ValueError(f"optim.lr={self.lr} must be > 0")
        if self.weight_decay < 0 or self.grad_clip < 0 or self.save_every < 0:
            raise ValueError("optim.weight_decay, optim.grad_clip and optim.save_every must be >= 0 (0 = off)")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"optim.warmup_epochs={self.warmup_epochs} must lie in [0, optim.epochs)")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"optim.betas={self.betas} must be two numbers in [0, 1)")
        for key in ("method_lr", "method_warmup_epochs"):
            unknown = sorted(set(getattr(self, key)) - set(METHODS))
            if unknown:
                raise ValueError(f"optim.{key}: unknown method(s) {unknown}; methods: {', '.join(METHODS)}")
        if any(v <= 0 for v in self.method_lr.values()) or self.lpm_epochs < 0:
            raise ValueError("optim.method_lr values must be > 0 and optim.lpm_epochs >= 0 (0 = optim.epochs)")


@dataclass
class RuntimeConfig(BaseRuntimeConfig):
    """``runtime:``: device, amp (autocast of the trainable path), compile, deterministic, threads (applied by
    ``common.runtime.setup_runtime``; 0 = torch default), progress, plus:"""

    lpm_threads: int = 0  # torch threads while the frozen LPM runs (preloading, feature caching); 0 = torch default

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lpm_threads < 0:
            raise ValueError(f"runtime.lpm_threads must be >= 0 (0 = torch default), got {self.lpm_threads}")


@dataclass
class PretrainConfig:
    """Recipe of the CPU LPM's pre-training on the synthetic texture source domain (``pretrain_lpm.py``); the
    weights live under ``data/pretrained/fpt_plus/<hash of this recipe and model.lpm>/``."""

    steps: int = 150
    batch_size: int = 32
    lr: float = 1.0e-3
    weight_decay: float = 0.05
    warmup_steps: int = 15
    image_weight: float = 0.5  # weight of the image-level presence loss beside the per-token texture loss
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0 or not 0 <= self.warmup_steps < self.steps:
            raise ValueError(f"pretraining recipe: steps={self.steps}, batch_size={self.batch_size} must be >= 1, "
                             f"lr={self.lr} > 0 and 0 <= warmup_steps={self.warmup_steps} < steps")


@dataclass
class Config:
    experiment: str = "default"
    seed: int = 0
    runs_root: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def __post_init__(self) -> None:
        check_model(self.model)
        check_data(self.data)
        warmup = self.optim.warmup_for(self.model.method)
        if not 0 <= warmup < self.optim.epochs:
            raise ValueError(f"optim.method_warmup_epochs.{self.model.method}={warmup} must lie in [0, optim.epochs)")


def check_model(m: ModelConfig) -> None:
    """Geometry checks: divisibility, tapped layers inside the LPM, token ratio, dropout."""
    lpm = m.lpm
    if lpm.embed_dim % lpm.num_heads:
        raise ValueError(f"model.lpm.embed_dim={lpm.embed_dim} is not divisible by num_heads={lpm.num_heads}")
    if lpm.img_size % lpm.patch_size:
        raise ValueError(f"model.lpm.img_size={lpm.img_size} is not a multiple of patch_size={lpm.patch_size}")
    for name in FPT_METHODS:
        variant: VariantConfig = getattr(m, name)
        bad = [i for i in variant.layers if not 0 <= i < lpm.depth]
        if bad or not variant.layers:
            raise ValueError(f"model.{name}.layers={variant.layers} must be non-empty indices in "
                             f"0..{lpm.depth - 1} (the LPM has {lpm.depth} blocks)")
        if variant.side_img_size % lpm.patch_size:
            raise ValueError(f"model.{name}.side_img_size={variant.side_img_size} is not a multiple of the "
                             f"patch size {lpm.patch_size}")
    if not 0.0 < m.token_ratio <= 1.0:
        raise ValueError(f"model.token_ratio={m.token_ratio} must lie in (0, 1]")
    if not 0.0 <= m.fusion_dropout < 1.0:
        raise ValueError(f"model.fusion_dropout={m.fusion_dropout} must lie in [0, 1)")
    if m.num_prompts < 1 or m.side_reduction < 1:
        raise ValueError("model.num_prompts and model.side_reduction must be >= 1")


def check_data(d: DataConfig) -> None:
    """mean/std are ``auto`` or 3 numbers; batch sizes and counts positive."""
    for key in ("mean", "std"):
        value = getattr(d, key)
        if isinstance(value, str) and value != "auto":
            raise ValueError(f"data.{key}={value!r} must be `auto` or a list of 3 numbers")
        if isinstance(value, list) and len(value) != 3:
            raise ValueError(f"data.{key} must have 3 values (RGB), got {value}")
    if d.preload_batch_size < 1 or d.num_workers < 0 or d.mean_std_images < 0:
        raise ValueError("data.preload_batch_size must be >= 1, data.num_workers and data.mean_std_images >= 0")
