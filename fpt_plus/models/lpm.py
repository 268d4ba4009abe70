"""Frozen large pre-trained model (LPM) with important-token selection (FPT+ paper Sec. III-B; official
modules/frozen_vit.py, important_token_selection).

The LPM is a timm ``VisionTransformer`` built from explicit dimensions (no hub access). At each *tapped* block the
block's own key and value projections ``K = W_k LN1(x) + b_k`` and ``V = W_v LN1(x) + b_v`` of shape
``(B, H, N, d)`` are reduced to the ``k = floor(token_ratio * N)`` most important tokens per head:

- ``global``: score of key token j = mean over all queries i of ``softmax(q_i k^T / sqrt(d))_j``;
- ``class_token``: score of key token j = attention of the CLS query on j.

The attention probabilities are only formed in tapped blocks, over query chunks, so the ``(B, H, N, N)`` matrix is
never materialised (12.9 GB per tapped layer at 2048^2); untapped blocks run timm's fused attention or, by
``model.lpm.attention`` (default for a compiled LPM on CPU), the same chunked softmax without the token scores.
Blocks after the last tapped block are never run.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from common.runtime import bf16_support, compile_inference
from fpt_plus.settings import LPMConfig

__all__ = ["native_bf16", "resolve_lpm_amp", "untapped_attention", "build_vit", "FrozenLPM", "compiled_lpm",
           "num_tokens", "num_selected", "select_tokens", "chunked_attention", "reference_frozen_params", "auto_chunk"]


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matrix products run on native units, as torch reports at run time
    (:func:`common.runtime.bf16_support`); oneDNN also runs bf16 on AVX-512 CPUs that only emulate it, where it is
    slower than fp32, so ``model.lpm.amp=auto`` stays fp32 there."""
    return bf16_support(device) == "native"


def resolve_lpm_amp(mode: str, device: torch.device) -> str:
    """``model.lpm.amp`` at run time: ``off`` / ``bf16`` as given, ``auto`` = bf16 where :func:`native_bf16`."""
    if mode == "auto":
        return "bf16" if native_bf16(device) else "off"
    if mode not in ("off", "bf16"):
        raise ValueError(f"model.lpm.amp must be off, bf16 or auto, got {mode!r}")
    return mode


def num_tokens(img_size: int, patch_size: int) -> int:
    """N = (S / p)^2 + 1 (patch tokens plus CLS)."""
    return (img_size // patch_size) ** 2 + 1


def num_selected(img_size: int, patch_size: int, token_ratio: float) -> int:
    """k = floor(token_ratio * N), N including CLS (k = 205 at 512^2 with p = 16)."""
    return max(1, int(math.floor(num_tokens(img_size, patch_size) * token_ratio + 1e-9)))


def build_vit(cfg: LPMConfig, num_classes: int = 0, img_size: int | None = None, pretrained: str = "none"
              ) -> nn.Module:
    """A timm ViT with the LPM's dimensions at ``img_size`` (default ``cfg.img_size``); weights from ``pretrained``
    (``model.pretrained``: none = random with ``cfg.init_seed``, hub, or a file).

    With a weight file, timm's checkpoint filter interpolates the position embeddings to the requested grid.
    """
    from common.rundir import resolve_path
    from common.weights import PretrainedWeightsError, create_timm_model

    if pretrained not in ("none", "hub"):
        path = resolve_path(pretrained)  # relative paths are taken from the repository root, like data/ and runs/
        if not path.is_file() and "pretrained/fpt_plus" in path.as_posix():
            raise PretrainedWeightsError(f"model.pretrained={pretrained}: the pre-trained CPU LPM is missing; build "
                                         f"it with `python pretrain_lpm.py` (reproduce.py does it when missing) or "
                                         f"set model.pretrained=none for a random LPM")
        pretrained = str(path)
    kwargs = dict(img_size=img_size or cfg.img_size, patch_size=cfg.patch_size, embed_dim=cfg.embed_dim,
                  depth=cfg.depth, num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio, qkv_bias=True,
                  num_classes=num_classes, global_pool="token")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.init_seed)  # a random LPM is the same network in preload, online and every baseline
        return create_timm_model(cfg.name, pretrained=pretrained, config_key="model.pretrained", **kwargs)


