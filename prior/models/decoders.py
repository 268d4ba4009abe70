"""Cross-modality conditional reconstruction of PRIOR (Sec. 3.4; official ``codes/prior/decoders/{image,sentence}.py``
and ``models/prior.py``: ``recon_image``, ``recon_report``, ``spg_loss``, ``matching_label``).

Image side: the patch tokens, channel-dropped by ``Dropout2d(0.5)``, are concatenated with the text-conditioned
patch features and decoded by up-blocks (nearest upsample, two Conv3x3-BN-ReLU) to the normalised input image (L1).
Report side: learnable queries go through a BERT decoder cross-attending to the patch tokens; the outputs are
Hungarian-matched (L1 cost) to the report's sentence prototypes and regressed to them (L1).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

__all__ = ["ImageDecoder", "ReportDecoder", "decoder_bert_config", "hungarian_match", "matched_outputs"]


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ImageDecoder(nn.Module):
    """``in_channels`` (2 x embed dim) -> 1 channel at ``output_size``; block i upsamples to
    ``output_size / 2**(blocks-1-i)`` and halves the channels (official: 1536 -> 48 over 14..224)."""

    def __init__(self, in_channels: int, output_size: int = 224, blocks: int = 5, dropout: float = 0.5,
                 out_channels: int = 1):
        super().__init__()
        self.dropout = nn.Dropout2d(dropout)
        self.sizes = [output_size // 2 ** (blocks - 1 - i) for i in range(blocks)]
        chans = [in_channels // 2**i for i in range(blocks + 1)]
        self.blocks = nn.ModuleList(nn.Sequential(_conv_bn_relu(chans[i], chans[i + 1]),
                                                  _conv_bn_relu(chans[i + 1], chans[i + 1])) for i in range(blocks))
        self.head = nn.Conv2d(chans[-1], out_channels, 3, padding=1)

    def forward(self, image_map: torch.Tensor, text_map: torch.Tensor) -> torch.Tensor:
        """``image_map``/``text_map`` ``(B, D, h, w)`` -> reconstruction ``(B, 1, S, S)``. ``text_map`` zeros =
        reconstruction without the report."""
        z = torch.cat([self.dropout(image_map), text_map], dim=1)
        for size, block in zip(self.sizes, self.blocks):
            z = block(F.interpolate(z, size=(size, size), mode="nearest"))
        return self.head(z)

    @staticmethod
    def loss(reconstruction: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """L1 to the (normalised) input, bilinearly resized to the reconstruction's size (official)."""
        if image.shape[-2:] != reconstruction.shape[-2:]:
            image = F.interpolate(image, size=reconstruction.shape[-2:], mode="bilinear", align_corners=True)
        return F.l1_loss(reconstruction, image)


def decoder_bert_config(hidden: int, layers: int = 8, heads: int = 12, intermediate: int = 3072,
                        vocab_size: int = 28996):
    """The report decoder's BertConfig: the text encoder's geometry with ``layers`` layers, decoder with
    cross-attention (official: Bio_ClinicalBERT's config with 8 layers)."""
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                      intermediate_size=intermediate, max_position_embeddings=512, is_decoder=True,
                      add_cross_attention=True)


def _bert_decoder_class():
    from transformers import BertModel

    class _BertDecoder(BertModel):
        """BertModel whose query self-attention is bidirectional unless ``causal``."""

        causal = True

        def _create_attention_masks(self, *args, **kwargs):
            # The hook's arguments vary across transformers releases (5.x added ``position_ids``): pass them on
            # untouched. No mask at all lets SDPA attend bidirectionally (``is_causal`` is cleared below).
            if self.causal:
                return super()._create_attention_masks(*args, **kwargs)
            return None, None

    return _BertDecoder


class ReportDecoder(nn.Module):
    """``num_queries`` learnable queries -> BERT decoder (cross-attention to patch tokens) -> ``(B, Q, D)``.

    HF BERT with ``is_decoder=True`` builds a causal mask over the queries (the official behaviour, although its
    comment says "no causal mask"); ``causal=False`` (default) makes the query self-attention bidirectional."""

    def __init__(self, config, num_queries: int = 16, causal: bool = False):
        super().__init__()
        self.bert = _bert_decoder_class()(config, add_pooling_layer=False)
        self.bert.causal = causal
        for module in self.bert.modules():
            if module.__class__.__name__ == "BertSelfAttention":  # SDPA reads this flag when no mask is given
                module.is_causal = causal
        self.queries = nn.Parameter(torch.randn(1, num_queries, config.hidden_size))
        self.causal = causal

    def forward(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """``image_tokens`` ``(B, P, D)`` -> ``(B, Q, D)``."""
        queries = self.queries.expand(image_tokens.shape[0], -1, -1)
        return self.bert(inputs_embeds=queries, encoder_hidden_states=image_tokens,
                         use_cache=False).last_hidden_state


def hungarian_match(outputs: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    """Bijection of the Q outputs onto the Q (zero-padded) targets minimising the L1 ``cdist`` (official
    ``matching_label``). Returns ``perm`` with ``perm[k]`` = the output assigned to target k."""
    cost = torch.cdist(outputs.detach().float(), targets.detach().float(), p=1).cpu().numpy()
    rows, cols = linear_sum_assignment(cost)
    perm = np.empty(len(cols), dtype=np.int64)
    perm[cols] = rows
    return perm


def matched_outputs(outputs: torch.Tensor, targets: torch.Tensor, official: bool = False) -> torch.Tensor:
    """``outputs``/``targets`` ``(B, Q, D)`` -> outputs reordered so that slot k is matched to target k.

    ``official`` reproduces the released ``logit[inds[1]]``, which indexes the outputs by the assigned target
    columns: it applies the inverse permutation (equal to the matching only when that is an involution)."""
    rows = []
    for out, tgt in zip(outputs, targets):
        if official:
            _, cols = linear_sum_assignment(torch.cdist(out.detach().float(), tgt.detach().float(), p=1).cpu().numpy())
            rows.append(out[torch.as_tensor(cols, device=out.device)])
        else:
            rows.append(out[torch.as_tensor(hungarian_match(out, tgt), device=out.device)])
    return torch.stack(rows)
