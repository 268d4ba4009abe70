"""PRIOR networks: :func:`build_model` turns the ``model:`` section into a :class:`PRIOR`."""

from __future__ import annotations

from torch import nn

from prior.models.decoders import decoder_bert_config
from prior.models.image_encoder import ImageEncoder, load_rgb_resnet_weights
from prior.models.prior import PRIOR
from prior.models.text_encoder import TextEncoder, build_text_encoder
from prior.settings import ModelConfig, method_losses

__all__ = ["build_model", "build_image_encoder", "build_prior", "count_parameters"]


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def build_image_encoder(cfg: ModelConfig, image_size: int) -> ImageEncoder:
    """The ResNet trunk + attention pool named by ``model.image`` (weights from ``model.image.pretrained``)."""
    encoder = ImageEncoder(cfg.image.arch, image_size, cfg.image.output_stride, cfg.image.channels,
                           cfg.image.pool_heads)
    report = load_rgb_resnet_weights(encoder, cfg.image.pretrained)
    if report is not None:
        print(f"image encoder weights from {cfg.image.pretrained}: missing {report['missing']}, "
              f"shape mismatch {report['shape_mismatch']}")
    return encoder


def build_prior(cfg: ModelConfig, image_encoder: ImageEncoder, text_encoder: TextEncoder, image_size: int,
                method: str = "prior", global_weight_stage3: float = 10.0) -> PRIOR:
    """Assemble :class:`PRIOR` around given encoders (the report decoder gets the joint width and the text
    encoder's vocabulary size, as the official decoder copies its encoder's config)."""
    dec = cfg.decoder
    vocab = dec.vocab_size if dec.vocab_size > 0 else int(text_encoder.bert.config.vocab_size)
    decoder_config = decoder_bert_config(cfg.embed_dim, dec.layers, dec.heads, dec.intermediate, vocab)
    return PRIOR(image_encoder, text_encoder, embed_dim=cfg.embed_dim, text_pool_heads=cfg.text_pool_heads,
                 spb_k=cfg.spb.k, spb_tau=cfg.spb.tau, spb_weight=cfg.spb.weight, spb_eval_noise=cfg.spb.eval_noise,
                 spb_assign=cfg.spb.assign, spb_logit_scale=cfg.spb.logit_scale,
                 decoder_config=decoder_config, num_queries=dec.num_queries, decoder_causal=dec.causal,
                 official_matching=dec.official_matching, image_size=image_size,
                 rec_size=cfg.image_decoder.rec_size, rec_blocks=cfg.image_decoder.blocks,
                 rec_dropout=cfg.image_decoder.dropout, temperature=cfg.temperature,
                 local_temperature=cfg.local_temperature, losses=method_losses(method),
                 global_weight_stage3=global_weight_stage3, official_token_order=cfg.image.official_token_order,
                 local_negatives=cfg.local_negatives)


def build_model(cfg: ModelConfig, image_size: int, method: str = "prior", global_weight_stage3: float = 10.0
                ) -> PRIOR:
    """``model:`` section -> :class:`PRIOR` (image encoder, text encoder from ``model.text.encoder``, heads)."""
    t = cfg.text
    text_encoder = build_text_encoder(t.encoder, frozen=t.frozen, mode=t.mode, max_tokens=t.max_tokens,
                                      tiny_hidden=t.tiny_hidden, tiny_layers=t.tiny_layers, tiny_heads=t.tiny_heads)
    return build_prior(cfg, build_image_encoder(cfg, image_size), text_encoder, image_size, method,
                       global_weight_stage3)
