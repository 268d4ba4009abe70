"""Offline resolution of pretrained weights: ``model.pretrained: none | hub | /path/to/file``.

These machines have no network, so ``hub`` never downloads: it fails with a message naming the file to fetch
(the timm hub id or URL) and the config key to point at it. A local file (``.safetensors``, ``.pth``, ``.bin``,
``.npz`` for timm's JAX ViT weights) is loaded into the model, for timm models through timm itself
(``pretrained_cfg_overlay=dict(file=...)``, so timm's own key filters such as position-embedding resizing apply).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from common.checkpoint import load_init_weights

__all__ = ["PretrainedWeightsError", "create_timm_model", "load_pretrained"]


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights requested but not usable; the message says which file to get and which key to set."""


def _hub_message(what: str, source: str, config_key: str) -> str:
    return (f"{config_key}=hub asks for the pretrained weights of {what}, but this machine cannot download them. "
            f"Download {source} on a machine with network access, copy it here and set "
            f"{config_key}=/path/to/that/file (or {config_key}=none to train from random initialisation).")


def create_timm_model(name: str, pretrained: str | Path = "none", config_key: str = "model.pretrained",
                      **kwargs: Any) -> torch.nn.Module:
    """``timm.create_model`` with offline pretrained handling.

    ``pretrained="none"`` -> random init; ``"hub"`` -> :class:`PretrainedWeightsError` naming the hub id;
    a path -> ``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=path))``, which applies
    timm's checkpoint filter (e.g. interpolating ViT position embeddings to ``img_size``).
    """
    import timm

    spec = str(pretrained)
    if spec == "none":
        return timm.create_model(name, pretrained=False, **kwargs)
    if spec == "hub":
        cfg = timm.models.get_pretrained_cfg(name.split(".")[0])
        hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        source = f"the file of hub id `{hub_id or name}` (model.safetensors or pytorch_model.bin)"
        raise PretrainedWeightsError(_hub_message(f"timm model `{name}`", source, config_key))
    path = Path(spec).expanduser()
    if not path.is_file():
        raise PretrainedWeightsError(f"{config_key}={spec}: file not found. Point it at a downloaded weight file, "
                                     f"or use {config_key}=none")
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kwargs)


def load_pretrained(model: torch.nn.Module, pretrained: str | Path, *, what: str, source: str,
                    config_key: str = "model.pretrained", strict: bool = False) -> dict[str, list[str]] | None:
    """Load pretrained weights for a non-timm model (MONAI, SAM, BERT, ...).

    ``none`` -> None (nothing loaded); ``hub`` -> :class:`PretrainedWeightsError` naming ``source`` (what to
    download) and ``config_key``; a path -> weights loaded with prefix stripping and a key report (see
    :func:`common.checkpoint.load_init_weights`).
    """
    spec = str(pretrained)
    if spec == "none":
        return None
    if spec == "hub":
        raise PretrainedWeightsError(_hub_message(what, source, config_key))
    path = Path(spec).expanduser()
    if not path.is_file():
        raise PretrainedWeightsError(f"{config_key}={spec}: file not found. Download {source} and point "
                                     f"{config_key} at it, or use {config_key}=none")
    return load_init_weights(model, path, strict=strict)
