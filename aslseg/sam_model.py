"""Stage 2 of ASLseg: SAM, fine-tuned on the labelled slices and prompted with boxes from the SSL segmenter.

Built on ``segment-anything`` 1.0: ``sam_model_registry`` for ``vit_b|vit_l|vit_h`` (always with
``checkpoint=None``: the package's loader reads with ``torch.load`` onto the saving device; we load through
``common.weights.load_pretrained(strict=True)`` on the CPU instead), and the modeling classes for ``tiny``, the CPU
stand-in (img 128, patch 8, width 128, depth 4, prompt dim 128: 1,779,392 parameters; its 16 x 16 embedding grid
gives 64 x 64 mask logits, the CPU slice size).

- :func:`resize_sam` adapts a 1024-grid SAM to another ``img_size`` after loading: the absolute ``pos_embed``
  (bilinear) and the relative position tables of the global-attention blocks only (ViT-B: 2, 5, 8, 11; linear);
  windowed blocks keep their 14 x 14 window tables (SAMed resizes the same tensors for its 512 input).
- Input scaling per checkpoint: SAM's ImageNet mean/std on 0-255 (``imagenet``) or [0, 1] as-is (``unit``, MedSAM).
- Fine-tuning modes (``sam.finetune``): ``decoder`` (MedSAM's first release: both encoders frozen, image
  embeddings cached; 4,058,340 trainable on ViT-B), ``lora`` (SAMed: rank-4 LoRA on the q and v slices of every
  fused ``qkv``, B zero-initialised, plus prompt encoder and decoder: 147,456 + 6,220 + 4,058,340 = 4,212,016 on
  ViT-B; a module of our own, as ``peft`` adapts q, k, v jointly), ``full`` (MedSAM: image encoder + decoder).
- Package gotchas handled here: ``Sam.forward`` is ``@torch.no_grad()`` (we call the three parts directly); the
  decoder repeats the image embedding once per prompt, so B images x 1 box fails: :meth:`SAMSegmenter.decode` is
  one image x N boxes and training loops over images; boxes are XYXY with x = column.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything import sam_model_registry
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from aslseg.prompts import box_prior
from aslseg.settings import SAMConfig
from common.weights import PretrainedWeightsError, load_pretrained

__all__ = ["VIT_B_PARAMS", "TINY_PARAMS", "LORA_VIT_B_PARAMS", "NATIVE_IMG_SIZE", "GLOBAL_BLOCKS", "build_tiny_sam",
           "build_sam", "resize_sam", "LoRAQKV", "add_lora", "set_trainable", "count_trainable", "input_norm_for",
           "SAMSegmenter", "default_lr"]

VIT_B_PARAMS = {"total": 93_735_472, "image_encoder": 89_670_912, "prompt_encoder": 6_220,
                "mask_decoder": 4_058_340}
TINY_PARAMS = 1_779_392
LORA_VIT_B_PARAMS = 147_456
NATIVE_IMG_SIZE = {"tiny": 128, "vit_b": 1024, "vit_l": 1024, "vit_h": 1024}
GLOBAL_BLOCKS = {"tiny": (1, 3), "vit_b": (2, 5, 8, 11), "vit_l": (5, 11, 17, 23), "vit_h": (7, 15, 23, 31)}
HUB_FILES = {"vit_b": "sam_vit_b_01ec64.pth (or MedSAM's medsam_vit_b.pth)", "vit_l": "sam_vit_l_0b3195.pth",
             "vit_h": "sam_vit_h_4b8939.pth"}
_IMAGENET_MEAN = (123.675, 116.28, 103.53)
_IMAGENET_STD = (58.395, 57.12, 57.375)


def build_tiny_sam(img_size: int = 128) -> Sam:
    """The CPU stand-in SAM: ViT width 128, depth 4, 4 heads, patch 8, windows of 4 with global blocks 1 and 3,
    prompt/decoder dim 128 (decoder MLP 512, IoU head 128). 1,779,392 parameters at img 128."""
    patch = 8
    grid = img_size // patch
    return Sam(
        image_encoder=ImageEncoderViT(img_size=img_size, patch_size=patch, embed_dim=128, depth=4, num_heads=4,
                                      mlp_ratio=4, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), qkv_bias=True,
                                      use_rel_pos=True, global_attn_indexes=GLOBAL_BLOCKS["tiny"], window_size=4,
                                      out_chans=128),
        prompt_encoder=PromptEncoder(embed_dim=128, image_embedding_size=(grid, grid),
                                     input_image_size=(img_size, img_size), mask_in_chans=16),
        mask_decoder=MaskDecoder(num_multimask_outputs=3,
                                 transformer=TwoWayTransformer(depth=2, embedding_dim=128, mlp_dim=512, num_heads=8),
                                 transformer_dim=128, iou_head_depth=3, iou_head_hidden_dim=128),
        pixel_mean=list(_IMAGENET_MEAN), pixel_std=list(_IMAGENET_STD))


@torch.no_grad()
def resize_sam(sam: Sam, img_size: int) -> Sam:
    """Adapt ``sam`` (weights loaded) to ``img_size``: interpolate ``pos_embed`` and the global blocks'
    ``rel_pos_h/w``; update the prompt encoder's grid. A no-op when the size already matches."""
    enc = sam.image_encoder
    if enc.img_size == img_size:
        return sam
    patch = enc.patch_embed.proj.kernel_size[0]
    if img_size % patch:
        raise ValueError(f"sam.img_size={img_size} is not a multiple of the patch size {patch}")
    grid = img_size // patch
    if enc.pos_embed is not None:
        pos = enc.pos_embed.permute(0, 3, 1, 2)
        pos = F.interpolate(pos, size=(grid, grid), mode="bilinear", align_corners=False)
        enc.pos_embed = torch.nn.Parameter(pos.permute(0, 2, 3, 1).contiguous())
    for block in enc.blocks:
        if block.window_size == 0 and block.attn.use_rel_pos:
            for name in ("rel_pos_h", "rel_pos_w"):
                table = getattr(block.attn, name)
                new = F.interpolate(table.T[None], size=2 * grid - 1, mode="linear", align_corners=False)[0].T
                setattr(block.attn, name, torch.nn.Parameter(new.contiguous()))
    enc.img_size = img_size
    sam.prompt_encoder.image_embedding_size = (grid, grid)
    sam.prompt_encoder.input_image_size = (img_size, img_size)
    sam.prompt_encoder.mask_input_size = (4 * grid, 4 * grid)
    return sam


