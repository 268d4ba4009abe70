"""SPMix mixing rule and the mixing baselines (paper Sec. II-B; released ``main_isic.py`` mixing step).

SPMix, per patch i of a ``g x g`` grid of ``p``-pixel patches:

    s_i = 0.5 + 0.5 * minmax_i(avgpool_p(saliency))            (patch score, in [0.5, 1])
    r_i = min(alpha, max(s_dom,i, s_ctx,i))                     (mixing ratio, in [0.5, alpha])
    z_i = r_i * z_dom,i + (1 - r_i) * z_ctx,i                    (token level, hybrid backbone; pixel level for CNNs)

and the mixed sample keeps the *hard* label of the dominant image (no label mixing). Which batch is dominant is the
label-rule switch ``dominant``: ``balanced`` (paper: the class-balanced, mostly tail, image dominates and the mixed
image is a new tail image) or ``instance`` (the released code: the instance-sampled image dominates).

Baselines (each one small function; targets are soft ``(B, C)`` label distributions):
Mixup (Zhang et al. 2018), CutMix (Yun et al. 2019), SaliencyMix (Uddin et al. 2021, box centred at the saliency
peak), CMO (Park et al. 2022, CutMix of a minority-sampled patch onto an instance-sampled background).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

DOMINANT_RULES = ("balanced", "instance")


# --------------------------------------------------------------------------------------------- SPMix
def patch_scores(saliency: torch.Tensor, patch: int, tie_noise: float = 0.5,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-patch saliency scores.

    saliency: ``(B, H, W)`` or ``(B, 1, H, W)``, any affine scale (z-normalised per image first).
    Returns ``(B, (H/p) * (W/p))`` in [0.5, 1] (row-major patch order = token order): the per-image min patch
    maps to 0.5 and the max to 1. ``tie_noise`` adds uniform noise in ``[-tie_noise, tie_noise)`` to the
    z-normalised map before pooling, as the released code does to break ties.
    """
    sal = saliency if saliency.dim() == 4 else saliency.unsqueeze(1)
    if sal.shape[1] != 1:
        raise ValueError(f"saliency must have one channel, got shape {tuple(saliency.shape)}")
    B, _, H, W = sal.shape
    if H % patch or W % patch:
        raise ValueError(f"saliency size {H}x{W} is not a multiple of the patch size {patch}")
    sal = sal.float()
    mean = sal.mean(dim=(1, 2, 3), keepdim=True)
    std = sal.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    sal = (sal - mean) / std
    if tie_noise > 0:
        noise = torch.rand(sal.shape, generator=generator, device="cpu").to(sal.device)
        sal = sal + (2 * noise - 1) * tie_noise
    pooled = F.avg_pool2d(sal, kernel_size=patch, stride=patch).flatten(1)
    lo = pooled.min(dim=1, keepdim=True).values
    hi = pooled.max(dim=1, keepdim=True).values
    norm = (pooled - lo) / (hi - lo).clamp_min(1e-12)
    return 0.5 + 0.5 * norm


def mixing_ratio(score_dom: torch.Tensor, score_ctx: torch.Tensor, alpha: float = 0.8) -> torch.Tensor:
    """``r = min(alpha, max(s_dom, s_ctx))`` elementwise; ``(B, N)`` -> ``(B, N)`` in [0.5, alpha]."""
    if not 0.5 <= alpha <= 1.0:
        raise ValueError(f"spmix.alpha must lie in [0.5, 1] so that the dominant image keeps >= 50 %, got {alpha}")
    return torch.clamp(torch.maximum(score_dom, score_ctx), max=alpha)


def mix_tokens(tokens_dom: torch.Tensor, tokens_ctx: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """Token-level mix: ``(B, N, D)``, ``(B, N, D)``, ratio ``(B, N)`` -> ``(B, N, D)`` (ratio broadcast over D)."""
    if tokens_dom.shape != tokens_ctx.shape or ratio.shape != tokens_dom.shape[:2]:
        raise ValueError(f"token shapes {tuple(tokens_dom.shape)}/{tuple(tokens_ctx.shape)} and ratio "
                         f"{tuple(ratio.shape)} do not match (B, N, D)/(B, N)")
    r = ratio.to(tokens_dom.dtype).unsqueeze(-1)
    return r * tokens_dom + (1 - r) * tokens_ctx


def ratio_map(ratio: torch.Tensor, grid: tuple[int, int], patch: int) -> torch.Tensor:
    """Patch ratios ``(B, gh*gw)`` -> pixel map ``(B, 1, gh*p, gw*p)`` (each patch's ratio on its pixels)."""
    B = ratio.shape[0]
    r = ratio.reshape(B, 1, grid[0], grid[1])
    return r.repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)


