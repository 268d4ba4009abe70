"""Networks of PAMSR: SwinIR with adapters (the proposed network) and the CNN / interpolation baselines."""

from __future__ import annotations

from torch import nn

from pamsr.models.cnn import EDSR, RCAN, Bicubic, bicubic_upsample
from pamsr.models.dense import RDN, FDUNet
from pamsr.models.han import HAN
from pamsr.models.swinir import SwinIR, swinir_m
from pamsr.settings import ModelConfig

__all__ = ["SwinIR", "swinir_m", "EDSR", "RCAN", "HAN", "RDN", "FDUNet", "Bicubic", "bicubic_upsample", "build_model",
           "count_parameters"]


def build_model(cfg: ModelConfig, scale: int, patch_size: int = 64) -> nn.Module:
    """Model named by ``cfg.name`` for upscaling factor ``scale`` (single-channel in and out)."""
    if cfg.name == "swinir":
        return SwinIR(upscale=scale, img_size=patch_size, embed_dim=cfg.embed_dim, depths=cfg.depths,
                      num_heads=cfg.num_heads, window_size=cfg.window_size, mlp_ratio=cfg.mlp_ratio,
                      drop_path_rate=cfg.drop_path_rate, num_feat=cfg.num_feat, bicubic_skip=cfg.bicubic_skip,
                      skip_zero=cfg.skip_zero, adapter_chans=cfg.adapter_chans)
    if cfg.name == "edsr":
        return EDSR(scale, cfg.n_resblocks, cfg.n_feats, cfg.res_scale, bicubic_skip=cfg.bicubic_skip)
    if cfg.name == "rcan":
        return RCAN(scale, cfg.n_resgroups, cfg.n_resblocks, cfg.n_feats, cfg.reduction, bicubic_skip=cfg.bicubic_skip)
    if cfg.name == "han":
        return HAN(scale, cfg.n_resgroups, cfg.n_resblocks, cfg.n_feats, cfg.reduction, bicubic_skip=cfg.bicubic_skip)
    if cfg.name == "rdn":
        return RDN(scale, cfg.rdn_blocks, cfg.rdn_layers, cfg.rdn_growth, cfg.n_feats, bicubic_skip=cfg.bicubic_skip)
    if cfg.name == "fd_unet":
        return FDUNet(scale, cfg.n_feats, cfg.unet_levels, cfg.rdn_layers, bicubic_skip=cfg.bicubic_skip)
    if cfg.name == "bicubic":
        return Bicubic(scale)
    raise ValueError(f"model.name must be swinir, edsr, rcan, han, rdn, fd_unet or bicubic, got {cfg.name!r}")


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
