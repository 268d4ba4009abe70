"""Networks of FedLPPA (paper Fig. 2; official ``code_v4/networks/unet.py``): the PyMIC/WSL4MIS 2D UNet and
``UNetUniV5``, the UNet with the tri-prompt dual-attention fusion (TDF) and the dual decoders (PDLA).

``UNetUniV5`` (one instance per site; ``site`` and ``sup_type`` say which):

- encoder: ConvBlock/DownBlock UNet encoder, bottleneck ``(B, c4, H/16, W/16)``;
- prompts: learnable universal prompt ``p_U`` ``(1, h, w)`` (``uni_prompt``), learnable data-distribution prompts
  ``p_D`` ``(K, h, w)`` (``distribution_prompts``, one row per site, every site holds all rows) and the constant
  annotation-sparsity prompt ``p_S`` ``(3, h, w)``, one-hot over (scribble, block, keypoint);
- fusion, for EVERY site k: ``concat(bottleneck, p_D[k], p_U, p_S)`` -> shared ``fuse`` convs -> shared attention
  (SAB + CAB) -> ``F_k`` ``(B, c2, h, w)``; only the own ``F_site`` joins the bottleneck (``c4 + c2`` channels);
  all ``F_k`` are returned for the prompt-divergence loss;
- main decoder whose last feature map is multiplied channel-wise by ``MLP_BN_GAP(bottleneck)`` (``(B, c0, 1, 1)``);
  plain auxiliary decoder on the same bottleneck (pseudo labels of the dual-decoder strategy).

The up-sampling is the released one: ``Decoder`` never forwards the ``bilinear: False`` entry of the parameter dict
to ``UpBlock``, whose default ``bilinear=True`` applies (1x1 conv + bilinear up-sampling, align_corners=True). Only
this variant gives the released parameter counts (2,897,430 for FAZ), so it is what the paper's model is.
Module and parameter names follow the official module, so its checkpoints load with ``--init-weights``.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import torch
import torch.nn as nn

__all__ = ["ModelConfig", "LABEL_TYPES", "SUP_TYPES", "label_prompt_vector", "ConvBlock", "DownBlock", "UpBlock",
           "Encoder", "Decoder", "DecoderMLP", "MLPBNGAP", "SpatialAttentionBlock", "ChannelAttentionBlock",
           "AffinityAttention", "MultiHeadMapAttention", "UNet", "UNetUniV5", "UniOutput", "build_model",
           "count_parameters", "ala_parameter_names", "is_bn_key", "bn_buffer_keys", "ALA_PATTERN_UNIV5",
           "ALA_PATTERN_UNET"]

LABEL_TYPES = ("scribble", "block", "keypoint")
SUP_TYPES = ("scribble", "scribble_noisy", "keypoint", "block", "box", "mask")
# Parameters personalised by the learnable aggregation (official ``set_weights``: names containing these parts).
ALA_PATTERN_UNIV5 = r"out_conv|up1|up2|up3|up4|mlp"
ALA_PATTERN_UNET = r"decoder\."


@dataclass
class ModelConfig:
    """``arch``: ``auto`` (by method), ``unet_univ5`` (FedLPPA) or ``unet`` (baselines). ``channels``/``dropout``:
    encoder widths and dropout per level (official [16, 32, 64, 128, 256], [0.05, 0.1, 0.2, 0.3, 0.5]).
    ``prompt``: ``universal`` (learnable p_D) or ``onehot`` (fixed one-hot p_D). ``label_prompt``: use p_S.
    ``prompts: false`` is the no-prompt ablation (bottleneck-only fusion, no L_uni, plain-mean aux decoder).
    ``attention``: ``dual`` (SAB + CAB, paper), ``sab``, ``cab`` or ``multi``."""

    arch: Literal["auto", "unet_univ5", "unet"] = "auto"
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256])
    dropout: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.2, 0.3, 0.5])
    prompt: Literal["universal", "onehot"] = "universal"
    label_prompt: bool = True
    prompts: bool = True
    attention: Literal["dual", "sab", "cab", "multi"] = "dual"
    multi_heads: int = 8
    pretrained: str = "none"

    def __post_init__(self) -> None:
        if len(self.channels) != 5 or len(self.dropout) != 5:
            raise ValueError(f"channels and dropout need 5 entries (one per UNet level), got {self.channels} and "
                             f"{self.dropout}")
        if self.channels[2] % 8:
            raise ValueError(f"channels[2] = {self.channels[2]} must be divisible by 8 (SAB query/key width c/8)")
        if self.pretrained != "none":
            raise ValueError("model.pretrained must be `none`: FedLPPA trains from random init (official); load "
                             "weights of a previous run with --init-weights PATH")


def label_prompt_vector(sup_type: str) -> torch.Tensor:
    """One-hot p_S over (scribble, block, keypoint): box -> block, scribble_noisy -> scribble, mask -> zeros."""
    if sup_type not in SUP_TYPES:
        raise ValueError(f"unknown supervision type {sup_type!r}; expected one of {list(SUP_TYPES)}")
    mapped = {"box": "block", "scribble_noisy": "scribble"}.get(sup_type, sup_type)
    return torch.tensor([1.0 if t == mapped else 0.0 for t in LABEL_TYPES])


# --------------------------------------------------------------------------------------------- UNet blocks
class ConvBlock(nn.Module):
    """Conv3x3 -> BN -> LeakyReLU -> Dropout -> Conv3x3 -> BN -> LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int, dropout_p: float):
        super().__init__()
        self.conv_conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1), nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(), nn.Dropout(dropout_p),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1), nn.BatchNorm2d(out_channels),
            nn.LeakyReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_conv(x)


