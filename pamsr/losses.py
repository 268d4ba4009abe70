"""Training losses (official ``src/loss/__init__.py::RL1`` and ``src/loss/rec.py``).

- L1 between SR and HR patches in [0, 1].
- Scanning-consistency ("rec") loss, weight 0.5 in the official experiments: SR and HR patches are scattered into
  a zero Cartesian canvas through the polar-to-Cartesian index map (maximum wins), the Sobel gradient magnitude
  ``sqrt(Gv^2 + Gh^2 + 1e-6)`` of both canvases is compared with L1, and the result is multiplied by
  ``canvas_area / patch_area`` to undo the dilution by empty canvas pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pamsr.geometry import rec_index_map

__all__ = ["scatter_to_cartesian", "sobel_magnitude", "RecLoss", "SRLoss"]


def scatter_to_cartesian(patches: torch.Tensor, corners: torch.Tensor, index_map: torch.Tensor, canvas: int
                         ) -> torch.Tensor:
    """``(B, 1, h, w)`` polar patches at HR ``corners`` ``(B, 2)`` -> ``(B, 1, canvas, canvas)`` Cartesian canvases."""
    b, _, h, w = patches.shape
    rows = corners[:, 0, None] + torch.arange(h, device=patches.device)[None]
    cols = corners[:, 1, None] + torch.arange(w, device=patches.device)[None]
    idx = index_map.to(patches.device)[rows[:, :, None], cols[:, None, :]].reshape(b, -1)
    flat = patches.new_zeros(b, canvas * canvas + 1)
    flat = flat.scatter_reduce(1, idx, patches.reshape(b, -1), reduce="amax", include_self=False)
    return flat[:, :-1].reshape(b, 1, canvas, canvas)


def sobel_magnitude(image: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` -> Sobel gradient magnitude ``sqrt(Gv^2 + Gh^2 + 1e-6)`` of the same shape."""
    kx = image.new_tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])[None, None]
    gx = F.conv2d(image, kx, padding=1)
    gy = F.conv2d(image, kx.transpose(-1, -2), padding=1)
    return torch.sqrt(gx * gx + gy * gy + 1e-6)


class RecLoss(nn.Module):
    """Polar-to-Cartesian gradient loss for patches of a padded ``(n_angles + 2 pad, width + 2 pad)`` polar grid."""

    def __init__(self, n_angles: int, width: int, pad: int):
        super().__init__()
        self.canvas = width + 2 * pad
        self.register_buffer("index_map", rec_index_map(n_angles, width, pad), persistent=False)

    def forward(self, sr: torch.Tensor, hr: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
        c_sr = scatter_to_cartesian(sr, corners, self.index_map, self.canvas)
        c_hr = scatter_to_cartesian(hr, corners, self.index_map, self.canvas)
        loss = F.l1_loss(sobel_magnitude(c_sr), sobel_magnitude(c_hr))
        return loss * (self.canvas ** 2) / (sr.shape[-2] * sr.shape[-1])


class SRLoss(nn.Module):
    """``l1 * L1 + rec * RecLoss`` (``rec`` needs the polar geometry; pass ``rec_loss=None`` when ``rec == 0``)."""

    def __init__(self, l1: float = 1.0, rec: float = 0.0, rec_loss: RecLoss | None = None):
        super().__init__()
        if rec > 0 and rec_loss is None:
            raise ValueError("loss.rec > 0 needs the polar geometry (RecLoss)")
        self.l1, self.rec, self.rec_loss = l1, rec, rec_loss

    def forward(self, sr: torch.Tensor, hr: torch.Tensor, corners: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, dict[str, float]]:
        parts = {"l1": F.l1_loss(sr, hr)}
        if self.rec > 0:
            parts["rec"] = self.rec_loss(sr, hr, corners)
        total = self.l1 * parts["l1"] + self.rec * parts.get("rec", 0.0)
        return total, {k: float(v.detach()) for k, v in parts.items()}
