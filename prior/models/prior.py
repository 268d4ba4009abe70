"""PRIOR: image/report encoders, projections, alignment, SPB and the two reconstruction decoders, with the loss of
each pre-training stage (Cheng et al., ICCV 2023, Sec. 3; official ``codes/prior/models/prior.py``,
``stage1_step`` / ``stage2_step`` / ``stage3_step``).

Stage 1: global + local (patch SimSiam, sentence InfoNCE). Stage 2: sentences replaced by their SPB prototypes,
plus 10 x SPB L1. Stage 3: reports cut to ``num_queries`` sentences; 10 x global + local + image reconstruction +
10 x prototype generation (Hungarian-matched L1) + KL + generated-report global alignment + 10 x SPB L1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from prior.models.alignment import (
    LocalAttentionOutput,
    LocalCrossAttention,
    SentenceAttentionPool,
    cross_image_infonce,
    global_clip_loss,
    intra_report_infonce,
    simsiam_patch_loss,
)
from prior.models.decoders import ImageDecoder, ReportDecoder, matched_outputs
from prior.models.image_encoder import ImageEncoder, feature_tokens, tokens_to_map
from prior.models.spb import SPB
from prior.models.text_encoder import TextEncoder

__all__ = ["PRIOR", "ImageEmbedding", "TextEmbedding", "LOSS_TERMS", "LOCAL_NEGATIVES", "same_sentence_mask"]

LOSS_TERMS = ("global", "local_image", "local_text", "local_images", "proto", "image_rec", "spg", "kl", "gpa")
LOCAL_NEGATIVES = ("report", "images")


@dataclass
class ImageEmbedding:
    """``tokens`` ``(B, P, D)`` projected patch tokens, ``global_`` ``(B, D)``, ``fmap`` the raw layer4 map."""

    tokens: torch.Tensor
    global_: torch.Tensor
    fmap: torch.Tensor


@dataclass
class TextEmbedding:
    """``sentences`` ``(B, S, D)`` projected sentence embeddings (prototypes after SPB), ``mask`` ``(B, S)``,
    ``global_`` ``(B, D)``; ``raw`` the sentences before SPB; ``spb_logits`` ``(N, K)`` and ``spb_index`` ``(N,)``
    of the N valid sentences (row-major) when the SPB was applied; ``spb_loss`` its L1 term."""

    sentences: torch.Tensor
    mask: torch.Tensor
    global_: torch.Tensor
    raw: torch.Tensor
    spb_logits: torch.Tensor | None = None
    spb_index: torch.Tensor | None = None
    spb_loss: torch.Tensor | None = None


class PRIOR(nn.Module):
    """The full model. ``losses`` selects the terms (``local``, ``spb``, ``image_rec``, ``report_rec``);
    the baselines of the README are this model with terms switched off."""

    def __init__(self, image_encoder: ImageEncoder, text_encoder: TextEncoder, *, embed_dim: int = 768,
                 text_pool_heads: int = 8, spb_k: int = 512, spb_tau: float = 0.9, spb_weight: float = 10.0,
                 spb_eval_noise: bool = False, spb_assign: str = "dot", spb_logit_scale: float = 1.0,
                 decoder_config=None, num_queries: int = 16,
                 decoder_causal: bool = False,
                 official_matching: bool = False, image_size: int = 224, rec_size: int = 224, rec_blocks: int = 5,
                 rec_dropout: float = 0.5, temperature: float = 0.01, local_temperature: float = 0.01,
                 losses: dict[str, bool] | None = None, global_weight_stage3: float = 10.0,
                 official_token_order: bool = False, local_negatives: str = "report"):
        super().__init__()
        if local_negatives not in LOCAL_NEGATIVES:
            raise ValueError(f"local_negatives must be one of {LOCAL_NEGATIVES}, got {local_negatives!r}")
        self.local_negatives = local_negatives
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.embed_dim = embed_dim
        self.losses = dict(losses or {"local": True, "spb": True, "image_rec": True, "report_rec": True})
        self.spb_weight = spb_weight
        self.global_weight_stage3 = global_weight_stage3
        self.official_token_order = official_token_order
        self.official_matching = official_matching
        self.num_queries = num_queries
        vw, tw = image_encoder.width, text_encoder.width
        self.global_image_projection = nn.Linear(vw, embed_dim)
        self.local_image_projection = nn.Linear(vw, embed_dim)
        self.local_text_projection = nn.Linear(tw, embed_dim)
        self.predictor = nn.Sequential(nn.Linear(embed_dim, embed_dim // 2), nn.ReLU(inplace=True),
                                       nn.Linear(embed_dim // 2, embed_dim))
        self.global_text_attention = SentenceAttentionPool(embed_dim, text_pool_heads)
        self.local_cross_attention = LocalCrossAttention(embed_dim)
        self.sentence_bank = SPB(embed_dim, spb_k, spb_tau, spb_eval_noise, spb_assign, spb_logit_scale)
        self.image_decoder = ImageDecoder(2 * embed_dim, rec_size, rec_blocks, rec_dropout)
        self.sentence_decoder = ReportDecoder(decoder_config, num_queries, decoder_causal)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))
        self.local_logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / local_temperature)))
        self.grid = (image_encoder.grid, image_encoder.grid)
        for layer, width in ((self.global_image_projection, vw), (self.local_image_projection, vw),
                             (self.local_text_projection, tw), (self.predictor[0], embed_dim)):
            nn.init.normal_(layer.weight, std=width**-0.5)

    # ------------------------------------------------------------------------------------------- encoders
    def encode_image(self, image: torch.Tensor) -> ImageEmbedding:
        fmap, pooled = self.image_encoder(image)
        tokens = feature_tokens(fmap, self.official_token_order)
        return ImageEmbedding(self.local_image_projection(tokens), self.global_image_projection(pooled), fmap)

    def encode_sentences(self, reports: list[list[str]], max_sentences: int | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected sentence embeddings ``(B, S, D)`` and mask, reports cut to ``max_sentences``."""
        if max_sentences is not None:
            reports = [r[:max_sentences] for r in reports]
        feats, mask = self.text_encoder(reports)
        return self.local_text_projection(feats), mask

    def quantize(self, sentences: torch.Tensor, mask: torch.Tensor):
        """SPB on the valid sentences; returns the padded prototypes and the :class:`SPBOutput`."""
        out = self.sentence_bank(sentences[mask])
        protos = torch.zeros_like(sentences).masked_scatter(mask[..., None], out.quantized.to(sentences.dtype))
        return protos, out

    def encode_text(self, reports: list[list[str]], use_spb: bool, max_sentences: int | None = None) -> TextEmbedding:
        raw, mask = self.encode_sentences(reports, max_sentences)
        if not use_spb:
            return TextEmbedding(raw, mask, self.global_text_attention(raw, mask), raw)
        protos, out = self.quantize(raw, mask)
        return TextEmbedding(protos, mask, self.global_text_attention(protos, mask), raw, out.logits, out.index,
                             out.loss)

    def local_attention(self, image: ImageEmbedding, text: TextEmbedding) -> LocalAttentionOutput:
        return self.local_cross_attention(image.tokens, text.sentences, text.mask)

    # ------------------------------------------------------------------------------------------- losses
    def local_losses(self, image: ImageEmbedding, text: TextEmbedding, att: LocalAttentionOutput,
                     same_text: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Patch SimSiam and intra-report sentence InfoNCE (official); with ``local_negatives: images`` [ours] and
        ``same_text`` (:func:`same_sentence_mask`) also the cross-image sentence InfoNCE ``local_images``."""
        terms = {"local_image": simsiam_patch_loss(image.tokens, att.text_to_image, self.predictor),
                 "local_text": intra_report_infonce(text.sentences, att.image_to_text, text.mask,
                                                    self.local_logit_scale.exp())}
        if self.local_negatives == "images" and same_text is not None:
            attended = self.local_cross_attention.sentences_over_images(image.tokens, text.sentences)
            terms["local_images"] = cross_image_infonce(text.sentences, attended, text.mask, same_text,
                                                        self.local_logit_scale.exp())
        return terms

    def reconstruct_image(self, image: ImageEmbedding, att: LocalAttentionOutput, with_text: bool = True
                          ) -> torch.Tensor:
        """``(B, 1, rec, rec)`` from dropped patch tokens and text-conditioned patches (zeros: no text)."""
        image_map = tokens_to_map(image.tokens, self.grid, self.official_token_order)
        text_map = tokens_to_map(att.text_to_image, self.grid, self.official_token_order)
        return self.image_decoder(image_map, text_map if with_text else torch.zeros_like(text_map))

    def report_losses(self, image: ImageEmbedding, text: TextEmbedding) -> dict[str, torch.Tensor]:
        """Prototype generation (spg, all Q slots incl. padding, x SPB weight), KL and generated-report
        global alignment (gpa)."""
        q = self.num_queries
        b, s = text.mask.shape
        targets = image.tokens.new_zeros(b, q, self.embed_dim)
        tmask = torch.zeros(b, q, dtype=torch.bool, device=text.mask.device)
        s = min(s, q)
        targets[:, :s] = text.sentences[:, :s]
        tmask[:, :s] = text.mask[:, :s]
        outputs = self.sentence_decoder(image.tokens)
        matched = matched_outputs(outputs, targets, self.official_matching)
        valid = matched[tmask]
        generated = self.sentence_bank(valid).quantized
        gen_padded = torch.zeros_like(matched).masked_scatter(tmask[..., None], generated.to(matched.dtype))
        gen_global = self.global_text_attention(gen_padded, tmask)
        return {"spg": self.spb_weight * F.l1_loss(matched, targets),
                "kl": self.sentence_bank.kl(valid, text.spb_logits),
                "gpa": global_clip_loss(gen_global, text.global_, self.logit_scale.exp())}

    def forward(self, images: torch.Tensor, reports: list[list[str]], stage: int) -> dict[str, torch.Tensor]:
        """Loss terms of pre-training ``stage`` (1, 2, 3) on a batch; key ``loss`` is their weighted sum."""
        if stage not in (1, 2, 3):
            raise ValueError(f"stage must be 1, 2 or 3, got {stage}")
        use_spb = stage >= 2 and self.losses["spb"]
        image = self.encode_image(images)
        text = self.encode_text(reports, use_spb, self.num_queries if stage == 3 else None)
        terms: dict[str, torch.Tensor] = {"global": global_clip_loss(image.global_, text.global_,
                                                                     self.logit_scale.exp())}
        weights = {"global": self.global_weight_stage3 if stage == 3 else 1.0}
        needs_attention = self.losses["local"] or (stage == 3 and self.losses["image_rec"])
        att = self.local_attention(image, text) if needs_attention else None
        if self.losses["local"]:
            same = same_sentence_mask(reports, text.mask, text.spb_index) if self.local_negatives == "images" else None
            terms |= self.local_losses(image, text, att, same)
        if use_spb:
            terms["proto"] = self.spb_weight * text.spb_loss
        if stage == 3 and self.losses["image_rec"]:
            terms["image_rec"] = ImageDecoder.loss(self.reconstruct_image(image, att), images)
        if stage == 3 and self.losses["report_rec"] and use_spb:
            terms |= self.report_losses(image, text)
        terms["loss"] = sum(weights.get(k, 1.0) * v for k, v in terms.items())
        return terms


def same_sentence_mask(reports: list[list[str]], mask: torch.Tensor, spb_index: torch.Tensor | None = None
                       ) -> torch.Tensor:
    """``(B, S, B)`` bool: report ``c`` holds sentence ``s`` of report ``b``: the same text or, after the SPB, the
    same prototype (``spb_index`` of the valid sentences in row-major order). ``reports`` as encoded (cut to
    ``mask.shape[1]`` sentences)."""
    b, s = mask.shape
    ids: dict[str, int] = {}
    text_keys = torch.full((b, s), -1, dtype=torch.long)
    for i, report in enumerate(reports):
        for j, sentence in enumerate(report[:s]):
            text_keys[i, j] = ids.setdefault(sentence, len(ids))
    key_sets = [text_keys.to(mask.device)]
    if spb_index is not None:
        codes = torch.full((b, s), -1, dtype=torch.long, device=mask.device)
        codes[mask] = spb_index.to(mask.device)
        key_sets.append(codes)
    hit = torch.zeros(b, s, b, dtype=torch.bool, device=mask.device)
    for keys in key_sets:
        keys = keys.masked_fill(~mask, -1)
        same = (keys[:, :, None, None] == keys[None, None, :, :]) & mask[None, None, :, :]  # (B, S, C, T)
        hit |= same.any(-1)
    return hit & mask[:, :, None]
