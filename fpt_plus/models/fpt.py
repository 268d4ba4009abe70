"""Fusion module, prompted side ViT and the FPT / FPT+ classifiers (FPT+ paper Sec. III-C/D; official
modules/bridge.py, modules/side_vit.py).

Fusion (all tapped layers batched, L of them)::

    Q = proj(LN(P_l))                       P: (L, 1, M, Dp) learnable prompts, M = 16
    A = softmax(Q K_l^T / sqrt(d))          K_l, V_l: (L, B, H, k, d) selected LPM keys/values (no new projections)
    ctx = A V_l                             (L, B, M, D)
    FPT+: out = Dropout(out_proj(ctx + P_l))      (Dp = D, LN, no proj; residual before the shared out-projection)
    FPT : out = Dropout(out_proj(ctx) + P_l)      (Dp = Ds, Linear Ds -> D, no LN; residual after)

Side network: a randomly initialised timm ViT of width Ds = D / 8, the LPM's heads and patch size, depth L, on the
low-resolution image. Block i sees ``[CLS, patches, fine-grained prompts of LPM layer layers[i]]``; the prompt
outputs are dropped after the block (VPT-deep style). Head: final LN -> CLS -> Linear(Ds, C).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from fpt_plus.models.lpm import FrozenLPM, compiled_lpm
from fpt_plus.settings import LPMConfig, ModelConfig, VariantConfig

__all__ = ["FusionModule", "SideViT", "FineGrainedPromptTuning", "SideOnly", "SideOnlyHR", "build_side_vit",
           "build_fpt", "build_side_only"]


class FusionModule(nn.Module):
    """Prompts x selected LPM keys/values -> fine-grained prompts ``(L, B, M, Ds)``."""

    def __init__(self, num_layers: int, lpm_dim: int, side_dim: int, num_heads: int, num_prompts: int = 16,
                 prompt_dim: int | None = None, prompt_norm: bool = True, prompt_proj: bool = False,
                 dropout: float = 0.5):
        super().__init__()
        prompt_dim = prompt_dim or lpm_dim
        if not prompt_proj and prompt_dim != lpm_dim:
            raise ValueError(f"prompt_dim {prompt_dim} != LPM width {lpm_dim} needs prompt_proj=true")
        if prompt_dim not in (lpm_dim, side_dim):
            raise ValueError(f"prompt_dim must equal the LPM width {lpm_dim} (FPT+) or the side width {side_dim} "
                             f"(FPT) for the residual, got {prompt_dim}")
        self.num_heads = num_heads
        self.lpm_dim = lpm_dim
        self.prompts = nn.Parameter(torch.randn(num_layers, 1, num_prompts, prompt_dim) * 1e-6)
        self.norm = nn.LayerNorm(prompt_dim) if prompt_norm else nn.Identity()
        self.proj = nn.Linear(prompt_dim, lpm_dim) if prompt_proj else nn.Identity()
        self.out_proj = nn.Linear(lpm_dim, side_dim)
        self.dropout = nn.Dropout(dropout)
        self.residual_before_out = prompt_dim == lpm_dim

    def attention(self, keys: torch.Tensor) -> torch.Tensor:
        """Fusion attention probabilities ``(L, B, H, M, k)`` for keys ``(L, B, H, k, d)``."""
        q = self._queries()
        return torch.softmax(q @ keys.transpose(-2, -1) * keys.shape[-1] ** -0.5, dim=-1)

    def _queries(self) -> torch.Tensor:
        q = self.proj(self.norm(self.prompts))  # (L, 1, M, D)
        lyr, _, m, d = q.shape
        return q.reshape(lyr, 1, m, self.num_heads, d // self.num_heads).transpose(2, 3)  # (L, 1, H, M, d)

    def forward(self, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """keys, values ``(L, B, H, k, d)`` -> fine-grained prompts ``(L, B, M, Ds)``."""
        keys, values = keys.to(self.prompts.dtype), values.to(self.prompts.dtype)
        ctx = self.attention(keys) @ values  # (L, B, H, M, d)
        lyr, b, h, m, d = ctx.shape
        ctx = ctx.transpose(2, 3).reshape(lyr, b, m, h * d)
        if self.residual_before_out:
            out = self.out_proj(ctx + self.prompts)
        else:
            out = self.out_proj(ctx) + self.prompts
        return self.dropout(out)


def build_side_vit(lpm: LPMConfig, side_reduction: int, depth: int, img_size: int, num_classes: int) -> nn.Module:
    """Randomly initialised timm ViT: width D / side_reduction, the LPM's heads and patch size, MLP ratio 4."""
    from timm.models.vision_transformer import VisionTransformer

    width = lpm.embed_dim // side_reduction
    if width % lpm.num_heads:
        raise ValueError(f"side width {width} (= {lpm.embed_dim} / model.side_reduction) is not divisible by the "
                         f"LPM's {lpm.num_heads} heads")
    return VisionTransformer(img_size=img_size, patch_size=lpm.patch_size, embed_dim=width, depth=depth,
                             num_heads=lpm.num_heads, mlp_ratio=4.0, qkv_bias=True, num_classes=num_classes,
                             global_pool="token", drop_rate=0.0)


