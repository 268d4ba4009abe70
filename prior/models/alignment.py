"""Cross-modal alignment of PRIOR (Sec. 3.2): local sentence<->patch cross-attention, the SimSiam patch loss, the
intra-report sentence InfoNCE, the sentence attention pool and the global CLIP loss.

Official code (``codes/prior/modules/local_attention.py``, ``modules/sentence_pool.py``, ``models/prior.py``:
``local_alignment_loss``, ``text_local_loss_fn``, ``simsiam_loss_func``, ``global_alignment_loss``) loops over the
samples of a batch; everything here is batched over padded sentences with a mask, and equals that loop (tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from common.runtime import all_gather_with_grad

__all__ = ["LocalCrossAttention", "LocalAttentionOutput", "SentenceAttentionPool", "simsiam_patch_loss",
           "intra_report_infonce", "cross_image_infonce", "global_clip_loss", "rank_offset"]


@dataclass
class LocalAttentionOutput:
    """``text_to_image`` ``(B, P, D)``: text-conditioned patch features; ``patch_attention`` ``(B, P, S)``;
    ``image_to_text`` ``(B, S, D)``: image-attended sentence features; ``sentence_attention`` ``(B, S, P)``.
    All attention values are sigmoids in (0, 1); padded sentences get 0 in ``patch_attention``."""

    text_to_image: torch.Tensor
    patch_attention: torch.Tensor
    image_to_text: torch.Tensor
    sentence_attention: torch.Tensor


class LocalCrossAttention(nn.Module):
    """Two independent q/k/v triplets; sigmoid (not softmax) attention in both directions (official)."""

    def __init__(self, embed_dim: int):
        super().__init__()
        self.embed_dim = embed_dim
        self.query1, self.key1, self.value1 = (nn.Linear(embed_dim, embed_dim) for _ in range(3))
        self.query2, self.key2, self.value2 = (nn.Linear(embed_dim, embed_dim) for _ in range(3))

    def forward(self, image: torch.Tensor, text: torch.Tensor, mask: torch.Tensor | None = None
                ) -> LocalAttentionOutput:
        """``image`` ``(B, P, D)`` patch tokens, ``text`` ``(B, S, D)`` sentences, ``mask`` ``(B, S)`` bool."""
        q1, k1, v1 = self.query1(image), self.key1(image), self.value1(image)
        q2, k2, v2 = self.query2(text), self.key2(text), self.value2(text)
        scale = 1.0 / math.sqrt(self.embed_dim)
        sentence_attention = torch.sigmoid(q2 @ k1.transpose(1, 2) * scale)  # (B, S, P)
        image_to_text = sentence_attention @ v1
        patch_attention = torch.sigmoid(q1 @ k2.transpose(1, 2) * scale)  # (B, P, S)
        if mask is not None:
            patch_attention = patch_attention * mask[:, None, :].to(patch_attention.dtype)
        text_to_image = patch_attention @ v2
        return LocalAttentionOutput(text_to_image, patch_attention, image_to_text, sentence_attention)

    def sentences_over_images(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Every report's sentences attending over every image of the batch: ``image`` ``(C, P, D)``, ``text``
        ``(B, S, D)`` -> ``(B, S, C, D)``; entry ``[b, :, b]`` is ``forward(...).image_to_text[b]``."""
        q2 = self.query2(text)
        k1, v1 = self.key1(image), self.value1(image)
        scale = 1.0 / math.sqrt(self.embed_dim)
        attention = torch.sigmoid(torch.einsum("bsd,cpd->bscp", q2, k1) * scale)
        return torch.einsum("bscp,cpd->bscd", attention, v1)


class SentenceAttentionPool(nn.Module):
    """The report's global embedding: the mean sentence attends over ``[mean; sentences]`` (official
    ``SentenceAttentionPool(16, D, pos_embed=False)``, 8 heads). ``x`` ``(B, S, D)``, ``mask`` ``(B, S)`` ->
    ``(B, D)``; padded sentences are excluded from the mean and from the keys."""

    def __init__(self, embed_dim: int, num_heads: int = 8):
        super().__init__()
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, embed_dim)
        self.num_heads = num_heads

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        w = mask.to(x.dtype)[..., None]
        mean = (x * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp(min=1)
        seq = torch.cat([mean, x], dim=1).transpose(0, 1)  # (S+1, B, D)
        pad = torch.cat([torch.zeros_like(mask[:, :1]), ~mask], dim=1)
        out, _ = F.multi_head_attention_forward(
            query=seq[:1], key=seq, value=seq, embed_dim_to_check=seq.shape[-1], num_heads=self.num_heads,
            q_proj_weight=self.q_proj.weight, k_proj_weight=self.k_proj.weight, v_proj_weight=self.v_proj.weight,
            in_proj_weight=None, in_proj_bias=torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]),
            bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0, out_proj_weight=self.c_proj.weight,
            out_proj_bias=self.c_proj.bias, use_separate_proj_weight=True, training=self.training,
            key_padding_mask=pad, need_weights=False)
        return out[0]