def input_norm_for(cfg: SAMConfig) -> str:
    """``imagenet`` or ``unit``: ``auto`` picks ``unit`` for MedSAM files (name contains ``medsam``)."""
    if cfg.input_norm != "auto":
        return cfg.input_norm
    return "unit" if "medsam" in Path(str(cfg.checkpoint)).name.lower() else "imagenet"


def build_sam(cfg: SAMConfig, pretrained_file: str | Path | None = None) -> Sam:
    """SAM of ``cfg.arch`` with ``cfg.checkpoint`` loaded (strict) and resized to ``cfg.img_size``.

    ``pretrained`` means the cached ``pretrain_sam.py`` result for ``tiny`` (``pretrained_file``) and ``hub`` for
    the ViTs; ``hub`` raises :class:`PretrainedWeightsError` naming the file to download; a missing or mismatching
    file raises naming the key. The returned model is in eval mode on the CPU.
    """
    if cfg.arch == "tiny":
        sam = build_tiny_sam(NATIVE_IMG_SIZE["tiny"])
    else:
        sam = sam_model_registry[cfg.arch](checkpoint=None)
    spec = str(cfg.checkpoint)
    if spec == "pretrained":
        if cfg.arch != "tiny":
            spec = "hub"
        elif pretrained_file is None or not Path(pretrained_file).is_file():
            raise PretrainedWeightsError(
                f"sam.checkpoint=pretrained needs the tiny SAM pre-trained by pretrain_sam.py "
                f"({pretrained_file or 'no cache file given'}); run `python pretrain_sam.py --config ...` first, "
                f"or set sam.checkpoint=none")
        else:
            spec = str(pretrained_file)
    source = HUB_FILES.get(cfg.arch, "the tiny SAM of pretrain_sam.py")
    try:
        load_pretrained(sam, spec, what=f"SAM {cfg.arch}", source=source, config_key="sam.checkpoint", strict=True)
    except PretrainedWeightsError:
        raise
    except Exception as exc:  # CheckpointError from a key/shape mismatch, unreadable file
        raise PretrainedWeightsError(f"sam.checkpoint={spec} does not fit sam.arch={cfg.arch}: {exc}. Pick the "
                                     f"arch the file was saved from (vit_b for sam_vit_b_01ec64.pth and "
                                     f"medsam_vit_b.pth)") from exc
    resize_sam(sam, cfg.img_size or NATIVE_IMG_SIZE[cfg.arch])
    return sam.eval()


