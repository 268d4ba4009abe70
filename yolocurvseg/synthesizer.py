"""Synthesizer: multilayer patch-wise contrastive foreground-background fusion (CUT / PatchNCE).

YoloCurvSeg synthesizer (paper abstract: "a multilayer patch-wise contrastive learning synthesizer") turns the naive
composite (extracted background + SCA curves, domain A) into an image in the style of the unlabelled real images
(domain B), trained unpaired. The exact architecture is not public; we follow the official CUT code (Park et al.,
ECCV 2020; taesungp/contrastive-unpaired-translation ``models/cut_model.py``,
``models/networks.py``, ``models/patchnce.py``, ``options/*.py``):

- generator: ResNet encoder-decoder (reflect-pad 7x7 conv, 2 anti-aliased stride-2 downsamplings, ``n_blocks``
  residual blocks, 2 upsamplings, 7x7 conv, tanh), instance norm; optional (OURS, ``residual``) global skip
  ``clamp(x + G(x))`` with a zero-initialised last conv, so that a short CPU-budget training starts from the
  identity instead of from noise; PatchNCE features are taken from the encoder
  layers listed in ``nce_layers`` (indices into the flat layer list, official default 0,4,8,12,16);
- PatchSampleF: per layer, the same ``num_patches`` random locations in source and output, an MLP
  Linear-ReLU-Linear to ``netF_nc`` features, L2 normalisation;
- PatchNCE (Eq. 2-3 of CUT): logits ``[q_i.k_i, q_i.k_j (j != i, same image; j = i filled with -10)] / tau``,
  cross-entropy to index 0, averaged over layers; tau = 0.07;
- discriminator: 70x70 PatchGAN (n_layers 3), LSGAN loss; CUT mode adds the identity NCE on real B:
  ``L_G = lambda_GAN * L_GAN + lambda_NCE * (NCE(A, G(A)) + NCE(B, G(B))) / 2``.

Images are one-channel tensors ``(B, 1, H, W)`` in [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from timm.layers import BlurPool2d
from torch import nn

__all__ = ["CUTConfig", "ResnetGenerator", "PatchGANDiscriminator", "PatchSampleF", "patch_nce_loss", "CUTModel"]


@dataclass
class CUTConfig:
    """CUT hyper-parameters; defaults are the official CUT options (``options/cut_options.py``,
    ``options/train_options.py``)."""

    ngf: int = 64
    ndf: int = 64
    n_blocks: int = 9
    n_layers_d: int = 3
    nce_layers: list[int] = field(default_factory=lambda: [0, 4, 8, 12, 16])
    num_patches: int = 256
    netf_nc: int = 256
    nce_t: float = 0.07
    residual: bool = False  # OURS option: output = clamp(input + tanh(G(input))), last conv zero-initialised
    lambda_gan: float = 1.0
    lambda_nce: float = 1.0
    nce_idt: bool = True
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    init_gain: float = 0.02


class _ResBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.body = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim), nn.ReLU(True),
                                  nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """CUT ``resnet_Nblocks`` generator ``(B, in, H, W) -> (B, out, H, W)`` (H, W divisible by 4).

    Flat layer list (the indexing ``nce_layers`` refers to): 0 pad, 1 conv, 2 norm, 3 relu, then per downsampling
    conv, norm, relu, blur-pool (4 layers each: 4-7, 8-11), then the residual blocks (12, 13, ...), then the decoder.
    """

    def __init__(self, in_ch: int = 1, out_ch: int = 1, ngf: int = 64, n_blocks: int = 9, residual: bool = False):
        super().__init__()
        self.residual = residual
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_ch, ngf, 7), nn.InstanceNorm2d(ngf),
                                   nn.ReLU(True)]
        ch = ngf
        for _ in range(2):  # anti-aliased downsampling: conv stride 1 -> norm -> relu -> blur-pool stride 2
            layers += [nn.Conv2d(ch, ch * 2, 3, padding=1), nn.InstanceNorm2d(ch * 2), nn.ReLU(True),
                       BlurPool2d(ch * 2, filt_size=3, stride=2)]
            ch *= 2
        layers += [_ResBlock(ch) for _ in range(n_blocks)]
        for _ in range(2):  # upsampling: nearest x2 -> conv -> norm -> relu
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch // 2, 3, padding=1),
                       nn.InstanceNorm2d(ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ch, out_ch, 7), nn.Tanh()]
        self.layers = nn.ModuleList(layers)
        self.n_encoder = 12 + n_blocks

    def zero_init_output(self) -> None:
        """Zero the last conv so that a residual generator starts as the identity."""
        nn.init.zeros_(self.layers[-2].weight)
        nn.init.zeros_(self.layers[-2].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for layer in self.layers:
            h = layer(h)
        return torch.clamp(x + h, -1.0, 1.0) if self.residual else h

    def encode(self, x: torch.Tensor, nce_layers: list[int]) -> list[torch.Tensor]:
        """Features ``[(B, C_l, H_l, W_l)]`` after each layer index in ``nce_layers`` (index 0 = padded input)."""
        if max(nce_layers) >= self.n_encoder:
            raise ValueError(f"nce_layers {nce_layers} exceed the encoder ({self.n_encoder} layers)")
        feats = []
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i in nce_layers:
                feats.append(x)
            if i >= max(nce_layers):
                break
        return feats


class PatchGANDiscriminator(nn.Module):
    """70x70 PatchGAN ``(B, in, H, W) -> (B, 1, H', W')`` logits (no sigmoid: LSGAN)."""

    def __init__(self, in_ch: int = 1, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_ch, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1), nn.InstanceNorm2d(ndf * mult),
                       nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(ndf * mult, 1, 4, 1, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PatchSampleF(nn.Module):
    """Per-layer MLP head on sampled patch features. ``forward(feats, num_patches, ids)`` returns
    ``([(B * P, nc)], ids)``; pass the returned ``ids`` for the second image so source and target patches match."""

    def __init__(self, in_channels: list[int], nc: int = 256):
        super().__init__()
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(c, nc), nn.ReLU(), nn.Linear(nc, nc)) for c in in_channels)

    def forward(self, feats: list[torch.Tensor], num_patches: int, ids: list[torch.Tensor] | None = None,
                generator: torch.Generator | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        out, out_ids = [], []
        for k, feat in enumerate(feats):
            b, c, h, w = feat.shape
            flat = feat.permute(0, 2, 3, 1).reshape(b, h * w, c)
            if ids is None:
                pid = torch.randperm(h * w, generator=generator)[: min(num_patches, h * w)].to(feat.device)
            else:
                pid = ids[k]
            sample = flat[:, pid, :].reshape(-1, c)
            out.append(F.normalize(self.mlps[k](sample), dim=1))
            out_ids.append(pid)
        return out, out_ids


def patch_nce_loss(feat_q: torch.Tensor, feat_k: torch.Tensor, batch_size: int, tau: float = 0.07
                   ) -> torch.Tensor:
    """PatchNCE per patch ``(B * P,)``; ``feat_q``/``feat_k`` ``(B * P, C)`` (output / source), negatives from the
    same image only; the positive logit is ``q_i.k_i``, the self-negative is filled with -10 (official code)."""
    k = feat_k.detach()
    n, dim = feat_q.shape
    l_pos = (feat_q * k).sum(dim=1, keepdim=True)
    q = feat_q.view(batch_size, -1, dim)
    kk = k.view(batch_size, -1, dim)
    p = q.shape[1]
    l_neg = torch.bmm(q, kk.transpose(1, 2))
    eye = torch.eye(p, dtype=torch.bool, device=q.device)[None]
    l_neg = l_neg.masked_fill(eye, -10.0).view(-1, p)
    logits = torch.cat([l_pos, l_neg], dim=1) / tau
    target = torch.zeros(n, dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, target, reduction="none")


def _init_weights(module: nn.Module, gain: float) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_normal_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class CUTModel(nn.Module):
    """G, D and F of CUT with one ``train_step``. ``netF`` is built lazily on the first batch (channel counts of the
    chosen layers), as in the official code; call :meth:`build_f` with a sample input before making optimizers."""

    def __init__(self, cfg: CUTConfig, in_ch: int = 1):
        super().__init__()
        self.cfg = cfg
        self.netG = ResnetGenerator(in_ch, in_ch, cfg.ngf, cfg.n_blocks, cfg.residual)
        self.netD = PatchGANDiscriminator(in_ch, cfg.ndf, cfg.n_layers_d)
        _init_weights(self.netG, cfg.init_gain)
        _init_weights(self.netD, cfg.init_gain)
        if cfg.residual:
            self.netG.zero_init_output()
        self.netF: PatchSampleF | None = None

    def build_f(self, sample: torch.Tensor) -> PatchSampleF:
        with torch.no_grad():
            chans = [f.shape[1] for f in self.netG.encode(sample, self.cfg.nce_layers)]
        self.netF = PatchSampleF(chans, self.cfg.netf_nc).to(sample.device)
        _init_weights(self.netF, self.cfg.init_gain)
        return self.netF

    def optimizers(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        """Adam for G+F and for D (lr 2e-4, betas 0.5/0.999)."""
        if self.netF is None:
            raise RuntimeError("call build_f(sample) before optimizers()")
        betas = (self.cfg.beta1, self.cfg.beta2)
        opt_g = torch.optim.Adam(list(self.netG.parameters()) + list(self.netF.parameters()), self.cfg.lr, betas=betas)
        opt_d = torch.optim.Adam(self.netD.parameters(), self.cfg.lr, betas=betas)
        return opt_g, opt_d

    def nce(self, src: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Multilayer PatchNCE between a source ``(B, C, H, W)`` and its translation, averaged over layers."""
        layers = self.cfg.nce_layers
        feat_q = self.netG.encode(out, layers)
        feat_k = self.netG.encode(src, layers)
        k_pool, ids = self.netF(feat_k, self.cfg.num_patches)
        q_pool, _ = self.netF(feat_q, self.cfg.num_patches, ids)
        total = sum(patch_nce_loss(q, k, src.shape[0], self.cfg.nce_t).mean() for q, k in zip(q_pool, k_pool))
        return total / len(layers)

    def train_step(self, real_a: torch.Tensor, real_b: torch.Tensor, opt_g: torch.optim.Optimizer,
                   opt_d: torch.optim.Optimizer) -> dict[str, float]:
        """One CUT iteration (D step then G+F step) on ``(B, C, H, W)`` batches in [-1, 1]; returns the losses."""
        cfg = self.cfg
        both = torch.cat([real_a, real_b]) if cfg.nce_idt else real_a
        fake_all = self.netG(both)
        fake_b = fake_all[: real_a.shape[0]]
        # D: LSGAN, real -> 1, fake -> 0
        opt_d.zero_grad(set_to_none=True)
        pred_fake = self.netD(fake_b.detach())
        pred_real = self.netD(real_b)
        loss_d = 0.5 * (F.mse_loss(pred_fake, torch.zeros_like(pred_fake)) +
                        F.mse_loss(pred_real, torch.ones_like(pred_real)))
        loss_d.backward()
        opt_d.step()
        # G + F
        opt_g.zero_grad(set_to_none=True)
        pred = self.netD(fake_b)
        loss_gan = F.mse_loss(pred, torch.ones_like(pred)) * cfg.lambda_gan
        loss_nce = self.nce(real_a, fake_b) * cfg.lambda_nce
        if cfg.nce_idt:
            idt_b = fake_all[real_a.shape[0]:]
            loss_nce_y = self.nce(real_b, idt_b) * cfg.lambda_nce
            loss_nce_both = 0.5 * (loss_nce + loss_nce_y)
        else:
            loss_nce_y = torch.zeros(())
            loss_nce_both = loss_nce
        loss_g = loss_gan + loss_nce_both
        loss_g.backward()
        opt_g.step()
        losses = {"loss_d": loss_d, "loss_gan": loss_gan, "loss_nce": loss_nce, "loss_nce_idt": loss_nce_y,
                  "loss_g": loss_g}
        return {k: float(v.detach()) for k, v in losses.items()}

    @torch.no_grad()
    def translate(self, x: torch.Tensor) -> torch.Tensor:
        """``G(x)`` for ``(B, C, H, W)`` in [-1, 1] (H, W padded by reflection to a multiple of 4 and cropped back)."""
        h, w = x.shape[-2:]
        ph, pw = (-h) % 4, (-w) % 4
        xp = F.pad(x, (0, pw, 0, ph), mode="reflect") if (ph or pw) else x
        return self.netG(xp)[..., :h, :w]