def mix_pixels(x_dom: torch.Tensor, x_ctx: torch.Tensor, ratio: torch.Tensor, patch: int) -> torch.Tensor:
    """Pixel/patch-level mix for CNN backbones.

    images ``(B, 3, H, W)`` x2, ratio ``(B, (H/p)(W/p))`` -> ``(B, 3, H, W)``.
    """
    H, W = x_dom.shape[-2:]
    r = ratio_map(ratio, (H // patch, W // patch), patch).to(x_dom.dtype)
    return r * x_dom + (1 - r) * x_ctx


@dataclass
class SPMixPair:
    """The two batches of one SPMix step, already ordered: ``dom`` supplies the label."""

    x_dom: torch.Tensor          # (B, 3, H, W)
    sal_dom: torch.Tensor        # (B, 1, H, W)
    y_dom: torch.Tensor          # (B,)
    x_ctx: torch.Tensor
    sal_ctx: torch.Tensor
    y_ctx: torch.Tensor


def order_pair(instance: tuple[torch.Tensor, ...], balanced: tuple[torch.Tensor, ...], dominant: str) -> SPMixPair:
    """Label-rule switch. ``instance``/``balanced`` are ``(x, sal, y)`` batches from the two samplers.

    ``balanced`` (paper): the class-balanced image dominates; ``instance`` (released code): the instance image does.
    The mixed sample's label is always ``y_dom`` (hard label).
    """
    if dominant not in DOMINANT_RULES:
        raise ValueError(f"spmix.dominant={dominant!r} is unknown; use one of {DOMINANT_RULES}")
    dom, ctx = (balanced, instance) if dominant == "balanced" else (instance, balanced)
    n = min(dom[0].shape[0], ctx[0].shape[0])
    return SPMixPair(dom[0][:n], dom[1][:n], dom[2][:n], ctx[0][:n], ctx[1][:n], ctx[2][:n])


# --------------------------------------------------------------------------------------------- baselines
def one_hot(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(B,)`` int -> ``(B, C)`` float."""
    return F.one_hot(y.long(), num_classes).float()


def _beta(alpha: float, rng: np.random.Generator) -> float:
    return float(rng.beta(alpha, alpha)) if alpha > 0 else 1.0


def random_box(H: int, W: int, lam: float, rng: np.random.Generator,
               center: tuple[int, int] | None = None) -> tuple[int, int, int, int]:
    """CutMix box of area ``(1 - lam) H W`` (before clipping) at ``center`` (row, col) or uniform.

    Returns (y0, y1, x0, x1).
    """
    cut = np.sqrt(1.0 - lam)
    ch, cw = int(H * cut), int(W * cut)
    cy, cx = center if center is not None else (int(rng.integers(H)), int(rng.integers(W)))
    y0, y1 = np.clip(cy - ch // 2, 0, H), np.clip(cy + ch // 2, 0, H)
    x0, x1 = np.clip(cx - cw // 2, 0, W), np.clip(cx + cw // 2, 0, W)
    return int(y0), int(y1), int(x0), int(x1)


def mixup(x: torch.Tensor, y: torch.Tensor, num_classes: int, alpha: float, rng: np.random.Generator
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup: ``x (B,3,H,W)``, ``y (B,)`` -> mixed images and soft targets ``(B, C)``; lam ~ Beta(alpha, alpha)."""
    lam = _beta(alpha, rng)
    perm = torch.from_numpy(rng.permutation(x.shape[0])).to(x.device)
    t = one_hot(y, num_classes)
    return lam * x + (1 - lam) * x[perm], lam * t + (1 - lam) * t[perm]


def _paste_boxes(x_bg: torch.Tensor, t_bg: torch.Tensor, x_fg: torch.Tensor, t_fg: torch.Tensor,
                 boxes: list[tuple[int, int, int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste ``x_fg[i]`` inside ``boxes[i]`` onto ``x_bg[i]``; targets mixed by the exact pasted area."""
    out = x_bg.clone()
    H, W = x_bg.shape[-2:]
    area = torch.empty(x_bg.shape[0], 1, device=x_bg.device)
    for i, (y0, y1, x0, x1) in enumerate(boxes):
        out[i, :, y0:y1, x0:x1] = x_fg[i, :, y0:y1, x0:x1]
        area[i] = (y1 - y0) * (x1 - x0) / (H * W)
    return out, (1 - area) * t_bg + area * t_fg


def cutmix(x: torch.Tensor, y: torch.Tensor, num_classes: int, alpha: float, rng: np.random.Generator
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """CutMix: random box of area ~(1 - lam) from a permuted partner; targets by pasted area."""
    lam = _beta(alpha, rng)
    perm = torch.from_numpy(rng.permutation(x.shape[0])).to(x.device)
    H, W = x.shape[-2:]
    boxes = [random_box(H, W, lam, rng)] * x.shape[0]
    t = one_hot(y, num_classes)
    return _paste_boxes(x, t, x[perm], t[perm], boxes)


def saliency_peak(sal: torch.Tensor) -> list[tuple[int, int]]:
    """``(B, 1, H, W)`` -> argmax (row, col) per image."""
    flat = sal.flatten(1).argmax(dim=1)
    W = sal.shape[-1]
    return [(int(i) // W, int(i) % W) for i in flat]


def saliencymix(x: torch.Tensor, sal: torch.Tensor, y: torch.Tensor, num_classes: int, alpha: float,
                rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """SaliencyMix: box centred at the source image's saliency peak, pasted at the same place of the target.

    Per-image boxes (the paper); the official code reuses the first source's box for the whole batch
    (afm-shahab-uddin/SaliencyMix#2).
    """
    lam = _beta(alpha, rng)
    perm = torch.from_numpy(rng.permutation(x.shape[0])).to(x.device)
    H, W = x.shape[-2:]
    boxes = [random_box(H, W, lam, rng, center=c) for c in saliency_peak(sal[perm])]
    t = one_hot(y, num_classes)
    return _paste_boxes(x, t, x[perm], t[perm], boxes)


def cmo(x_inst: torch.Tensor, y_inst: torch.Tensor, x_bal: torch.Tensor, y_bal: torch.Tensor, num_classes: int,
        alpha: float, prob: float, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """CMO: with probability ``prob`` paste a CutMix box of the minority-sampled image onto the instance image."""
    t_inst = one_hot(y_inst, num_classes)
    if rng.random() >= prob:
        return x_inst, t_inst
    n = min(x_inst.shape[0], x_bal.shape[0])
    lam = _beta(alpha, rng)
    H, W = x_inst.shape[-2:]
    boxes = [random_box(H, W, lam, rng)] * n
    return _paste_boxes(x_inst[:n], t_inst[:n], x_bal[:n], one_hot(y_bal[:n], num_classes), boxes)
