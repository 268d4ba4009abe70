"""Networks of JOINEDTrans: the coarse multi-task network, the fine disc/cup U-Net, the fovea U-Net, the
pre-training network, and the container that holds a trained pipeline.

Coarse network (JOINED ``Coarse/models.py::UNetPP_doublesmp``): one shared encoder, three UNet++ decoders of the
``segmentation_models_pytorch`` ``UnetPlusPlusDecoder`` topology (decoder channels 256-128-64-32-16, BatchNorm, no
attention), each followed by a 3x3 convolution and a sigmoid: segmentation [OC, OD (solid disc), BG], heatmaps
[fovea, OD centre] and a distance map. JOINEDTrans replaces the CNN encoder by a transformer pre-trained on vessel
segmentation (abstract); ours is a timm Swin in ``features_only`` mode (strides 4-32, NHWC -> NCHW) plus a
2-convolution stem that supplies the stride-2 skip, so that Swin and CNN encoders share one interface and one
decoder. Fine network (JOINED ``Fine/utils.py::build_model``): a U-Net, encoder depth 4, decoder 256-128-64-32,
input RGB + coarse OC, OD.

Decoders are written here (segmentation-models-pytorch is not a dependency) with smp's block structure so that
parameter counts match: ``DecoderBlock`` = nearest x2 upsampling, concatenation with the skip(s), two
3x3 conv-BN-ReLU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from common.weights import create_timm_model
from joinedtrans.settings import FineConfig, FoveaConfig, ModelConfig

__all__ = ["ConvBNReLU", "DecoderBlock", "UnetPlusPlusDecoder", "UnetDecoder", "SwinEncoder", "CNNEncoder",
           "CoarseNet", "UNet", "PretrainNet", "JoinedTrans", "build_encoder", "build_model", "build_fine_model",
           "build_fovea_model", "build_pretrain_model", "count_parameters", "ENCODER_PREFIX"]

ENCODER_PREFIX = "encoder."


class ConvBNReLU(nn.Sequential):
    """3x3 convolution (no bias) + BatchNorm + ReLU (smp ``Conv2dReLU`` with batch norm)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__(nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class DecoderBlock(nn.Module):
    """Upsample x2 (nearest), concatenate ``skip`` (may be None), conv-BN-ReLU twice. ``(B, in, h, w) ->
    (B, out, 2h, 2w)``."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = ConvBNReLU(in_channels + skip_channels, out_channels)
        self.conv2 = ConvBNReLU(out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class UnetPlusPlusDecoder(nn.Module):
    """Nested dense-skip decoder (UNet++, Zhou et al. 2018), smp's ``UnetPlusPlusDecoder`` topology.

    ``encoder_channels``: channels of the 5 encoder features at strides 2, 4, 8, 16, 32. ``forward(features)``
    takes that list and returns ``(B, decoder_channels[-1], H, W)`` at stride 1 (the last block has no skip).
    Node ``x_{d}_{l}`` follows smp's naming, so a state dict maps key by key.
    """

    def __init__(self, encoder_channels: Sequence[int], decoder_channels: Sequence[int]):
        super().__init__()
        if len(encoder_channels) != len(decoder_channels):
            raise ValueError(f"UNet++ needs one decoder width per encoder feature, got {len(encoder_channels)} "
                             f"features and {len(decoder_channels)} widths")
        enc = list(encoder_channels)[::-1]
        self.in_channels = [enc[0], *decoder_channels[:-1]]
        self.skip_channels = [*enc[1:], 0]
        self.out_channels = list(decoder_channels)
        blocks: dict[str, DecoderBlock] = {}
        for layer in range(len(self.in_channels) - 1):
            for depth in range(layer + 1):
                if depth == 0:
                    in_ch = self.in_channels[layer]
                    skip_ch = self.skip_channels[layer] * (layer + 1)
                    out_ch = self.out_channels[layer]
                else:
                    out_ch = self.skip_channels[layer]
                    skip_ch = self.skip_channels[layer] * (layer + 1 - depth)
                    in_ch = self.skip_channels[layer - 1]
                blocks[f"x_{depth}_{layer}"] = DecoderBlock(in_ch, skip_ch, out_ch)
        last = len(self.in_channels) - 1
        blocks[f"x_0_{last}"] = DecoderBlock(self.in_channels[-1], 0, self.out_channels[-1])
        self.blocks = nn.ModuleDict(blocks)
        self.depth = last

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        feats = list(features)[::-1]
        dense: dict[str, torch.Tensor] = {}
        for layer in range(self.depth):
            for depth in range(self.depth - layer):
                if layer == 0:
                    dense[f"x_{depth}_{depth}"] = self.blocks[f"x_{depth}_{depth}"](feats[depth], feats[depth + 1])
                else:
                    node = depth + layer
                    cat = [dense[f"x_{i}_{node}"] for i in range(depth + 1, node + 1)] + [feats[node + 1]]
                    dense[f"x_{depth}_{node}"] = self.blocks[f"x_{depth}_{node}"](dense[f"x_{depth}_{node - 1}"],
                                                                                  torch.cat(cat, dim=1))
        return self.blocks[f"x_0_{self.depth}"](dense[f"x_0_{self.depth - 1}"])


class UnetDecoder(nn.Module):
    """Plain U-Net decoder (smp ``UnetDecoder``, no centre block): features at strides 2..2^n, one block per
    feature; the last block upsamples to stride 1 without a skip. ``(B, decoder_channels[-1], H, W)``."""

    def __init__(self, encoder_channels: Sequence[int], decoder_channels: Sequence[int]):
        super().__init__()
        if len(encoder_channels) != len(decoder_channels):
            raise ValueError(f"U-Net needs one decoder width per encoder feature, got {len(encoder_channels)} "
                             f"features and {len(decoder_channels)} widths")
        enc = list(encoder_channels)[::-1]
        ins = [enc[0], *decoder_channels[:-1]]
        skips = [*enc[1:], 0]
        self.blocks = nn.ModuleList(DecoderBlock(i, s, o) for i, s, o in zip(ins, skips, decoder_channels))

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        feats = list(features)[::-1]
        x, skips = feats[0], feats[1:]
        for i, block in enumerate(self.blocks):
            x = block(x, skips[i] if i < len(skips) else None)
        return x


class SwinEncoder(nn.Module):
    """timm Swin (``features_only``, 4 stages at strides 4-32) + a 2-conv stem for the stride-2 skip.

    ``(B, C, S, S) -> [stem (B, stem, S/2, S/2), stage1 (B, c1, S/4, S/4), ..., stage4 (B, c4, S/32, S/32)]``.
    """

    def __init__(self, swin: nn.Module, in_chans: int, stem_channels: int):
        super().__init__()
        self.stem = nn.Sequential(ConvBNReLU(in_chans, stem_channels, stride=2), ConvBNReLU(stem_channels,
                                                                                           stem_channels))
        self.swin = swin
        self.out_channels = (stem_channels, *swin.feature_info.channels())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [f.permute(0, 3, 1, 2).contiguous() for f in self.swin(x)]  # timm Swin features are NHWC
        return [self.stem(x), *feats]


class CNNEncoder(nn.Module):
    """timm CNN (``features_only``, 5 features at strides 2-32; JOINED's smp ``timm-resnest50d``).

    ``feature_channels`` [ours, CPU sizing]: a 1x1 conv + BN + ReLU per feature projects the CNN's widths (a
    bottleneck ResNeSt's stage outputs are 4x its ``channels``) to these, so that the three UNet++ decoders, whose
    dense nodes take the encoder widths, cost what they cost on the Swin encoder; None = the CNN's own (JOINED)."""

    def __init__(self, cnn: nn.Module, feature_channels: Sequence[int] | None = None):
        super().__init__()
        self.cnn = cnn
        native = tuple(cnn.feature_info.channels())
        self.project = None
        if feature_channels is not None:
            if len(feature_channels) != len(native):
                raise ValueError(f"model.feature_channels needs one width per CNN feature ({len(native)}), got "
                                 f"{tuple(feature_channels)}")
            self.project = nn.ModuleList(nn.Sequential(nn.Conv2d(a, b, 1, bias=False), nn.BatchNorm2d(b),
                                                       nn.ReLU(inplace=True)) for a, b in zip(native, feature_channels))
        self.out_channels = tuple(feature_channels) if feature_channels is not None else native

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = list(self.cnn(x))
        if self.project is None:
            return feats
        return [p(f) for p, f in zip(self.project, feats)]


def build_encoder(cfg: ModelConfig, img_size: int, in_chans: int = 3) -> SwinEncoder | CNNEncoder:
    """The coarse encoder of ``cfg`` for ``img_size`` px inputs (ImageNet weights via ``cfg.pretrained``)."""
    if cfg.encoder == "swin":
        kwargs: dict = {"img_size": img_size, "window_size": cfg.window_size, "drop_path_rate": cfg.drop_path_rate}
        for key in ("embed_dim", "depths", "num_heads"):
            if getattr(cfg, key) is not None:
                kwargs[key] = getattr(cfg, key)
        swin = create_timm_model(cfg.name, cfg.pretrained, features_only=True, in_chans=in_chans, **kwargs)
        return SwinEncoder(swin, in_chans, cfg.stem_channels)
    kwargs = {}
    if cfg.channels is not None:
        kwargs["channels"] = tuple(cfg.channels)
    if cfg.stem_width is not None:
        kwargs["stem_width"] = cfg.stem_width
    cnn = create_timm_model(cfg.name, cfg.pretrained, features_only=True, in_chans=in_chans,
                            out_indices=(0, 1, 2, 3, 4), **kwargs)
    return CNNEncoder(cnn, cfg.feature_channels)


def _head(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)  # smp SegmentationHead, kernel 3


class CoarseNet(nn.Module):
    """Joint segmentation + detection network of the coarse stage.

    ``forward((B, 3, S, S))`` -> ``{"seg": (B, 3, S, S), "heatmap": (B, 2, S, S), "distance": (B, 1, S, S)}``,
    all sigmoid probabilities; a branch switched off (``heatmap=False``/``distance=False``) is absent.
    """

    def __init__(self, encoder: SwinEncoder | CNNEncoder, decoder_channels: Sequence[int], heatmap: bool = True,
                 distance: bool = True):
        super().__init__()
        self.encoder = encoder
        chans, last = encoder.out_channels, decoder_channels[-1]
        self.seg_decoder = UnetPlusPlusDecoder(chans, decoder_channels)
        self.seg_head = _head(last, 3)
        self.heatmap_decoder = UnetPlusPlusDecoder(chans, decoder_channels) if heatmap else None
        self.heatmap_head = _head(last, 2) if heatmap else None
        self.distance_decoder = UnetPlusPlusDecoder(chans, decoder_channels) if distance else None
        self.distance_head = _head(last, 1) if distance else None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.encoder(x)
        out = {"seg": torch.sigmoid(self.seg_head(self.seg_decoder(feats)))}
        if self.heatmap_decoder is not None:
            out["heatmap"] = torch.sigmoid(self.heatmap_head(self.heatmap_decoder(feats)))
        if self.distance_decoder is not None:
            out["distance"] = torch.sigmoid(self.distance_head(self.distance_decoder(feats)))
        return out


class UNet(nn.Module):
    """U-Net on a timm encoder of depth 4 (strides 2-16) with a 3x3 head + sigmoid. ``(B, in, R, R) ->
    (B, out, R, R)``. The fine disc/cup network (in 5 = RGB + coarse OC, OD; out 3 = OC, OD, BG) and the fovea
    network (in 4 = RGB + coarse fovea heatmap; out 1)."""

    def __init__(self, encoder_name: str, in_chans: int, out_channels: int, decoder_channels: Sequence[int],
                 pretrained: str = "none", config_key: str = "fine.pretrained", prior_gain: float = 0.0):
        super().__init__()
        if len(decoder_channels) != 4:
            raise ValueError(f"the fine U-Net has depth 4; decoder_channels needs 4 entries, got {decoder_channels}")
        if prior_gain and (in_chans, out_channels) not in ((5, 3), (4, 1)):
            raise ValueError(f"{config_key.split('.')[0]}.residual needs the coarse channels (fine: in 5 = RGB + OC, "
                             f"OD, out 3 = OC, OD, BG; fovea: in 4 = RGB + heatmap, out 1); got in {in_chans}, out "
                             f"{out_channels}: set it to 0 (fine: with fine.use_coarse=false)")
        self.encoder = create_timm_model(encoder_name, pretrained, config_key=config_key, features_only=True,
                                         in_chans=in_chans, out_indices=(0, 1, 2, 3))
        self.in_chans = in_chans
        self.prior_gain = float(prior_gain)
        self.decoder = UnetDecoder(self.encoder.feature_info.channels(), decoder_channels)
        self.head = _head(decoder_channels[-1], out_channels)
        if self.prior_gain:  # [ours] residual refinement: at initialisation the output is the coarse input
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.in_chans:
            raise ValueError(f"the network expects {self.in_chans} input channels, got {x.shape[1]}")
        logits = self.head(self.decoder(self.encoder(x)))
        if self.prior_gain:
            if self.in_chans == 5:
                od = x[:, 4:5]
                prior = torch.cat([x[:, 3:4], od, 1 - od], 1)  # coarse [OC, OD, BG] as 0/1
            else:
                prior = x[:, 3:4]  # coarse fovea heatmap in [0, 1]
            logits = logits + self.prior_gain * (2 * prior - 1)
        return torch.sigmoid(logits)


class PretrainNet(nn.Module):
    """Encoder pre-training network: the coarse encoder + one UNet++ decoder + a 3x3 head with ``out_channels``
    (1 = vessel probability with a sigmoid; 3 = denoised image, linear). Only ``encoder`` is transferred."""

    def __init__(self, encoder: SwinEncoder | CNNEncoder, decoder_channels: Sequence[int], out_channels: int,
                 sigmoid: bool):
        super().__init__()
        self.encoder = encoder
        self.decoder = UnetPlusPlusDecoder(encoder.out_channels, decoder_channels)
        self.head = _head(decoder_channels[-1], out_channels)
        self.sigmoid = sigmoid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(self.decoder(self.encoder(x)))
        return torch.sigmoid(y) if self.sigmoid else y


class JoinedTrans(nn.Module):
    """A trained pipeline: ``coarse`` (CoarseNet) and optional ``fine`` / ``fovea`` (UNet) in one state dict."""

    def __init__(self, coarse: CoarseNet, fine: UNet | None = None, fovea: UNet | None = None):
        super().__init__()
        self.coarse, self.fine, self.fovea = coarse, fine, fovea


def build_model(cfg: ModelConfig, size: int, heatmap: bool = True, distance: bool = True) -> CoarseNet:
    """The coarse network of ``cfg`` for ``size`` px inputs."""
    return CoarseNet(build_encoder(cfg, size), cfg.decoder_channels, heatmap=heatmap, distance=distance)


def build_fine_model(cfg: FineConfig) -> UNet:
    """Fine disc/cup U-Net: 5 input channels with ``use_coarse`` (RGB + coarse OC, OD), else 3."""
    return UNet(cfg.encoder, 5 if cfg.use_coarse else 3, 3, cfg.decoder_channels, cfg.pretrained, "fine.pretrained",
                prior_gain=cfg.residual)


def build_fovea_model(cfg: FoveaConfig) -> UNet:
    """Fovea refinement U-Net: RGB + coarse fovea heatmap -> 1 heatmap channel (``residual`` g > 0 [ours]: a
    correction of ``g (2 heatmap - 1)`` in logit space from a zero-initialised head)."""
    return UNet(cfg.encoder, 4, 1, cfg.decoder_channels, "none", "fovea.pretrained", prior_gain=cfg.residual)


def build_pretrain_model(cfg: ModelConfig, size: int, kind: str) -> PretrainNet:
    """``kind: vessel`` -> 1-channel sigmoid head; ``denoise`` -> 3-channel linear head."""
    vessel = kind == "vessel"
    return PretrainNet(build_encoder(cfg, size), cfg.decoder_channels, 1 if vessel else 3, sigmoid=vessel)


def count_parameters(module: nn.Module | None, trainable_only: bool = False) -> int:
    if module is None:
        return 0
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