class SideViT(nn.Module):
    """Side ViT whose block i also attends to prompts ``(B, M, Ds)`` that are dropped after the block."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.vit = vit

    def forward(self, images: torch.Tensor, prompts: torch.Tensor | None = None) -> torch.Tensor:
        """images ``(B, 3, s, s)``, prompts ``(L, B, M, Ds)`` or None -> logits ``(B, C)``."""
        vit = self.vit
        x = vit.norm_pre(vit._pos_embed(vit.patch_embed(images)))  # (B, 1 + n, Ds)
        n = x.shape[1]
        for i, blk in enumerate(vit.blocks):
            if prompts is None:
                x = blk(x)
            else:
                x = blk(torch.cat([x, prompts[i].to(x.dtype)], dim=1))[:, :n]
        return vit.forward_head(vit.norm(x))


class FineGrainedPromptTuning(nn.Module):
    """FPT / FPT+: ``forward(side (B,3,s,s), keys=None, values=None, lpm=None) -> logits (B, C)``.

    Either cached ``keys``/``values`` ``(L, B, H, k, d)`` (preloading; then no LPM is built) or the high-resolution
    ``lpm`` image ``(B, 3, S, S)`` run through the frozen LPM under ``no_grad``.
    """

    def __init__(self, fusion: FusionModule, side: SideViT, lpm: FrozenLPM | None = None, lpm_amp: str = "off",
                 lpm_compile: str = "off"):
        super().__init__()
        self.fusion = fusion
        self.side = side
        self.lpm = lpm
        self.lpm_amp = lpm_amp
        self.lpm_compile = lpm_compile

    @property
    def input_keys(self) -> tuple[str, ...]:
        return ("side", "keys", "values") if self.lpm is None else ("side", "lpm")

    def state_dict(self, *args: Any, destination: Any = None, prefix: str = "", keep_vars: bool = False) -> Any:
        """Learnable state only: the frozen LPM (rebuilt from ``model.lpm``) is not stored in checkpoints."""
        out = super().state_dict(destination=destination, prefix=prefix, keep_vars=keep_vars)
        for key in [k for k in out if k.startswith(prefix + "lpm.")]:
            del out[key]
        return out

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = [k for k in result.missing_keys if not k.startswith("lpm.")]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(f"state dict does not match {type(self).__name__}: missing {missing}, "
                               f"unexpected {result.unexpected_keys}")
        return result

    def extract(self, lpm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """High-resolution images -> selected (keys, values) ``(L, B, H, k, d)`` in fp32."""
        from common.runtime import autocast

        if self.lpm is None:
            raise RuntimeError("this model was built for preloaded keys/values (data.preload=true) and has no LPM; "
                               "build it with data.preload=false to feed images")
        forward = self.lpm
        if self.lpm_compile != "off":  # compiled once, kept out of the module tree (no second copy in state_dict)
            if "_compiled_lpm" not in self.__dict__:
                self.__dict__["_compiled_lpm"] = compiled_lpm(self.lpm, self.lpm_compile)
            forward = self.__dict__["_compiled_lpm"]
        with autocast(lpm.device, self.lpm_amp):
            keys, values = forward(lpm)
        return keys.float(), values.float()

    def forward(self, side: torch.Tensor, keys: torch.Tensor | None = None, values: torch.Tensor | None = None,
                lpm: torch.Tensor | None = None) -> torch.Tensor:
        if keys is None:
            if lpm is None:
                raise ValueError("FineGrainedPromptTuning needs cached keys/values or the LPM image `lpm`")
            keys, values = self.extract(lpm)
        return self.side(side, self.fusion(keys, values))


class SideOnly(nn.Module):
    """Baseline: the side ViT alone on the low-resolution image (no LPM, no prompts)."""

    input_keys = ("side",)

    def __init__(self, side: SideViT):
        super().__init__()
        self.side = side

    def forward(self, side: torch.Tensor) -> torch.Tensor:
        return self.side(side)


class SideOnlyHR(nn.Module):
    """Control: the same side ViT on the full-resolution LPM input (no LPM, no prompts). It separates "the
    high-resolution view" from "the LPM's pre-trained knowledge": it sees every pixel FPT+'s LPM sees."""

    input_keys = ("lpm",)

    def __init__(self, side: SideViT):
        super().__init__()
        self.side = side

    def forward(self, lpm: torch.Tensor) -> torch.Tensor:
        return self.side(lpm)


def build_fpt(m: ModelConfig, num_classes: int, variant_name: str, with_lpm: bool, lpm_amp: str = "off"
              ) -> FineGrainedPromptTuning:
    """FPT+ (``variant_name='fpt_plus'``) or FPT (``'fpt'``) from ``model:``; the LPM only when ``with_lpm``."""
    variant: VariantConfig = getattr(m, variant_name)
    lpm_cfg = m.lpm
    side_dim = lpm_cfg.embed_dim // m.side_reduction
    fusion = FusionModule(len(variant.layers), lpm_cfg.embed_dim, side_dim, lpm_cfg.num_heads, m.num_prompts,
                          prompt_dim=lpm_cfg.embed_dim // variant.prompt_reduction, prompt_norm=variant.prompt_norm,
                          prompt_proj=variant.prompt_proj, dropout=m.fusion_dropout)
    side = SideViT(build_side_vit(lpm_cfg, m.side_reduction, len(variant.layers), variant.side_img_size,
                                  num_classes))
    lpm = (FrozenLPM(lpm_cfg, variant.layers, m.token_ratio, m.token_imp, pretrained=m.pretrained) if with_lpm
           else None)
    return FineGrainedPromptTuning(fusion, side, lpm, lpm_amp=lpm_amp, lpm_compile=lpm_cfg.compile)


def build_side_only(m: ModelConfig, num_classes: int, high_resolution: bool = False) -> SideOnly | SideOnlyHR:
    """Side-network-only baseline with FPT+'s side settings (depth = number of tapped layers) at the side resolution,
    or (``high_resolution``) on the LPM's input at the LPM resolution."""
    size = m.lpm.img_size if high_resolution else m.fpt_plus.side_img_size
    side = SideViT(build_side_vit(m.lpm, m.side_reduction, len(m.fpt_plus.layers), size, num_classes))
    return SideOnlyHR(side) if high_resolution else SideOnly(side)
