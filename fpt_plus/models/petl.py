"""Baselines the FPT+ paper compares against (Sec. IV-B; official README table): full fine-tuning, linear probing,
prompt tuning (VPT-deep, Jia et al. 2022), Adapter (Houlsby et al. 2019) and LoRA (Hu et al. 2022).

All of them run the LPM on the high-resolution image ``(B, 3, S, S)`` and classify its CLS token after the final
LayerNorm with a new ``Linear(D, C)``. Only full fine-tuning trains the LPM; the others freeze it and train their
own modules plus the head. Hyper-parameters are chosen so that the learnable percentages with ViT-B and C = 5 land
near the README's: VPT 16 prompts/layer -> 0.17 %, Houlsby adapters r = 48 -> 2.02 %, LoRA r = 16 on q, v -> 0.68 %.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fpt_plus.models.lpm import build_vit
from fpt_plus.settings import ModelConfig

__all__ = ["LPMClassifier", "LinearProbe", "VPTDeep", "Adapter", "AdapterBlock", "LoRAQKV", "build_petl"]


class LPMClassifier(nn.Module):
    """A ViT plus CLS head: ``forward(lpm (B, 3, S, S)) -> logits (B, C)``. Full fine-tuning when nothing is frozen."""

    input_keys: tuple[str, ...] = ("lpm",)

    def __init__(self, vit: nn.Module, num_classes: int):
        super().__init__()
        self.vit = vit
        self.head = nn.Linear(vit.embed_dim, num_classes)

    def features(self, lpm: torch.Tensor) -> torch.Tensor:
        """CLS token after the final LayerNorm, ``(B, D)``."""
        vit = self.vit
        x = vit.norm_pre(vit._pos_embed(vit.patch_embed(lpm)))
        x = self.run_blocks(x)
        return vit.norm(x)[:, 0]

    def run_blocks(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.vit.blocks:
            x = blk(x)
        return x

    def forward(self, lpm: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(lpm))


class LinearProbe(LPMClassifier):
    """Frozen LPM, trainable head. ``forward(lpm=None, features=None)``: cached ``(B, D)`` CLS features skip the LPM."""

    def __init__(self, vit: nn.Module, num_classes: int, cached: bool = False):
        super().__init__(vit, num_classes)
        self.vit.requires_grad_(False)
        self.input_keys = ("features",) if cached else ("lpm",)

    def train(self, mode: bool = True) -> LinearProbe:
        super().train(mode)
        self.vit.eval()
        return self

    @torch.no_grad()
    def encode(self, lpm: torch.Tensor) -> torch.Tensor:
        return self.features(lpm)

    def forward(self, lpm: torch.Tensor | None = None, features: torch.Tensor | None = None) -> torch.Tensor:
        if features is None:
            features = self.encode(lpm)
        return self.head(features)


class VPTDeep(LPMClassifier):
    """Visual prompt tuning, deep: ``P`` new prompts per block, inserted after CLS and replaced at every block."""

    def __init__(self, vit: nn.Module, num_classes: int, num_prompts: int = 16):
        super().__init__(vit, num_classes)
        self.vit.requires_grad_(False)
        d, p = vit.embed_dim, vit.patch_embed.patch_size[0]
        bound = math.sqrt(6.0 / float(3 * p * p + d))  # VPT's xavier-uniform init over the patch dimension
        self.prompts = nn.Parameter(torch.empty(len(vit.blocks), num_prompts, d).uniform_(-bound, bound))

    def run_blocks(self, x: torch.Tensor) -> torch.Tensor:
        b, p = x.shape[0], self.prompts.shape[1]
        for i, blk in enumerate(self.vit.blocks):
            prompts = self.prompts[i].unsqueeze(0).expand(b, -1, -1)
            rest = x[:, 1:] if i == 0 else x[:, 1 + p:]
            x = blk(torch.cat([x[:, :1], prompts, rest], dim=1))
        return torch.cat([x[:, :1], x[:, 1 + p:]], dim=1)


class Adapter(nn.Module):
    """Bottleneck adapter ``h + up(GELU(down(h)))``; ``up`` starts at zero so the block starts as the identity."""

    def __init__(self, dim: int, bottleneck: int):
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.act = nn.GELU()
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(self.act(self.down(h)))


class AdapterBlock(nn.Module):
    """A frozen timm block with Houlsby adapters after the attention and after the MLP sub-layer (before the
    residual additions): ``x + A1(attn(LN1 x))`` then ``x + A2(mlp(LN2 x))``."""

    def __init__(self, block: nn.Module, bottleneck: int):
        super().__init__()
        dim = block.norm1.normalized_shape[0]
        self.block = block
        self.adapter_attn = Adapter(dim, bottleneck)
        self.adapter_mlp = Adapter(dim, bottleneck)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blk = self.block
        x = x + blk.ls1(self.adapter_attn(blk.attn(blk.norm1(x))))
        return x + blk.ls2(self.adapter_mlp(blk.mlp(blk.norm2(x))))


class LoRAQKV(nn.Module):
    """Frozen fused ``qkv`` Linear(D, 3D) plus low-rank updates ``(alpha / r) B A x`` on the q and v thirds."""

    def __init__(self, qkv: nn.Linear, rank: int, alpha: float, targets: tuple[str, ...] = ("q", "v")):
        super().__init__()
        self.qkv = qkv
        dim = qkv.in_features
        self.dim = dim
        self.scale = alpha / rank
        self.targets = targets
        self.lora_a = nn.ParameterDict()
        self.lora_b = nn.ParameterDict()
        for t in targets:
            a = torch.empty(rank, dim)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            self.lora_a[t] = nn.Parameter(a)
            self.lora_b[t] = nn.Parameter(torch.zeros(dim, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.qkv(x)
        parts = list(out.split(self.dim, dim=-1))
        for t in self.targets:
            i = "qkv".index(t)
            parts[i] = parts[i] + (x @ self.lora_a[t].t() @ self.lora_b[t].t()) * self.scale
        return torch.cat(parts, dim=-1)


def build_petl(m: ModelConfig, num_classes: int, method: str, cached_features: bool = False) -> LPMClassifier:
    """``full_finetune | linear_probe | vpt | adapter | lora`` on a ViT with the LPM's dims at its input size."""
    vit = build_vit(m.lpm, num_classes=0, pretrained=m.pretrained)
    if method == "full_finetune":
        return LPMClassifier(vit, num_classes)
    if method == "linear_probe":
        return LinearProbe(vit, num_classes, cached=cached_features)
    if method == "vpt":
        return VPTDeep(vit, num_classes, m.vpt_prompts)
    vit.requires_grad_(False)
    if method == "adapter":
        vit.blocks = nn.Sequential(*[AdapterBlock(b, m.adapter_bottleneck) for b in vit.blocks])
        return LPMClassifier(vit, num_classes)
    if method == "lora":
        for blk in vit.blocks:
            blk.attn.qkv = LoRAQKV(blk.attn.qkv, m.lora_rank, m.lora_alpha)
        return LPMClassifier(vit, num_classes)
    raise ValueError(f"method `{method}` is not a PETL baseline (full_finetune, linear_probe, vpt, adapter, lora)")
