"""Label-free ways of combining SAM's box answers with the SSL segmenter's own mask into a pseudo-label (OURS: the
abstract says only that SAM's predictions are refined into "higher-quality pseudo-labels").

All functions take per-slice probabilities ``(N, H, W)`` in [0, 1] and return probabilities of the same shape, so
the selection (:mod:`aslseg.selection`) scores them exactly like the adapter's output.

- :func:`gated_fusion`: per SSL component (>= ``min_area``), SAM's answer inside that component's box replaces
  the component only where the two agree (Dice >= ``min_dice``); elsewhere the SSL component is kept. SAM can then
  correct the extent of a lesion the SSL model found, but cannot invent or erase one (the "keep SAM only where it
  agrees" rule of SAM-assisted pseudo-labelling).
- :func:`mean_fusion`: the mean of the two probabilities (an ensemble of the domain and the general model).
- :func:`ssl_mask_prompt_probs`: SAM prompted with each SSL component's box *and* the component itself as the
  dense mask prompt, instead of the box's ellipse (SAM accepts a low-resolution mask as a prompt).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from aslseg.prompts import boxes_from_mask, components
from aslseg.sam_model import SAMSegmenter
from common.metrics import mask_dice

__all__ = ["gated_fusion", "mean_fusion", "ssl_mask_prompt_probs"]


def gated_fusion(ssl_masks: np.ndarray, sam_probs: np.ndarray, min_area: int, margin: int, min_dice: float
                 ) -> np.ndarray:
    """``ssl_masks (N, H, W)`` bool (components already filtered), ``sam_probs (N, H, W)`` -> fused 0/1 float32."""
    out = np.zeros(ssl_masks.shape, np.float32)
    for i, mask in enumerate(ssl_masks):
        for comp in components(mask, min_area):
            x0, y0, x1, y1 = boxes_from_mask(comp, 0, margin)[0].astype(int)
            inside = np.zeros(comp.shape, bool)
            inside[y0:y1, x0:x1] = True
            sam_comp = (sam_probs[i] > 0.5) & inside
            out[i][sam_comp if mask_dice(sam_comp, comp, empty=0.0) >= min_dice else comp] = 1.0
    return out


def mean_fusion(ssl_probs: np.ndarray, sam_probs: np.ndarray) -> np.ndarray:
    """Pixel-wise mean of the two probabilities (slices without a box: SAM says 0, so only a confident SSL pixel
    survives the 0.5 threshold)."""
    return ((np.asarray(ssl_probs, np.float32) + np.asarray(sam_probs, np.float32)) / 2).astype(np.float32)


@torch.no_grad()
def ssl_mask_prompt_probs(sam: SAMSegmenter, embeddings: torch.Tensor, ssl_masks: np.ndarray, min_area: int,
                          margin: int) -> np.ndarray:
    """SAM probability per slice, one decoder call per SSL component with its box and the component (+-1, resized
    to the prompt encoder's mask size) as the dense prompt; max over components; ``embeddings (N, C, g, g)``."""
    sam.eval()
    n, h, w = ssl_masks.shape
    out = np.zeros((n, h, w), np.float32)
    grid = sam.sam.prompt_encoder.image_embedding_size
    size = (4 * grid[0], 4 * grid[1])
    scale = torch.tensor([sam.img_size / w, sam.img_size / h])
    device = sam.mean.device
    for i in range(n):
        comps = components(ssl_masks[i], min_area)
        if not comps:
            continue
        boxes = torch.as_tensor(np.stack([boxes_from_mask(c, 0, margin)[0] for c in comps]))
        dense_in = torch.from_numpy(np.stack(comps).astype(np.float32) * 2 - 1)[:, None]
        dense_in = F.interpolate(dense_in, size=size, mode="bilinear", align_corners=False).to(device)
        sparse, dense = sam.sam.prompt_encoder(points=None, boxes=(boxes * scale.repeat(2)).to(device),
                                               masks=dense_in)
        logits, _ = sam.sam.mask_decoder(image_embeddings=embeddings[i:i + 1].to(device),
                                         image_pe=sam.sam.prompt_encoder.get_dense_pe(),
                                         sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                         multimask_output=False)
        logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        out[i] = torch.sigmoid(logits[:, 0]).amax(0).cpu().numpy()
    return out