def simsiam_patch_loss(x: torch.Tensor, y: torch.Tensor, predictor: nn.Module) -> torch.Tensor:
    """Symmetric negative cosine with stop-gradient targets, mean over tokens and batch; range [-1, 1].

    ``x`` ``(B, P, D)`` patch tokens, ``y`` ``(B, P, D)`` text-conditioned patches."""
    px, py = predictor(x), predictor(y)
    return -0.5 * (F.cosine_similarity(px, y.detach(), dim=-1).mean()
                   + F.cosine_similarity(py, x.detach(), dim=-1).mean())


def intra_report_infonce(sentences: torch.Tensor, attended: torch.Tensor, mask: torch.Tensor,
                         logit_scale: torch.Tensor) -> torch.Tensor:
    """Sentence-side local loss: InfoNCE between each sentence and its image-attended counterpart, negatives only
    the other sentences of the same report, both directions averaged; mean over reports (a 1-sentence report
    contributes 0). ``sentences``/``attended`` ``(B, S, D)``, ``mask`` ``(B, S)``, ``logit_scale`` = exp(param)."""
    a = F.normalize(sentences, dim=-1)
    b = F.normalize(attended, dim=-1)
    valid_pair = mask[:, :, None] & mask[:, None, :]
    neg = torch.finfo(a.dtype).min
    logits_ba = (logit_scale * b @ a.transpose(1, 2)).masked_fill(~valid_pair, neg)
    logits_ab = (logit_scale * a @ b.transpose(1, 2)).masked_fill(~valid_pair, neg)
    diag = torch.arange(a.shape[1], device=a.device)
    per_row = 0.5 * (-(logits_ba.log_softmax(-1)[:, diag, diag]) - logits_ab.log_softmax(-1)[:, diag, diag])
    m = mask.to(per_row.dtype)
    per_report = (per_row * m).sum(1) / m.sum(1).clamp(min=1)
    return per_report.mean()


def cross_image_infonce(sentences: torch.Tensor, attended: torch.Tensor, mask: torch.Tensor,
                        same_text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """[ours] Image-side local loss: each sentence against its attended vectors over the batch's images, the
    positive its own image, negatives the other images (one direction). An image whose report carries the same
    sentence is no negative and is left out. Unlike :func:`intra_report_infonce` it cannot be met by a sentence->patch
    map that ignores the image.

    ``sentences`` ``(B, S, D)``, ``attended`` ``(B, S, B, D)`` (:meth:`LocalCrossAttention.sentences_over_images`),
    ``mask`` ``(B, S)``, ``same_text`` ``(B, S, B)`` bool (report ``c`` holds sentence ``[b, s]``);
    mean over valid sentences; 0 for a batch of one image."""
    b = sentences.shape[0]
    a = F.normalize(sentences, dim=-1)
    v = F.normalize(attended, dim=-1)
    logits = logit_scale * torch.einsum("bsd,bscd->bsc", a, v)
    own = torch.eye(b, dtype=torch.bool, device=sentences.device)[:, None, :].expand_as(same_text)
    logits = logits.masked_fill(same_text & ~own, torch.finfo(logits.dtype).min)
    target = torch.arange(b, device=sentences.device)[:, None].expand(mask.shape)
    per_sentence = F.cross_entropy(logits[mask], target[mask], reduction="none")
    return per_sentence.mean() if per_sentence.numel() else logits.sum() * 0.0


def rank_offset(local_batch: int) -> int:
    if dist.is_available() and dist.is_initialized():
        return local_batch * dist.get_rank()
    return 0


def global_clip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """CLIP InfoNCE between ``(B, D)`` image and report embeddings (L2-normalised), logits x ``logit_scale``
    (= exp(param), no clamp), symmetric cross-entropy averaged; other ranks' embeddings are negatives."""
    image = F.normalize(image, dim=-1)
    text = F.normalize(text, dim=-1)
    image_all, text_all = all_gather_with_grad(image), all_gather_with_grad(text)
    labels = torch.arange(image.shape[0], device=image.device) + rank_offset(image.shape[0])
    loss_i = F.cross_entropy(logit_scale * image @ text_all.t(), labels)
    loss_t = F.cross_entropy(logit_scale * text @ image_all.t(), labels)
    return 0.5 * (loss_i + loss_t)