def reference_frozen_params(cfg: LPMConfig) -> int:
    """Frozen parameter count the official code divides by: the LPM at its pre-training grid plus a 1000-class head.

    ViT-B/16-384 gives 86,859,496 (the denominator behind the official README's 1.03 %); the learnable ratio is
    learnable / (learnable + this).
    """
    d, p = cfg.embed_dim, cfg.patch_size
    hidden = int(d * cfg.mlp_ratio)
    per_block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * hidden + hidden) + (hidden * d + d)
    embeddings = (3 * p * p * d + d) + d + num_tokens(cfg.pretrain_img_size, p) * d
    return cfg.depth * per_block + embeddings + 2 * d + (d * 1000 + 1000)


def auto_chunk(batch: int, heads: int, n: int, budget_bytes: int = 256 * 2**20, element_size: int = 4) -> int:
    """Largest query-chunk size whose ``(B, H, chunk, N)`` probabilities fit in ``budget_bytes``."""
    return max(1, min(n, budget_bytes // max(1, batch * heads * n * element_size)))


def chunked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk: int, need_output: bool = True,
                      need_received: bool = True) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Softmax attention over query chunks, accumulating the attention each key receives.

    Args: q, k, v ``(B, H, N, d)``. Returns ``(out (B, H, N, d) or None, received (B, H, N) or None)`` where
    ``received[..., j] = mean_i softmax(q_i k^T / sqrt(d))_j``; never holds more than ``(B, H, chunk, N)``.
    """
    scale = q.shape[-1] ** -0.5
    n = q.shape[-2]
    received = torch.zeros(k.shape[:-1], dtype=torch.float32, device=k.device) if need_received else None
    outs = []
    kt = k.transpose(-2, -1)
    for start in range(0, n, chunk):
        probs = ((q[..., start:start + chunk, :] * scale) @ kt).softmax(dim=-1)
        if received is not None:
            received += probs.sum(dim=-2, dtype=torch.float32)
        if need_output:
            outs.append(probs @ v)
    out = torch.cat(outs, dim=-2) if need_output else None
    return out, (received / n if received is not None else None)


def untapped_attention(mode: str, device: torch.device, compiled: bool) -> str:
    """``model.lpm.attention`` at run time: the attention kernel of untapped blocks. ``fused`` = timm's block
    (``scaled_dot_product_attention``), ``chunked`` = the explicit chunked softmax of the tapped blocks (bounded
    memory, plain batched matmuls), ``auto`` = chunked for a compiled LPM on CPU (inductor fuses the softmax
    between oneDNN's batched matmuls, which then beat the CPU flash kernel: the README's bench table), else fused."""
    if mode == "auto":
        return "chunked" if compiled and device.type == "cpu" else "fused"
    if mode not in ("fused", "chunked"):
        raise ValueError(f"model.lpm.attention must be auto, fused or chunked, got {mode!r}")
    return mode


def select_tokens(scores: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_keep: int
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep the top-``num_keep`` tokens per head by ``scores`` ``(B, H, N)``, in descending score order.

    Returns ``(k_sel, v_sel, index)`` with shapes ``(B, H, num_keep, d)``, ``(B, H, num_keep, d)``, ``(B, H, k)``.
    """
    index = scores.topk(num_keep, dim=-1, sorted=True).indices
    gather = index.unsqueeze(-1).expand(-1, -1, -1, k.shape[-1])
    return k.gather(2, gather), v.gather(2, gather), index


class FrozenLPM(nn.Module):
    """Frozen ViT returning the selected keys/values of the tapped blocks.

    ``forward(images (B, 3, S, S)) -> (keys, values)``, each ``(L, B, H, k, d)`` with L = ``len(layers)``.
    The module is always in eval mode and holds no trainable parameter.
    """

    def __init__(self, cfg: LPMConfig, layers: list[int], token_ratio: float = 0.2,
                 token_imp: str = "global", vit: nn.Module | None = None, pretrained: str = "none"):
        super().__init__()
        if token_imp not in ("global", "class_token"):
            raise ValueError(f"model.token_imp must be global or class_token, got {token_imp!r}")
        self.cfg = cfg
        self.layers = sorted(int(i) for i in layers)
        if self.layers != list(layers):
            raise ValueError(f"tapped layers must be given in increasing order, got {layers}")
        self.token_ratio = token_ratio
        self.token_imp = token_imp
        self.num_keep = num_selected(cfg.img_size, cfg.patch_size, token_ratio)
        self.vit = vit if vit is not None else build_vit(cfg, num_classes=0, pretrained=pretrained)
        self.vit.requires_grad_(False)
        self.vit.eval()

    def train(self, mode: bool = True) -> FrozenLPM:  # the LPM stays in eval mode whatever the parent does
        super().train(False)
        return self

    def _tapped_block(self, blk: nn.Module, x: torch.Tensor, need_output: bool
                      ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """One timm block with explicit attention; returns ``(x_next or None, k_sel, v_sel)``."""
        attn = blk.attn
        q, k, v = self._qkv(blk, x)
        if self.token_imp == "global":
            out, scores = chunked_attention(q, k, v, self._chunk(q), need_output=need_output)
        else:
            scale = attn.head_dim ** -0.5
            scores = ((q[..., :1, :] * scale) @ k.transpose(-2, -1)).softmax(dim=-1)[..., 0, :]
            out = F.scaled_dot_product_attention(q, k, v) if need_output else None
        k_sel, v_sel, _ = select_tokens(scores, k, v, self.num_keep)
        if not need_output:
            return None, k_sel, v_sel
        return self._finish_block(blk, x, out), k_sel, v_sel

    def _chunked_block(self, blk: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """One untapped timm block with the chunked explicit softmax instead of the fused kernel."""
        q, k, v = self._qkv(blk, x)
        out, _ = chunked_attention(q, k, v, self._chunk(q), need_received=False)
        return self._finish_block(blk, x, out)

    @staticmethod
    def _qkv(blk: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        attn = blk.attn
        b, n, _ = x.shape
        qkv = attn.qkv(blk.norm1(x)).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        return attn.q_norm(q), attn.k_norm(k), v

    def _chunk(self, q: torch.Tensor) -> int:
        b, h, n, _ = q.shape
        return self.cfg.attn_chunk or auto_chunk(b, h, n, element_size=q.element_size())

    @staticmethod
    def _finish_block(blk: nn.Module, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        out = blk.attn.proj(blk.attn.norm(out.transpose(1, 2).reshape(b, n, c)))
        x = x + blk.ls1(out)
        return x + blk.ls2(blk.mlp(blk.norm2(x)))

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        vit = self.vit
        x = vit.norm_pre(vit._pos_embed(vit.patch_embed(images)))
        keys, values = [], []
        last = self.layers[-1]
        tapped = set(self.layers)
        chunked = untapped_attention(self.cfg.attention, images.device, self.cfg.compile != "off") == "chunked"
        for i, blk in enumerate(vit.blocks[: last + 1]):
            if i in tapped:
                x, k_sel, v_sel = self._tapped_block(blk, x, need_output=i != last)
                keys.append(k_sel)
                values.append(v_sel)
            else:
                x = self._chunked_block(blk, x) if chunked else blk(x)
        return torch.stack(keys), torch.stack(values)


def compiled_lpm(lpm: FrozenLPM, mode: str) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """``model.lpm.compile``: ``off`` = ``lpm`` itself, ``on`` = ``torch.compile(lpm)``, ``freeze`` = compiled with
    inductor's freezing, which treats the frozen weights as constants (folded into the graph and, on CPU, pre-packed
    for oneDNN). The LPM never trains, so freezing changes no result; compilation happens at the first call."""
    if mode == "off":
        return lpm
    if mode not in ("on", "freeze"):
        raise ValueError(f"model.lpm.compile must be off, on or freeze, got {mode!r}")
    return compile_inference(lpm, freeze=mode == "freeze")