class DownBlock(nn.Module):
    """MaxPool2 -> ConvBlock."""

    def __init__(self, in_channels: int, out_channels: int, dropout_p: float):
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), ConvBlock(in_channels, out_channels, dropout_p))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool_conv(x)


class UpBlock(nn.Module):
    """1x1 conv (in1 -> in2) -> bilinear x2 (align_corners) -> concat(skip, up) -> ConvBlock(2 in2 -> out)."""

    def __init__(self, in_channels1: int, in_channels2: int, out_channels: int, dropout_p: float = 0.0):
        super().__init__()
        self.conv1x1 = nn.Conv2d(in_channels1, in_channels2, kernel_size=1)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.conv = ConvBlock(in_channels2 * 2, out_channels, dropout_p)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([x2, self.up(self.conv1x1(x1))], dim=1))


class Encoder(nn.Module):
    """Five levels; returns ``[x0 (c0, H), x1 (c1, H/2), x2, x3, x4 (c4, H/16)]``."""

    def __init__(self, in_channels: int, channels: list[int], dropout: list[float]):
        super().__init__()
        self.in_conv = ConvBlock(in_channels, channels[0], dropout[0])
        self.down1 = DownBlock(channels[0], channels[1], dropout[1])
        self.down2 = DownBlock(channels[1], channels[2], dropout[2])
        self.down3 = DownBlock(channels[2], channels[3], dropout[3])
        self.down4 = DownBlock(channels[3], channels[4], dropout[4])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x0 = self.in_conv(x)
        x1 = self.down1(x0)
        x2 = self.down2(x1)
        x3 = self.down3(x2)
        return [x0, x1, x2, x3, self.down4(x3)]


