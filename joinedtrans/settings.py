"""Typed configuration of JOINEDTrans runs (loaded by :func:`common.config.load_config`, every key validated first).

Defaults are the paper-scale recipe of the JOINED code (``Coarse/train_smp.sh``, ``Fine/train.sh``): coarse Adam
2e-4, 300 epochs, batch 16, 256 px, no augmentation; fine Adam 4e-4, 500 epochs, batch 16, 448 px crops, flips
p=0.8; seed 20. ``configs/default.yaml`` shrinks every stage to CPU size on synthetic data.

Sections: ``data`` (the paper's datasets), ``model`` (the coarse network's encoder and decoders), ``optim`` (coarse
optimiser and schedule), ``coarse`` (targets, curriculum, hand-off), ``pretrain`` (vessel pre-training of the
encoder), ``fine`` (ROI refinement of disc/cup), ``fovea`` (ROI refinement of the fovea), ``eval``, ``runtime``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from common.runtime import RuntimeConfig

__all__ = ["SynthConfig", "DataConfig", "ModelConfig", "OptimConfig", "CoarseConfig", "PretrainConfig",
           "FineConfig", "FoveaConfig", "EvalConfig", "RuntimeConfig", "Config", "DATASETS"]

DATASETS = ("refuge", "gamma", "palm")


@dataclass
class SynthConfig:
    """Synthetic fundus trees written by ``synth.py`` (sizes are W x H of the image files)."""

    n_train: int = 48
    n_val: int = 16
    n_test: int = 64
    train_size: tuple[int, int] = (320, 304)
    test_size: tuple[int, int] = (304, 304)
    hard_train: float = 0.25
    hard_test: float = 0.5
    n_gamma: int = 20
    n_palm: int = 16
    n_drive: int = 40
    n_chase: int = 28
    n_hrf: int = 45
    vessel_size: int = 160
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("hard_train", "hard_test"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"synth.{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.n_drive % 2:
            raise ValueError(f"synth.n_drive must be even (DRIVE = training + test halves), got {self.n_drive}")


@dataclass
class DataConfig:
    """``root`` holds the dataset in its published layout (README "Data"). ``synthetic: true`` writes the synthetic
    trees there on first use (``<root>/{REFUGE,GAMMA,PALM,DRIVE,CHASE_DB1,HRF}``); ``dataset`` picks the one used.

    ``fold`` (1..5) is JOINED's GAMMA split (contiguous blocks of 20, fold 1 validates 0081-0100). ``fovea_table``
    overrides the fovea xlsx/csv path (relative to the dataset folder). ``coords_one_based`` subtracts 1 from the
    table's coordinates. ``verify`` checks every listed file before any work. ``mask_snap`` snaps mask values
    outside {0, 128, 255} to the nearest of them (JPEG-like
    re-saves) instead of refusing the file."""

    root: str = "data/synthetic/joinedtrans"
    synthetic: bool = True
    dataset: Literal["refuge", "gamma", "palm"] = "refuge"
    fold: int = 1
    fovea_table: str = ""
    coords_one_based: bool = False
    mask_snap: bool = False
    verify: Literal["header", "full", "off"] = "header"
    num_workers: int = 0
    synth: SynthConfig = field(default_factory=SynthConfig)

    def __post_init__(self) -> None:
        if not 1 <= self.fold <= 5:
            raise ValueError(f"data.fold must lie in 1..5 (JOINED's five GAMMA folds), got {self.fold}")


@dataclass
class ModelConfig:
    """The coarse network: one encoder, three UNet++ decoders (seg, heatmap, distance).

    ``encoder: swin`` = timm Swin ``name`` with ``features_only`` (strides 4-32) plus a 2-conv stem (stride-2 skip,
    ``stem_channels``); ``embed_dim``/``depths``/``num_heads`` null = the timm model's own. ``encoder: cnn`` = timm
    CNN ``name`` (JOINED: ``resnest50d``), whose own stride-2 feature is the skip; ``channels``/``stem_width`` null
    = the model's own; ``feature_channels`` [ours, CPU sizing] = 1x1 projections of the CNN's 5 features to these
    widths before the decoders (null = none, JOINED). ``pretrained: none | hub | /path`` = ImageNet weights of the
    timm model."""

    encoder: Literal["swin", "cnn"] = "swin"
    name: str = "swin_base_patch4_window7_224"
    pretrained: str = "none"
    embed_dim: int | None = None
    depths: tuple[int, ...] | None = None
    num_heads: tuple[int, ...] | None = None
    window_size: int = 8
    drop_path_rate: float = 0.0
    stem_channels: int = 64
    channels: tuple[int, ...] | None = None
    stem_width: int | None = None
    feature_channels: tuple[int, ...] | None = None
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)

    def __post_init__(self) -> None:
        if len(self.decoder_channels) != 5:
            raise ValueError(f"model.decoder_channels needs 5 entries (UNet++ depth 5), got {self.decoder_channels}")
        if self.encoder == "cnn" and (self.embed_dim or self.depths or self.num_heads):
            raise ValueError("model.embed_dim/depths/num_heads apply to encoder=swin only; set them to null")
        if self.encoder == "swin" and (self.channels or self.stem_width or self.feature_channels):
            raise ValueError("model.channels/stem_width/feature_channels apply to encoder=cnn only; set them to null")


@dataclass
class OptimConfig:
    """Coarse-stage optimiser (Adam). ``steps: 0`` = ``epochs`` passes over the training set."""

    lr: float = 2e-4
    epochs: int = 300
    steps: int = 0
    batch_size: int = 16
    weight_decay: float = 0.0
    grad_clip: float = 0.0
    val_every: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"optim.batch_size must be >= 1 and optim.lr > 0, got {self.batch_size}, {self.lr}")


@dataclass
class CoarseConfig:
    """Coarse stage. ``size``: network input (images INTER_AREA, targets nearest). ``sigma``: heatmap sigma as a
    fraction of the original image height. ``curriculum``: schedule fractions where the heatmap, then the
    segmentation loss join the distance loss (JOINED: epochs 50 and 100 of 300). ``heatmap``/``distance``: branch
    on or off (ablations). ``encoder_init``: none, a pre-training checkpoint, or ``latest:<experiment>``.
    ``encoder_lr_mult`` scales the encoder's learning rate. [ours] ``heatmap_pos_weight`` > 0 multiplies the
    squared error on pixels where the heatmap target is > 0 by (1 + weight) (0 = JOINED's plain MSE);
    ``decode_floor`` > 0 zeroes heatmap values below that fraction of the peak before the marginal argmax (0 =
    JOINED's raw marginal argmax). [ours] ``fovea_fov_threshold`` > 0 (0-255) and ``fovea_disc_exclusion`` > 0 (in
    disc diameters) restrict the fovea map to the field of view and off the predicted disc before decoding
    (``targets.constrain_fovea_map``; 0 = off, JOINED)."""

    size: int = 256
    sigma: float = 0.05
    curriculum: tuple[float, float] = (1 / 6, 1 / 3)
    heatmap: bool = True
    distance: bool = True
    encoder_init: str = "none"
    encoder_lr_mult: float = 1.0
    heatmap_pos_weight: float = 0.0
    decode_floor: float = 0.0
    fovea_fov_threshold: int = 0
    fovea_disc_exclusion: float = 0.0

    def __post_init__(self) -> None:
        lo, hi = self.curriculum
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"coarse.curriculum must satisfy 0 <= a <= b <= 1, got {self.curriculum}")
        if self.heatmap_pos_weight < 0 or not 0.0 <= self.decode_floor < 1.0:
            raise ValueError(f"coarse.heatmap_pos_weight must be >= 0 and coarse.decode_floor in [0, 1), got "
                             f"{self.heatmap_pos_weight}, {self.decode_floor}")
        if not 0 <= self.fovea_fov_threshold < 255 or self.fovea_disc_exclusion < 0:
            raise ValueError(f"coarse.fovea_fov_threshold must be in [0, 255) and coarse.fovea_disc_exclusion >= 0 "
                             f"(0 = off), got {self.fovea_fov_threshold}, {self.fovea_disc_exclusion}")
        if self.size % 32:
            raise ValueError(f"coarse.size must be a multiple of 32 (encoder stride), got {self.size}")


@dataclass
class PretrainConfig:
    """Encoder pre-training (``pretrain.py``): ``kind: vessel`` = vessel segmentation on ``datasets`` under
    ``root`` (DRIVE test held out for the vessel Dice), ``denoise`` = same-budget denoising of the fundus images
    (a generic prior of equal cost). Encoder + one UNet++ decoder + 1-channel head, whole images at ``size``.
    [ours] ``pos_weight``: weight of the vessel pixels in the BCE term (1 = plain Dice + BCE)."""

    kind: Literal["vessel", "denoise"] = "vessel"
    root: str = ""
    datasets: tuple[str, ...] = ("drive", "chase_db1", "hrf")
    size: int = 256
    lr: float = 2e-4
    epochs: int = 100
    steps: int = 0
    batch_size: int = 16
    flip_p: float = 0.5
    pos_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.pos_weight <= 0:
            raise ValueError(f"pretrain.pos_weight={self.pos_weight}: must be > 0 (1 = plain BCE)")


@dataclass
class FineConfig:
    """Fine disc/cup stage: U-Net on timm ``encoder`` (4 levels) over ``roi`` x ``roi`` crops at original size,
    input RGB + coarse OC, OD (``use_coarse``; RGB only otherwise). ``ref_height`` > 0 scales the ROI by image
    height / ref_height (0 = fixed size, as in JOINED). [ours] ``residual`` g > 0: the U-Net predicts a correction
    of the coarse mask, logits = head + g (2 coarse - 1) with a zero-initialised head, so that the untrained fine
    stage returns its coarse input (0 = JOINED: the coarse channels are inputs only). ``val_every`` > 0: every
    that many epochs (and at the end) the fine pipeline is scored on the validation split (mean of disc and cup
    Dice) and the best weights are kept, as JOINED's fine stage saves on its best validation Dice; 0 = the last
    weights."""

    enabled: bool = True
    encoder: str = "tf_efficientnet_b4"
    pretrained: str = "none"
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32)
    roi: int = 448
    ref_height: int = 0
    use_coarse: bool = True
    residual: float = 0.0
    lr: float = 4e-4
    epochs: int = 500
    steps: int = 0
    batch_size: int = 16
    flip_p: float = 0.8
    val_every: int = 0

    def __post_init__(self) -> None:
        if self.val_every < 0:
            raise ValueError(f"fine.val_every must be >= 0 (epochs; 0 = keep the last weights), got {self.val_every}")
        if self.roi % 16:
            raise ValueError(f"fine.roi must be a multiple of 16 (U-Net depth 4), got {self.roi}")
        if self.residual < 0 or (self.residual and not self.use_coarse):
            raise ValueError(f"fine.residual={self.residual} needs fine.use_coarse=true and a value >= 0 "
                             f"(set fine.residual=0 for the RGB-only fine stage)")


@dataclass
class FoveaConfig:
    """Fovea refinement: a U-Net on ``roi`` px crops around the coarse fovea (RGB + coarse fovea heatmap) predicting
    a heatmap of sigma = ``sigma`` x roi; training crops are jittered up to ``max_offset`` x roi off the truth; the
    refined point replaces the coarse one when its peak >= ``min_peak``. [ours] ``residual`` g > 0: the U-Net predicts
    a correction of ``g (2 heatmap - 1)`` in logit space from a zero-initialised head, so the untrained stage
    returns (a monotone map of) the coarse heatmap; 0 = a plain U-Net."""

    enabled: bool = True
    encoder: str = "efficientnet_b0"
    decoder_channels: tuple[int, ...] = (128, 64, 32, 16)
    roi: int = 128
    sigma: float = 0.1
    max_offset: float = 0.25
    min_peak: float = 0.3
    lr: float = 4e-4
    epochs: int = 300
    steps: int = 0
    batch_size: int = 16
    residual: float = 0.0

    def __post_init__(self) -> None:
        if self.residual < 0:
            raise ValueError(f"fovea.residual must be >= 0 (0 = plain U-Net), got {self.residual}")
        if self.roi % 16:
            raise ValueError(f"fovea.roi must be a multiple of 16 (U-Net depth 4), got {self.roi}")


@dataclass
class EvalConfig:
    """Evaluation: ``split`` scored after training; ``batch_size`` of inference."""

    split: Literal["val", "test"] = "test"
    batch_size: int = 8


@dataclass
class Config:
    experiment: str = "default"
    seed: int = 20
    runs_root: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    coarse: CoarseConfig = field(default_factory=CoarseConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    fine: FineConfig = field(default_factory=FineConfig)
    fovea: FoveaConfig = field(default_factory=FoveaConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