# --------------------------------------------------------------------------------------------- LoRA (SAMed)
class LoRAQKV(torch.nn.Module):
    """A fused ``qkv`` Linear plus rank-``r`` updates of its q and v slices: ``qkv(x) + [B_q A_q x, 0, B_v A_v x]``
    (SAMed ``sam_lora_image_encoder.py``); ``B`` starts at zero so the wrapped layer is unchanged at init."""

    def __init__(self, qkv: torch.nn.Linear, rank: int):
        super().__init__()
        self.qkv = qkv
        self.dim = qkv.in_features
        self.a_q = torch.nn.Linear(self.dim, rank, bias=False)
        self.b_q = torch.nn.Linear(rank, self.dim, bias=False)
        self.a_v = torch.nn.Linear(self.dim, rank, bias=False)
        self.b_v = torch.nn.Linear(rank, self.dim, bias=False)
        for a in (self.a_q, self.a_v):
            torch.nn.init.kaiming_uniform_(a.weight, a=math.sqrt(5))
        for b in (self.b_q, self.b_v):
            torch.nn.init.zeros_(b.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.qkv(x)
        dq, dv = self.b_q(self.a_q(x)), self.b_v(self.a_v(x))
        zeros = torch.zeros_like(dq)
        return out + torch.cat([dq, zeros, dv], dim=-1)


def add_lora(sam: Sam, rank: int) -> list[torch.nn.Parameter]:
    """Wrap every encoder block's ``attn.qkv`` in :class:`LoRAQKV`; returns the new LoRA parameters."""
    params: list[torch.nn.Parameter] = []
    for block in sam.image_encoder.blocks:
        if not isinstance(block.attn.qkv, LoRAQKV):
            block.attn.qkv = LoRAQKV(block.attn.qkv, rank).to(block.attn.qkv.weight.device)
        lora = block.attn.qkv
        params += [lora.a_q.weight, lora.b_q.weight, lora.a_v.weight, lora.b_v.weight]
    return params


def set_trainable(sam: Sam, mode: str) -> list[torch.nn.Parameter]:
    """Freeze everything, then unfreeze what ``mode`` trains (``decoder``, ``lora``, ``full``, ``all``: every
    parameter, the pre-training of the tiny SAM). LoRA must already be added for ``lora``."""
    for p in sam.parameters():
        p.requires_grad_(False)
    if mode == "all":
        parts: list[torch.nn.Module] = [sam]
    elif mode == "decoder":
        parts = [sam.mask_decoder]
    elif mode == "lora":
        parts = [sam.prompt_encoder, sam.mask_decoder]
    elif mode == "full":
        parts = [sam.image_encoder, sam.mask_decoder]
    else:
        raise ValueError(f"unknown SAM fine-tuning mode {mode!r}")
    for part in parts:
        for p in part.parameters():
            p.requires_grad_(True)
    if mode == "lora":
        for block in sam.image_encoder.blocks:
            if not isinstance(block.attn.qkv, LoRAQKV):
                raise ValueError("sam.finetune=lora: call add_lora first")
            for name, p in block.attn.qkv.named_parameters():
                p.requires_grad_(not name.startswith("qkv."))
    return [p for p in sam.parameters() if p.requires_grad]


def count_trainable(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def default_lr(mode: str) -> float:
    """AdamW learning rate per mode when ``sam.lr`` is 0: SAMed 5e-3 for LoRA, MedSAM 1e-4 otherwise."""
    return 5e-3 if mode == "lora" else 1e-4


# --------------------------------------------------------------------------------------------- prompting
class SAMSegmenter(torch.nn.Module):
    """SAM on grey slices in [0, 1]: :meth:`embed` ``(B, 1, H, W) -> (B, C, g, g)``; :meth:`decode` one embedding +
    N boxes (slice pixel coordinates, XYXY, x = column) -> N mask logits at the slice size."""

    def __init__(self, sam: Sam, input_norm: str = "imagenet", mask_prompt: str = "none"):
        super().__init__()
        if input_norm not in ("imagenet", "unit"):
            raise ValueError(f"input_norm must be imagenet or unit, got {input_norm!r}")
        if mask_prompt not in ("none", "ellipse"):
            raise ValueError(f"mask_prompt must be none or ellipse, got {mask_prompt!r}")
        self.sam = sam
        self.input_norm = input_norm
        self.mask_prompt = mask_prompt
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def img_size(self) -> int:
        return int(self.sam.image_encoder.img_size)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` in [0, 1] -> ``(B, 3, S, S)`` at the encoder's size, scaled per ``input_norm``."""
        x = F.interpolate(images.float(), size=(self.img_size, self.img_size), mode="bilinear", align_corners=False)
        x = x.clamp(0, 1).expand(-1, 3, -1, -1)
        if self.input_norm == "imagenet":
            x = (x * 255.0 - self.mean) / self.std
        return x

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.sam.image_encoder(self.preprocess(images))

    def dense_prompt(self, boxes: torch.Tensor | None, slice_size: tuple[int, int]) -> torch.Tensor | None:
        """SAM's mask prompt from the boxes (``mask_prompt: ellipse``, OURS): the ellipse inscribed in each box as
        +-1 at the prompt encoder's mask size (4 x the embedding grid), ``(N, 1, 4g, 4g)``; None for ``none``. It
        carries only what the box says, so the decoder starts from the box's shape and learns corrections."""
        if self.mask_prompt == "none" or boxes is None:
            return None
        prior = torch.from_numpy(box_prior(boxes.detach().cpu().numpy(), slice_size).astype(np.float32) * 2 - 1)
        grid = self.sam.prompt_encoder.image_embedding_size
        prior = prior[:, None].to(self.mean.device)
        size = (4 * grid[0], 4 * grid[1])
        if tuple(prior.shape[-2:]) != size:
            prior = F.interpolate(prior, size=size, mode="bilinear", align_corners=False)
        return prior

    def decode(self, embedding: torch.Tensor, boxes: torch.Tensor | None, slice_size: tuple[int, int],
               points: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``embedding (1, C, g, g)``; ``boxes (N, 4)`` float in slice pixels; optional ``points`` = (coords
        ``(N, P, 2)`` XY in slice pixels, labels ``(N, P)``). Returns logits ``(N, 1, H, W)`` at ``slice_size`` and
        predicted IoU ``(N, 1)``."""
        h, w = slice_size
        scale = torch.tensor([self.img_size / w, self.img_size / h], device=embedding.device)
        box_in = None if boxes is None else boxes.float().to(embedding.device) * scale.repeat(2)
        pts = None if points is None else (points[0].float().to(embedding.device) * scale, points[1].to(
            embedding.device))
        sparse, dense = self.sam.prompt_encoder(points=pts, boxes=box_in, masks=self.dense_prompt(boxes, (h, w)))
        logits, iou = self.sam.mask_decoder(image_embeddings=embedding, image_pe=self.sam.prompt_encoder.get_dense_pe(),
                                            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                            multimask_output=False)
        if logits.shape[-2:] != (h, w):
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        return logits, iou

    def decode_pairs(self, embeddings: torch.Tensor, boxes: torch.Tensor, slice_size: tuple[int, int],
                     points: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """B images x 1 box each in one call: ``embeddings (B, C, g, g)``, ``boxes (B, 4)`` -> logits
        ``(B, 1, H, W)``, IoU ``(B, 1)``. Re-implements ``MaskDecoder.predict_masks`` without its per-prompt
        ``repeat_interleave`` (what MedSAM patches in its copy of the decoder); same weights, same maths."""
        h, w = slice_size
        scale = torch.tensor([self.img_size / w, self.img_size / h], device=embeddings.device)
        pts = None if points is None else (points[0].float().to(embeddings.device) * scale,
                                           points[1].to(embeddings.device))
        sparse, dense = self.sam.prompt_encoder(points=pts, boxes=boxes.float().to(embeddings.device) * scale.repeat(2),
                                                masks=self.dense_prompt(boxes, (h, w)))
        dec = self.sam.mask_decoder
        tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
        tokens = torch.cat([tokens.unsqueeze(0).expand(sparse.size(0), -1, -1), sparse], dim=1)
        src = embeddings + dense
        pos = self.sam.prompt_encoder.get_dense_pe().expand(src.shape[0], -1, -1, -1)
        b, c, gh, gw = src.shape
        hs, src = dec.transformer(src, pos, tokens)
        mask_tokens = hs[:, 1:1 + dec.num_mask_tokens, :]
        up = dec.output_upscaling(src.transpose(1, 2).view(b, c, gh, gw))
        hyper = torch.stack([mlp(mask_tokens[:, i, :]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)], dim=1)
        b, c, uh, uw = up.shape
        masks = (hyper @ up.view(b, c, uh * uw)).view(b, -1, uh, uw)[:, :1]
        iou = dec.iou_prediction_head(hs[:, 0, :])[:, :1]
        if masks.shape[-2:] != (h, w):
            masks = F.interpolate(masks, size=(h, w), mode="bilinear", align_corners=False)
        return masks, iou

    @torch.no_grad()
    def predict(self, image: torch.Tensor, boxes: np.ndarray, points: np.ndarray | None = None,
                embedding: torch.Tensor | None = None) -> np.ndarray:
        """Tumour probability ``(H, W)`` of one slice ``(1, H, W)`` from ``boxes (N, 4)``: one decoder call, max
        over the boxes; no box -> all zeros. ``points (N, 2)`` XY adds one positive click per box."""
        h, w = image.shape[-2:]
        if len(boxes) == 0:
            return np.zeros((h, w), np.float32)
        self.eval()
        device = self.mean.device
        emb = embedding if embedding is not None else self.embed(image[None].to(device))
        pts = None
        if points is not None:
            pts = (torch.as_tensor(points, dtype=torch.float32)[:, None], torch.ones(len(points), 1, dtype=torch.int))
        logits, _ = self.decode(emb, torch.as_tensor(np.asarray(boxes), dtype=torch.float32), (h, w), pts)
        return torch.sigmoid(logits[:, 0]).amax(dim=0).cpu().numpy().astype(np.float32)
