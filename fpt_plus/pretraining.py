"""Pre-training of the CPU-sized LPM on the synthetic texture source domain (``source_domain.py``), standing in
for the ImageNet-21k pre-training of the papers' ViT-B (FPT+ paper Sec. IV-A): dense supervision, one texture
class per patch token from the last block's output (plus an image-level texture-presence head on CLS), AdamW
with warm-up and cosine decay. Only the ViT is kept; the two heads are dropped.

The weights are written to ``data/pretrained/fpt_plus/<recipe hash>/lpm.safetensors`` (the hash covers the recipe
and the LPM geometry), with ``recipe.json`` (recipe, geometry, held-out token accuracy, wall time). ``reproduce.py``
builds them when ``model.pretrained`` names that file and it is missing.
"""

from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from common.rundir import resolve_path
from fpt_plus.engine import cosine_factor
from fpt_plus.models.lpm import build_vit
from fpt_plus.settings import LPMConfig, PretrainConfig
from fpt_plus.source_domain import NUM_TEXTURES, texture_batch

__all__ = ["GEOMETRY", "recipe_hash", "weights_path", "TexturePretrainer", "pretrain", "evaluate_tokens"]

PRETRAINED_ROOT = "data/pretrained/fpt_plus"
GEOMETRY = ("name", "img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "init_seed")
SOURCE_VERSION = 1  # bump when source_domain.py changes what it draws


def recipe_hash(recipe: PretrainConfig, lpm: LPMConfig) -> str:
    """12 hex digits of the recipe, the LPM geometry and the source-domain version."""
    key = {"recipe": asdict(recipe), "lpm": {k: getattr(lpm, k) for k in GEOMETRY}, "source": SOURCE_VERSION}
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def weights_path(recipe: PretrainConfig, lpm: LPMConfig) -> Path:
    """``data/pretrained/fpt_plus/<hash>/lpm.safetensors`` (relative to the repository root)."""
    return Path(PRETRAINED_ROOT) / recipe_hash(recipe, lpm) / "lpm.safetensors"


class TexturePretrainer(nn.Module):
    """ViT + token head (texture class per patch) + image head (texture presence from CLS)."""

    def __init__(self, vit: nn.Module, dim: int):
        super().__init__()
        self.vit = vit
        self.token_head = nn.Linear(dim, NUM_TEXTURES + 1)
        self.image_head = nn.Linear(dim, NUM_TEXTURES)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images ``(B, 3, S, S)`` -> token logits ``(B, n, T+1)``, image logits ``(B, T)``."""
        x = self.vit.forward_features(images)  # (B, 1 + n, D) after the final norm
        return self.token_head(x[:, 1:]), self.image_head(x[:, 0])


def _loss(model: TexturePretrainer, batch: tuple[torch.Tensor, ...], image_weight: float) -> torch.Tensor:
    images, tokens, present = batch
    token_logits, image_logits = model(images)
    token_loss = F.cross_entropy(token_logits.flatten(0, 1), tokens.flatten())
    return token_loss + image_weight * F.binary_cross_entropy_with_logits(image_logits, present)


@torch.no_grad()
def evaluate_tokens(model: TexturePretrainer, batch: tuple[torch.Tensor, ...]) -> dict[str, float]:
    """Token accuracy on a held-out batch, and the recall of textured tokens (mean over the textured classes)."""
    model.eval()
    images, tokens, _ = batch
    pred = model(images)[0].argmax(-1)
    recalls = [float((pred[tokens == c] == c).float().mean()) for c in range(1, NUM_TEXTURES + 1)
               if (tokens == c).any()]
    model.train()
    return {"token_accuracy": float((pred == tokens).float().mean()),
            "textured_token_recall": sum(recalls) / max(len(recalls), 1),
            "chance_accuracy": float((tokens == 0).float().mean())}


def pretrain(recipe: PretrainConfig, lpm: LPMConfig, out: Path | None = None, progress: bool = False
             ) -> dict[str, Any]:
    """Train, then write ``lpm.safetensors`` + ``recipe.json`` under ``out`` (default: the recipe's folder)."""
    from safetensors.torch import save_file
    from tqdm import tqdm

    out = resolve_path(out or weights_path(recipe, lpm))
    start = time.perf_counter()
    torch.manual_seed(recipe.seed)
    model = TexturePretrainer(build_vit(lpm, num_classes=0), lpm.embed_dim)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    warm = recipe.warmup_steps / recipe.steps
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: max(cosine_factor(step / recipe.steps, 1.0, warm), 1e-3))
    data = torch.Generator().manual_seed(recipe.seed)
    held_out = texture_batch(64, lpm.img_size, lpm.patch_size, torch.Generator().manual_seed(10_000 + recipe.seed))
    before = evaluate_tokens(model, held_out)
    draw = partial(texture_batch, recipe.batch_size, lpm.img_size, lpm.patch_size, data)
    # the next batch is drawn in a thread while this step trains (mostly single-threaded small ops that would
    # leave a core idle); one draw at a time from the same generator, so the batches are those of a plain loop
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(draw)
        for step in tqdm(range(recipe.steps), desc="pre-train LPM", disable=not progress):
            batch = pending.result()
            if step + 1 < recipe.steps:
                pending = pool.submit(draw)
            loss = _loss(model, batch, recipe.image_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
    report = {"recipe": asdict(recipe), "lpm": {k: getattr(lpm, k) for k in GEOMETRY},
              "final_loss": float(loss.detach()), "held_out_before": before,
              "held_out_after": evaluate_tokens(model, held_out),
              "wall_s": time.perf_counter() - start, "threads": torch.get_num_threads()}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    save_file({k: v.contiguous() for k, v in model.vit.state_dict().items()}, str(tmp))
    tmp.replace(out)
    (out.parent / "recipe.json").write_text(json.dumps(report, indent=2))
    return report
