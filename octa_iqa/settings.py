"""Typed configuration of UNO-QA experiments (``configs/*.yaml`` -> :class:`Config` via :func:`common.config`).

Every knob of our concrete instantiation of the paper's pipeline (feature extractor, adaptors, memory bank,
threshold, test-time clustering) and of the training recipe is exposed here. The paper's own values are not
available to this project: the defaults are ours and are listed as deviations in the README.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from common.datasets import VerifyMode
from common.runtime import RuntimeConfig, refuse_unsupported

__all__ = ["SynthConfig", "DataConfig", "SelfSupConfig", "ModelConfig", "BankConfig", "LossConfig", "OptimConfig",
           "ThresholdConfig", "ClusterConfig", "BaselineConfig", "RuntimeConfig", "Config", "CLASS_NAMES"]

CLASS_NAMES = ("ungradable", "gradable", "outstanding")  # index = label (COIPS convention: 0, 1, 2)


@dataclass
class SynthConfig:
    """Synthetic superficial-plexus en-face set written by ``synth.py`` in the sOCTA-3x3-10k layout."""

    size: int = 128
    train_counts: list[int] = field(default_factory=lambda: [80, 80, 240])  # per label 0, 1, 2
    test_counts: list[int] = field(default_factory=lambda: [60, 60, 60])
    gradable_severity: tuple[float, float] = (0.6, 0.95)  # one artefact, inside a local region
    ungradable_severity: tuple[float, float] = (0.75, 1.0)  # one artefact over the whole image
    combined_severity: tuple[float, float] = (0.45, 0.7)  # 2-3 co-occurring artefacts over the whole image
    ungradable_multi_fraction: float = 0.5
    local_extent: tuple[float, float] = (0.45, 0.75)  # local region axes as fractions of the side
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("train_counts", "test_counts"):
            counts = getattr(self, name)
            if len(counts) != 3 or min(counts) < 0:
                raise ValueError(f"synth.{name} must hold 3 non-negative counts (labels 0, 1, 2), got {counts}")
        for name in ("gradable_severity", "ungradable_severity", "combined_severity", "local_extent"):
            lo, hi = getattr(self, name)
            if not 0.0 <= lo <= hi <= 1.0:
                raise ValueError(f"synth.{name} must satisfy 0 <= low <= high <= 1, got {(lo, hi)}")
        if not 0.0 <= self.ungradable_multi_fraction <= 1.0:
            raise ValueError(f"synth.ungradable_multi_fraction must lie in [0, 1], got "
                             f"{self.ungradable_multi_fraction}")


@dataclass
class DataConfig:
    """``format: socta`` = ``<root>/<split>/{0,1,2}/*.png``; ``manifest`` = CSV ``path,label,split``;
    ``drac`` = DRAC 2022 task 2 CSV (``image name``, ``image quality level``) plus a seeded split file, written under
    ``data/splits/octa_iqa/`` (or ``split_file``), never inside the data root. ``verify``: every listed image is
    checked before any work (``header`` decode, ``full`` decode, or ``off``)."""

    root: str = "data/synthetic/octa_iqa_v2"
    synthetic: bool = True
    verify: VerifyMode = "header"
    split_file: str | None = None
    format: Literal["socta", "manifest", "drac"] = "socta"
    manifest: str | None = None
    drac_csv: str = "2. Groundtruths/a. DRAC2022_ Image Quality Assessment_Training Labels.csv"
    drac_images: str = "1. Original Images/a. Training Set"
    drac_test_fraction: float = 0.3
    train_split: str = "train"
    test_split: str = "test"
    extra_splits: list[str] = field(default_factory=list)  # e.g. the two external test folders of sOCTA-3x3-10k
    image_size: int = 128
    resize: int | None = None  # resize before the centre crop (e.g. 256 -> crop 224); null = image_size
    holdout_fraction: float = 0.3  # outstanding training images held out for early stopping and tau
    split_seed: int = 0
    augment: bool = True
    num_workers: int = 0
    synth: SynthConfig = field(default_factory=SynthConfig)

    def __post_init__(self) -> None:
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ValueError(f"data.holdout_fraction must lie in (0, 1), got {self.holdout_fraction}")
        if self.format == "manifest" and not self.manifest:
            raise ValueError("data.format=manifest needs data.manifest=/path/to/manifest.csv "
                             "(columns path,label,split)")


@dataclass
class SelfSupConfig:
    """Backbone pre-training from scratch on outstanding images (our no-pretrained-weights path, VICReg loss)."""

    epochs: int = 6
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    crop_fraction: float = 0.75
    proj_dim: int = 256
    sim_weight: float = 25.0
    var_weight: float = 25.0
    cov_weight: float = 1.0


@dataclass
class ModelConfig:
    """Feature extractor + trainable per-scale adaptors."""

    backbone: str = "resnet18"
    out_indices: tuple[int, ...] = (1, 2, 3)
    # none: random init; selfsup: VICReg from scratch on the outstanding images; hub / path: ImageNet weights
    pretrained: str = "selfsup"
    adaptor_dim: int = 128
    aggregation_kernel: int = 3
    train_head: bool = True
    selfsup: SelfSupConfig = field(default_factory=SelfSupConfig)


@dataclass
class BankConfig:
    """Memory bank of normal patch embeddings: k-means centres or a greedy coreset (PatchCore)."""

    kind: Literal["kmeans", "coreset"] = "kmeans"
    size: int = 256
    coreset_ratio: float = 0.1
    fit_patches: int = 10000  # patches sub-sampled for k-means (all are used by the coreset)
    projection_dim: int = 128  # coreset selection runs on a random projection (PatchCore)


@dataclass
class LossConfig:
    """Compactness (squared distance to the nearest centre) + margin hinge + variance floor (ours, non-collapse);
    all in units of the initial per-dimension std of the normal embeddings."""

    margin: float = 0.1
    margin_weight: float = 1.0
    variance_weight: float = 1.0
    variance_floor: float = 0.5


@dataclass
class OptimConfig:
    """Adam on the adaptors; ``epochs: 0`` keeps the untrained adaptors (ablation), early stopping by ``patience``."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 16
    epochs: int = 20
    patience: int = 5

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"optim.lr must be > 0 and optim.weight_decay >= 0, got {self.lr}, {self.weight_decay}")
        if self.epochs < 0 or self.batch_size < 1 or self.patience < 1:
            raise ValueError(f"optim.epochs must be >= 0, optim.batch_size and optim.patience >= 1; got "
                             f"{self.epochs}, {self.batch_size}, {self.patience}")


@dataclass
class ThresholdConfig:
    """Outstanding vs non-outstanding: s(x) = |z(top-1 % patch distance)| + image_weight * z(Mahalanobis distance of
    the pooled adapted scales to the outstanding training images); tau from held-out outstanding images.
    ``image_weight: 0`` is the patch score alone."""

    rule: Literal["quantile", "otsu", "gmm2"] = "quantile"
    quantile: float = 0.95
    top_fraction: float = 0.01  # patch term = mean of the top 1 % patch distances
    aggregate: Literal["topk_mean", "max"] = "topk_mean"
    image_weight: float = 2.0
    two_sided: bool = True  # |z(patch term)|: an unusually low patch distance counts as anomalous too (darkening)

    def __post_init__(self) -> None:
        if not 0.5 <= self.quantile < 1.0 or not 0.0 < self.top_fraction <= 1.0 or self.image_weight < 0:
            raise ValueError(f"threshold.quantile must lie in [0.5, 1), threshold.top_fraction in (0, 1] and "
                             f"threshold.image_weight >= 0; got {self.quantile}, {self.top_fraction}, "
                             f"{self.image_weight}")


@dataclass
class ClusterConfig:
    """Test-time clustering of the non-outstanding images into gradable / ungradable (the paper's stage 2)."""

    reduce: Literal["pca", "tsne", "umap", "none"] = "pca"
    n_components: int = 1  # PCA components of the pooled features (0: score block only)
    whiten: bool = False
    method: Literal["kmeans", "gmm"] = "gmm"
    n_init: int = 10
    min_fraction: float = 0.02
    score_weight: float = 2.0  # total std of the score block relative to the pooled block (unit total variance)
    score_block: Literal["log_excess", "terms"] = "log_excess"  # log(1 + s - tau) | [s, patch, image, mean patch]
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_components < 0 or self.score_weight < 0 or not 0.0 <= self.min_fraction < 0.5:
            raise ValueError(f"cluster.n_components and cluster.score_weight must be >= 0 and cluster.min_fraction "
                             f"in [0, 0.5); got {self.n_components}, {self.score_weight}, {self.min_fraction}")


@dataclass
class BaselineConfig:
    """Baselines: PaDiM, PatchCore, k-means on raw features, supervised upper bounds."""

    padim_dims: int = 100
    patchcore_coreset_ratio: float = 0.1
    second_split: Literal["otsu", "gmm3"] = "otsu"
    supervised_epochs: int = 40  # length of the cosine schedule; early stopping on the validation loss
    supervised_patience: int = 4
    supervised_seeds: int = 3  # the supervised row (the costliest) runs for the first this many seeds only
    supervised_lr: float = 1e-3  # AdamW peak, reached after one linear warm-up epoch, then cosine decay to 0
    supervised_weight_decay: float = 1e-4
    supervised_batch_size: int = 32
    supervised_val_fraction: float = 0.2  # stratified validation part of the training split (model selection)
    # first backbone module fine-tuned (the ones before it stay frozen); null: every module is fine-tuned
    supervised_train_from: str | None = None

    def __post_init__(self) -> None:
        if self.supervised_epochs < 1 or self.supervised_patience < 1 or self.supervised_seeds < 0:
            raise ValueError(f"baselines.supervised_epochs and supervised_patience must be >= 1 and supervised_seeds "
                             f">= 0; got {self.supervised_epochs}, {self.supervised_patience}, "
                             f"{self.supervised_seeds}")
        if not 0.0 < self.supervised_val_fraction < 0.5 or self.supervised_lr <= 0:
            raise ValueError(f"baselines.supervised_val_fraction must lie in (0, 0.5) and supervised_lr > 0; got "
                             f"{self.supervised_val_fraction}, {self.supervised_lr}")


@dataclass
class Config:
    experiment: str = "default"
    seed: int = 0
    runs_root: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    bank: BankConfig = field(default_factory=BankConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    baselines: BaselineConfig = field(default_factory=BaselineConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def __post_init__(self) -> None:
        # scoring and k-means run in float32 on features computed once; there is no AMP or compiled path
        refuse_unsupported(self.runtime, amp=False, compile=False, project="octa_iqa")
