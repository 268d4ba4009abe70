"""The segmenter network: MONAI 2D ``UNet`` (channels 16-256, four stride-2 levels, two residual units), the
backbone of every SSL paradigm in ``semisup.py``; 1,625,161 parameters for 1 input channel and 2 classes."""

from __future__ import annotations

from monai.networks.nets import UNet

from aslseg.settings import ModelConfig

__all__ = ["SEGMENTER_PARAMS", "build_model"]

SEGMENTER_PARAMS = 1_625_161


def build_model(cfg: ModelConfig, in_channels: int = 1, out_channels: int = 2) -> UNet:
    """MONAI 2D UNet ``(B, in_channels, H, W) -> (B, out_channels, H, W)`` logits (H, W multiples of 16)."""
    return UNet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels, channels=tuple(cfg.channels),
                strides=tuple(cfg.strides), num_res_units=cfg.num_res_units)