class Decoder(nn.Module):
    """Plain UNet decoder (no dropout); ``channels[4]`` is the bottleneck width it receives."""

    def __init__(self, channels: list[int], num_classes: int):
        super().__init__()
        self.up1 = UpBlock(channels[4], channels[3], channels[3])
        self.up2 = UpBlock(channels[3], channels[2], channels[2])
        self.up3 = UpBlock(channels[2], channels[1], channels[1])
        self.up4 = UpBlock(channels[1], channels[0], channels[0])
        self.out_conv = nn.Conv2d(channels[0], num_classes, kernel_size=3, padding=1)

    def features(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = self.up1(feats[4], feats[3])
        x = self.up2(x, feats[2])
        x = self.up3(x, feats[1])
        return self.up4(x, feats[0])

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.out_conv(self.features(feats))


class DecoderMLP(Decoder):
    """Main (task) decoder: the last feature map ``(B, c0, H, W)`` is multiplied by ``scale`` ``(B, c0, 1, 1)``."""

    def forward(self, feats: list[torch.Tensor], scale: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.out_conv(self.features(feats) * scale)


class MLPBNGAP(nn.Module):
    """Per-pixel MLP ``in -> hidden... -> out`` (Linear + BN + LeakyReLU(0.01) per hidden layer), then global
    average pooling: ``(B, in, h, w)`` -> ``(B, out, 1, 1)`` (official ``MLP_BN_GAP``)."""

    def __init__(self, in_features: int, out_features: int, hidden: list[int]):
        super().__init__()
        sizes = [in_features, *hidden]
        self.hidden_linear_layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.hidden_bn_layers = nn.ModuleList(nn.BatchNorm2d(b) for b in hidden)
        self.hidden_leakyrelu_layers = nn.ModuleList(nn.LeakyReLU(0.01) for _ in hidden)
        self.fc_out = nn.Sequential(nn.Linear(sizes[-1], out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for linear, bn, act in zip(self.hidden_linear_layers, self.hidden_bn_layers, self.hidden_leakyrelu_layers):
            x = act(bn(linear(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)))
        x = self.fc_out(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return x.mean(dim=(2, 3), keepdim=True)


# --------------------------------------------------------------------------------------------- attention
class SpatialAttentionBlock(nn.Module):
    """SAB: q = Conv(1x3)+BN+ReLU, k = Conv(3x1)+BN+ReLU (c -> c/8), v = Conv1x1; A = softmax(q^T k) over HW x HW;
    ``out = gamma * (v A^T) + x`` with gamma initialised to 0."""

    def __init__(self, channels: int):
        super().__init__()
        self.query = nn.Sequential(nn.Conv2d(channels, channels // 8, (1, 3), padding=(0, 1)),
                                   nn.BatchNorm2d(channels // 8), nn.ReLU(inplace=True))
        self.key = nn.Sequential(nn.Conv2d(channels, channels // 8, (3, 1), padding=(1, 0)),
                                 nn.BatchNorm2d(channels // 8), nn.ReLU(inplace=True))
        self.value = nn.Conv2d(channels, channels, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.query(x).view(b, -1, h * w).permute(0, 2, 1)
        k = self.key(x).view(b, -1, h * w)
        affinity = torch.softmax(torch.bmm(q, k), dim=-1)
        v = self.value(x).view(b, -1, h * w)
        return self.gamma * torch.bmm(v, affinity.permute(0, 2, 1)).view(b, c, h, w) + x


class ChannelAttentionBlock(nn.Module):
    """CAB: A = X X^T (c x c), A' = softmax(max_row(A) - A); ``out = gamma * (A' X) + x``, gamma initialised to 0."""

    def __init__(self, channels: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        flat = x.view(b, c, -1)
        affinity = torch.bmm(flat, flat.permute(0, 2, 1))
        affinity = torch.softmax(affinity.max(dim=-1, keepdim=True)[0].expand_as(affinity) - affinity, dim=-1)
        return self.gamma * torch.bmm(affinity, flat).view(b, c, h, w) + x


class AffinityAttention(nn.Module):
    """Dual attention SAB(x) + CAB(x); both residual with gamma = 0 at init, so it returns exactly 2x then."""

    def __init__(self, channels: int):
        super().__init__()
        self.sab = SpatialAttentionBlock(channels)
        self.cab = ChannelAttentionBlock(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sab(x) + self.cab(x)


class MultiHeadMapAttention(nn.Module):
    """``multi`` option (ours): residual multi-head self-attention over the ``h*w`` positions of a ``(B, c, h, w)``
    map (embedding = channels). The released option attends over one ``c*h*w`` token, which needs ~4 (c h w)^2
    weights (17 G at 256 px) and cannot be built."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention=multi needs channels[2] ({channels}) divisible by multi_heads ({heads})")
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        out, _ = self.attn(tokens, tokens, tokens, need_weights=False)
        return (tokens + out).transpose(1, 2).reshape(b, c, h, w)


def _attention(kind: str, channels: int, heads: int) -> nn.Module:
    if kind == "dual":
        return AffinityAttention(channels)
    if kind == "sab":
        return SpatialAttentionBlock(channels)
    if kind == "cab":
        return ChannelAttentionBlock(channels)
    return MultiHeadMapAttention(channels, heads)


# --------------------------------------------------------------------------------------------- networks
class UNet(nn.Module):
    """Plain UNet of the baselines: ``(B, in, H, W)`` -> logits ``(B, C, H, W)``."""

    def __init__(self, in_channels: int, num_classes: int, channels: list[int] | None = None,
                 dropout: list[float] | None = None):
        super().__init__()
        channels = list(channels or [16, 32, 64, 128, 256])
        self.encoder = Encoder(in_channels, channels, list(dropout or [0.05, 0.1, 0.2, 0.3, 0.5]))
        self.decoder = Decoder(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class UniOutput(NamedTuple):
    """``logits`` (B, C, H, W) of the main decoder, ``aux_logits`` of the auxiliary decoder, ``fused`` = the K
    fused prompt features ``F_k`` (B, c2, h, w) (one without prompts)."""

    logits: torch.Tensor
    aux_logits: torch.Tensor
    fused: list[torch.Tensor]


class UNetUniV5(nn.Module):
    """FedLPPA network for site ``site`` of ``num_sites`` with weak-label type ``sup_type`` (module docstring)."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int, num_sites: int, site: int = 0,
                 sup_type: str = "scribble", channels: list[int] | None = None, dropout: list[float] | None = None,
                 prompt: str = "universal", label_prompt: bool = True, prompts: bool = True,
                 attention: str = "dual", multi_heads: int = 8):
        super().__init__()
        channels = list(channels or [16, 32, 64, 128, 256])
        if image_size % 16:
            raise ValueError(f"image size {image_size} must be divisible by 16 (four 2x poolings)")
        if not 0 <= site < num_sites:
            raise ValueError(f"site {site} outside 0..{num_sites - 1}")
        h = image_size // 16
        self.num_sites, self.site, self.prompts, self.use_label_prompt = num_sites, site, prompts, label_prompt
        self.prompt_type = prompt
        if prompts:
            if prompt == "universal":
                self.distribution_prompts = nn.Parameter(torch.rand(num_sites, h, h))
            else:  # fixed one-hot rows
                self.distribution_prompts = nn.Parameter(torch.zeros(num_sites, h, h), requires_grad=False)
            self.uni_prompt = nn.Parameter(torch.rand(1, h, h))
        dec_channels = copy.deepcopy(channels)
        dec_channels[4] += channels[2]
        self.encoder = Encoder(in_channels, channels, list(dropout or [0.05, 0.1, 0.2, 0.3, 0.5]))
        self.decoder = DecoderMLP(dec_channels, num_classes)
        self.decoder_auxiliary = Decoder(dec_channels, num_classes)
        self.mlp = MLPBNGAP(dec_channels[4], channels[0], [channels[3], channels[2]])
        extra = (2 + (len(LABEL_TYPES) if label_prompt else 0)) if prompts else 0
        self.fuse = nn.Sequential(
            nn.Conv2d(channels[4] + extra, channels[3], 3, padding=1), nn.BatchNorm2d(channels[3]), nn.LeakyReLU(),
            nn.Dropout(0.5),
            nn.Conv2d(channels[3], channels[2], 3, padding=1), nn.BatchNorm2d(channels[2]), nn.LeakyReLU())
        self.attention = _attention(attention, channels[2], multi_heads)
        self.register_buffer("label_prompt", label_prompt_vector(sup_type), persistent=False)
        self.set_site(site, sup_type)

    def set_site(self, site: int, sup_type: str) -> None:
        """Select the own site (row of p_D whose F joins the bottleneck) and its p_S."""
        if not 0 <= site < self.num_sites:
            raise ValueError(f"site {site} outside 0..{self.num_sites - 1}")
        self.site, self.sup_type = site, sup_type
        self.label_prompt.copy_(label_prompt_vector(sup_type))
        if self.prompts and self.prompt_type == "onehot":
            with torch.no_grad():
                self.distribution_prompts.zero_()
                self.distribution_prompts[site] = 1.0

    def fused_features(self, bottleneck: torch.Tensor) -> list[torch.Tensor]:
        """``F_k`` for every site k (list of K ``(B, c2, h, w)``); a single entry without prompts."""
        if not self.prompts:
            return [self.attention(self.fuse(bottleneck))]
        b, _, h, w = bottleneck.shape
        parts = [self.uni_prompt.expand(b, 1, h, w)]
        if self.use_label_prompt:
            parts.append(self.label_prompt.view(1, -1, 1, 1).expand(b, -1, h, w).to(bottleneck.dtype))
        shared = torch.cat(parts, dim=1)
        out = []
        for k in range(self.num_sites):
            p_d = self.distribution_prompts[k].expand(b, 1, h, w)
            out.append(self.attention(self.fuse(torch.cat([bottleneck, p_d, shared], dim=1))))
        return out

    def forward(self, x: torch.Tensor) -> UniOutput:
        feats = self.encoder(x)
        fused = self.fused_features(feats[4])
        own = fused[self.site] if self.prompts else fused[0]
        feats = [*feats[:4], torch.cat([feats[4], own], dim=1)]
        logits = self.decoder(feats, self.mlp(feats[4]))
        return UniOutput(logits, self.decoder_auxiliary(feats), fused)


def build_model(cfg: ModelConfig, in_channels: int, num_classes: int, image_size: int, num_sites: int,
                site: int = 0, sup_type: str = "scribble", arch: str | None = None) -> nn.Module:
    """The network ``arch`` (default ``cfg.arch``; ``auto`` = UNetUniV5) for ``site`` (its p_D row and p_S)."""
    if (arch or cfg.arch) == "unet":
        return UNet(in_channels, num_classes, cfg.channels, cfg.dropout)
    return UNetUniV5(in_channels, num_classes, image_size, num_sites, site, sup_type, cfg.channels, cfg.dropout,
                     cfg.prompt, cfg.label_prompt, cfg.prompts, cfg.attention, cfg.multi_heads)


def count_parameters(model: nn.Module) -> int:
    """All parameters (the official count includes the fixed one-hot p_D of the ``onehot`` option)."""
    return sum(p.numel() for p in model.parameters())


def ala_parameter_names(model: nn.Module, pattern: str | None = None) -> list[str]:
    """Names of the parameters personalised by ALA (state-dict order); default pattern by architecture."""
    if pattern is None:
        pattern = ALA_PATTERN_UNIV5 if isinstance(model, UNetUniV5) else ALA_PATTERN_UNET
    rx = re.compile(pattern)
    return [name for name, _ in model.named_parameters() if rx.search(name)]


def is_bn_key(model: nn.Module, key: str) -> bool:
    """Whether a state-dict key belongs to a BatchNorm layer (FedBN keeps these local)."""
    module_name = key.rsplit(".", 1)[0]
    module = dict(model.named_modules()).get(module_name)
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


def bn_buffer_keys(model: nn.Module) -> list[str]:
    """State-dict keys of the BatchNorm running statistics (``running_mean``, ``running_var``,
    ``num_batches_tracked``): the buffers, not the learned affine parameters."""
    out = []
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            out += [f"{name}.{b}" for b, v in module.named_buffers(recurse=False) if v is not None]
    return out
