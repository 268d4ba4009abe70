"""SPMix networks (paper Sec. II-B; official model: ``moco/vision_transformer_hybrid.py``, ``vit_small``).

- Hybrid backbone (token-level mixing): ResNet stages with stride 16 -> 1x1 projection to tokens -> CLS token +
  position embedding -> transformer blocks. The paper config uses timm ``vit_small_resnet50d_s16_224`` (ResNet-50D
  3 stages, 768-d, 8 blocks, 8 heads, mlp ratio 3; 56.8 M parameters without heads); the CPU default is a tiny
  hybrid of the same structure (small timm ResNet stages + a few timm ViT blocks). Mixing happens on the patch
  tokens *before* CLS/position embedding (``tokens`` -> mix -> ``encode_tokens``).
- CNN backbone (pixel/patch-level mixing): timm ResNet-50 (paper baselines) or a tiny ResNet.
- Heads as in the official model: classifier Linear(D -> C) on the CLS/pooled feature; projector
  D -> h -> h -> p (BN + ReLU, last BN affine=False); predictor p -> h' -> p (MoCo v3 MLPs).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from spmix.settings import ModelConfig

HYBRIDS = ("vit_small_resnet50d_s16_224", "tiny_hybrid")
CNNS = ("resnet50", "resnet18", "tiny_resnet")
R50D_SOURCE = "timm resnet50d.ra2_in1k (model.safetensors of hf-hub timm/resnet50d.ra2_in1k)"


def build_mlp(num_layers: int, in_dim: int, hidden: int, out_dim: int, last_bn: bool) -> nn.Sequential:
    """MoCo v3 MLP: Linear(no bias) [+BN+ReLU] ... ; final BN (affine=False) when ``last_bn``."""
    layers: list[nn.Module] = []
    for i in range(num_layers):
        d_in = in_dim if i == 0 else hidden
        d_out = out_dim if i == num_layers - 1 else hidden
        layers.append(nn.Linear(d_in, d_out, bias=False))
        if i < num_layers - 1:
            layers += [nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
        elif last_bn:
            layers.append(nn.BatchNorm1d(d_out, affine=False))
    return nn.Sequential(*layers)


def _tiny_resnet(channels: tuple[int, ...], num_classes: int = 0) -> nn.Module:
    from timm.models.resnet import BasicBlock, ResNet

    return ResNet(BasicBlock, layers=(1,) * len(channels), channels=tuple(channels), stem_width=channels[0] // 2,
                  stem_type="deep", avg_down=True, num_classes=num_classes)


def _stride16_stages(resnet: nn.Module) -> nn.Sequential:
    """First three stages of a timm ResNet (stem + layer1..3): stride 16 feature map ``(B, C3, H/16, W/16)``."""
    return nn.Sequential(resnet.conv1, resnet.bn1, resnet.act1, resnet.maxpool, resnet.layer1, resnet.layer2,
                         resnet.layer3)


def _build_backbone(cfg: ModelConfig, img_size: int) -> tuple[nn.Module, int]:
    import timm

    from common.weights import create_timm_model, load_pretrained

    if cfg.backbone == "vit_small_resnet50d_s16_224":
        if cfg.pretrained == "hub":  # fail before building 57 M parameters
            load_pretrained(nn.Identity(), "hub", what="the ResNet-50D stages of the hybrid ViT", source=R50D_SOURCE)
        model = timm.create_model(cfg.backbone, pretrained=False, num_classes=0, img_size=img_size,
                                  drop_path_rate=cfg.drop_path)
        load_pretrained(model.patch_embed.backbone, cfg.pretrained, what="the ResNet-50D stages of the hybrid ViT",
                        source=R50D_SOURCE)
        return model, model.num_features
    if cfg.backbone == "tiny_hybrid":
        from timm.layers import HybridEmbed
        from timm.models.vision_transformer import VisionTransformer

        stages = _stride16_stages(_tiny_resnet(cfg.tiny_channels))
        load_pretrained(stages, cfg.pretrained, what="the tiny hybrid's ResNet stages", source="a checkpoint of them")
        model = VisionTransformer(img_size=img_size, patch_size=1, num_classes=0, global_pool="token",
                                  embed_dim=cfg.tiny_embed_dim, depth=cfg.tiny_depth, num_heads=cfg.tiny_heads,
                                  mlp_ratio=cfg.tiny_mlp_ratio, drop_path_rate=cfg.drop_path,
                                  embed_layer=partial(HybridEmbed, backbone=stages))
        return model, model.num_features
    if cfg.backbone in ("resnet50", "resnet18"):
        model = create_timm_model(cfg.backbone, cfg.pretrained, num_classes=0)
        return model, model.num_features
    if cfg.backbone == "tiny_resnet":
        model = _tiny_resnet(cfg.tiny_channels)
        load_pretrained(model, cfg.pretrained, what="the tiny ResNet", source="a checkpoint of it")
        return model, model.num_features
    raise ValueError(f"model.backbone={cfg.backbone!r} is unknown; use one of {HYBRIDS + CNNS}")


class SPMixNet(nn.Module):
    """Backbone + classifier/projector/predictor heads.

    ``forward(x (B,3,H,W)) -> logits (B, C)``; hybrids also expose ``tokens(x) -> (B, N, D)`` and
    ``encode_tokens(tokens) -> (B, D)`` so that SPMix mixes tokens between the two.
    """

    def __init__(self, cfg: ModelConfig, num_classes: int, img_size: int):
        super().__init__()
        self.cfg = cfg
        self.backbone, dim = _build_backbone(cfg, img_size)
        self.token_level = cfg.backbone in HYBRIDS
        self.feature_dim = dim
        self.classifier = nn.Linear(dim, num_classes)
        self.projector = build_mlp(3, dim, cfg.proj_hidden, cfg.proj_dim, last_bn=True)
        self.predictor = build_mlp(2, cfg.proj_dim, cfg.pred_hidden, cfg.proj_dim, last_bn=False)

    @property
    def grid_size(self) -> tuple[int, int] | None:
        return tuple(self.backbone.patch_embed.grid_size) if self.token_level else None

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> patch tokens ``(B, N, D)`` before CLS token and position embedding."""
        if not self.token_level:
            raise RuntimeError(f"model.backbone={self.cfg.backbone} is a CNN: it has no tokens; use pixel mixing")
        return self.backbone.patch_embed(x)

    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Patch tokens ``(B, N, D)`` -> CLS feature ``(B, D)`` (pos-embed, transformer blocks, norm, pool)."""
        vit = self.backbone
        x = vit.norm_pre(vit.patch_drop(vit._pos_embed(tokens)))
        x = vit.norm(vit.blocks(x))
        return vit.forward_head(x, pre_logits=True)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> feature ``(B, D)``."""
        return self.encode_tokens(self.tokens(x)) if self.token_level else self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encode(x))

    def contrastive(self, feat: torch.Tensor, query: bool) -> torch.Tensor:
        """Feature ``(B, D)`` -> L2-normalised ``(B, p)``: predictor(projector(.)) for queries, projector for keys."""
        z = self.projector(feat)
        if query:
            z = self.predictor(z)
        return F.normalize(z, dim=1)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def build_model(cfg: ModelConfig, num_classes: int, img_size: int) -> SPMixNet:
    """The network of ``cfg`` (``Config.model``) for ``num_classes`` classes at ``img_size`` px."""
    return SPMixNet(cfg, num_classes, img_size)
