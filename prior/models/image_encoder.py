"""Image encoder of PRIOR (Cheng et al., ICCV 2023, Sec. 3.1; official ``codes/prior/encoders/image/resnet.py``).

A ResNet with a 1-channel conv1 gives the layer4 map ``(B, C, h, w)``; its tokens are the local image features and
a CLIP-style ``AttentionPool2d`` over the map gives the global feature. The projections into the joint space live
in :class:`prior.models.prior.PRIOR`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from common.weights import PretrainedWeightsError

__all__ = ["AttentionPool2d", "ImageEncoder", "feature_tokens", "tokens_to_map", "load_rgb_resnet_weights",
           "RESNET50_SOURCE"]

RESNET50_SOURCE = ("torchvision's ImageNet-1k V1 ResNet-50 weights, resnet50-0676ba61.pth "
                   "(torchvision.models.ResNet50_Weights.IMAGENET1K_V1)")


class AttentionPool2d(nn.Module):
    """CLIP's attention pool: the mean token attends over ``[mean; tokens]`` with a learned position embedding.

    ``x``: ``(B, C, h, w)`` -> ``(B, C)`` (``output_dim`` = C). Official initialisation N(0, 1) / sqrt(C).
    """

    def __init__(self, spatial_dim: int, embed_dim: int, num_heads: int):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(spatial_dim**2 + 1, embed_dim) / embed_dim**0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, embed_dim)
        self.num_heads = num_heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2).permute(2, 0, 1)  # (hw, B, C)
        x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)
        x = x + self.positional_embedding[:, None, :].to(x.dtype)
        out, _ = F.multi_head_attention_forward(
            query=x[:1], key=x, value=x, embed_dim_to_check=x.shape[-1], num_heads=self.num_heads,
            q_proj_weight=self.q_proj.weight, k_proj_weight=self.k_proj.weight, v_proj_weight=self.v_proj.weight,
            in_proj_weight=None, in_proj_bias=torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]),
            bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0, out_proj_weight=self.c_proj.weight,
            out_proj_bias=self.c_proj.bias, use_separate_proj_weight=True, training=self.training,
            need_weights=False)
        return out[0]


def feature_tokens(fmap: torch.Tensor, official_order: bool = False) -> torch.Tensor:
    """``(B, C, h, w)`` -> ``(B, h*w, C)``; token ``r*w + c`` is grid cell (r, c).

    ``official_order`` reproduces the released code's ``view(B, -1, C)`` on the NCHW tensor: token i is then the
    i-th contiguous C-float chunk of the C x h x w memory (it mixes channels and positions)."""
    b, c = fmap.shape[:2]
    if official_order:
        return fmap.reshape(b, -1, c)
    return fmap.flatten(2).transpose(1, 2)


def tokens_to_map(tokens: torch.Tensor, grid: tuple[int, int], official_order: bool = False) -> torch.Tensor:
    """Inverse of :func:`feature_tokens`: ``(B, h*w, D)`` -> ``(B, D, h, w)``."""
    b, _, d = tokens.shape
    if official_order:
        return tokens.reshape(b, d, *grid)
    return tokens.transpose(1, 2).reshape(b, d, *grid)


def _resnet50(output_stride: int) -> nn.Module:
    import torchvision

    net = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=[False, output_stride == 8,
                                                                                  output_stride <= 16])
    net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    net.fc = nn.Identity()
    return net


def _resnet_small(channels: Sequence[int], output_stride: int) -> nn.Module:
    from timm.models.resnet import BasicBlock, ResNet

    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes=0, in_chans=1, channels=tuple(channels),
                  stem_width=int(channels[0]), output_stride=output_stride, global_pool="")


class ImageEncoder(nn.Module):
    """ResNet trunk + attention pool. ``forward(x)`` with ``x`` ``(B, 1, S, S)`` returns ``(fmap, global)``:
    the layer4 map ``(B, C, S/stride, S/stride)`` and the pooled ``(B, C)``.

    ``arch``: ``resnet50`` (torchvision layout, official) or ``resnet_small`` (timm ResNet-18 layout with the given
    ``channels``, our CPU geometry)."""

    def __init__(self, arch: str = "resnet50", image_size: int = 224, output_stride: int = 32,
                 channels: Sequence[int] = (64, 128, 256, 512), pool_heads: int = 8):
        super().__init__()
        if image_size % output_stride:
            raise ValueError(f"image size {image_size} is not a multiple of the output stride {output_stride}")
        self.arch = arch
        if arch == "resnet50":
            self.trunk = _resnet50(output_stride)
            self.width = 2048
        elif arch == "resnet_small":
            self.trunk = _resnet_small(channels, output_stride)
            self.width = int(channels[-1])
        else:
            raise ValueError(f"model.image.arch must be resnet50 or resnet_small, got {arch!r}")
        self.grid = image_size // output_stride
        self.pool = AttentionPool2d(self.grid, self.width, pool_heads)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, S, S)`` -> layer4 output ``(B, C, h, w)``."""
        if self.arch == "resnet_small":
            return self.trunk.forward_features(x)
        t = self.trunk
        x = t.maxpool(t.relu(t.bn1(t.conv1(x))))
        return t.layer4(t.layer3(t.layer2(t.layer1(x))))

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Multi-scale maps for dense heads: stem (stride 2), layer1 (4), layer2 (8), layer3 (16), layer4."""
        t = self.trunk
        act = t.act1 if hasattr(t, "act1") else t.relu
        stem = act(t.bn1(t.conv1(x)))
        c1 = t.layer1(t.maxpool(stem))
        c2 = t.layer2(c1)
        c3 = t.layer3(c2)
        return [stem, c1, c2, c3, t.layer4(c3)]

    def pyramid_channels(self) -> list[int]:
        t = self.trunk
        widths = [t.bn1.num_features]
        for layer in (t.layer1, t.layer2, t.layer3, t.layer4):
            widths.append([m for m in layer.modules() if isinstance(m, nn.BatchNorm2d)][-1].num_features)
        return widths

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self.feature_map(x)
        if fmap.shape[-1] != self.grid or fmap.shape[-2] != self.grid:
            raise ValueError(f"image encoder built for a {self.grid}x{self.grid} grid got a {tuple(fmap.shape[-2:])} "
                             f"map: the input must be {self.grid} x output stride pixels square")
        return fmap, self.pool(fmap)


def load_rgb_resnet_weights(encoder: ImageEncoder, pretrained: str | Path) -> dict[str, list[str]] | None:
    """``model.image.pretrained``: ``none`` | ``hub`` (refused offline, names the file) | a path to an RGB ResNet
    state dict (torchvision layout for resnet50, timm layout for resnet_small). conv1's RGB kernel is summed over its
    3 input channels (official ``resnet50_224``); ``fc`` is dropped. Returns the key report."""
    spec = str(pretrained)
    if spec == "none":
        return None
    if spec == "hub":
        raise PretrainedWeightsError(
            f"model.image.pretrained=hub asks for {RESNET50_SOURCE}, but this machine cannot download it. Download "
            f"the file on a machine with network access and set model.image.pretrained=/path/to/resnet50-0676ba61.pth"
            f" (or none for random initialisation).")
    path = Path(spec).expanduser()
    if not path.is_file():
        raise PretrainedWeightsError(f"model.image.pretrained={spec}: file not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("model", state.get("state_dict", state))
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    if "conv1.weight" in state and state["conv1.weight"].shape[1] == 3:
        state["conv1.weight"] = state["conv1.weight"].sum(dim=1, keepdim=True)
    own = encoder.trunk.state_dict()
    shape_mismatch = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    result = encoder.trunk.load_state_dict({k: v for k, v in state.items() if k not in shape_mismatch}, strict=False)
    return {"missing": list(result.missing_keys), "unexpected": list(result.unexpected_keys),
            "shape_mismatch": shape_mismatch}
