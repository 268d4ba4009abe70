"""Figures of a pre-trained PRIOR (written by ``train.py``'s evaluation into the run's ``figures/``):

- ``attention_overlays.png``: the sentence->patch sigmoid attention of finding sentences over their images, with
  the finding's box (the pointing game's cases); a green title marks a peak inside the box.
- ``prototype_usage.png``: how many test-report sentences each SPB prototype takes (argmax assignment, no noise).
- ``reconstructions.png``: conditional image reconstruction with the report's text-conditioned patches and with
  them zeroed (the decoder's no-text input), beside the input at the reconstruction size.
- ``retrieval_examples.png``: query images and the reports ranked first by the model's image->report score.

Each function takes already prepared tensors, so it runs on any dataset with the needed inputs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common.tracking import pyplot, save_figure
from prior.downstream import box_cells, sentence_maps
from prior.models.prior import PRIOR

__all__ = ["attention_overlays", "prototype_usage", "reconstructions", "retrieval_examples"]


def _gray(image: torch.Tensor) -> np.ndarray:
    x = image.squeeze().float().cpu().numpy()
    return (x - x.min()) / max(float(x.max() - x.min()), 1e-8)


def _short(text: str, width: int = 34) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


@torch.no_grad()
def attention_overlays(model: PRIOR, images: torch.Tensor, sentences: Sequence[str],
                       boxes: Sequence[tuple[float, ...]], image_size: int, device: torch.device, path: Path,
                       n: int = 6, quantize: bool = True) -> Path:
    """Up to ``n`` cases: image, attention map (bilinear to the input size, token order of the model), box."""
    from matplotlib.patches import Rectangle

    n = min(n, len(sentences))
    _, _, out = sentence_maps(model, images[:n], list(sentences[:n]), device, quantize)
    att = out.sentence_attention[:, 0]  # (n, P)
    grid = model.grid[0]
    hits = box_cells(list(boxes[:n]), grid, image_size)[np.arange(n), att.argmax(-1).cpu().numpy()]
    maps = F.interpolate(att.reshape(n, 1, grid, grid).float(), size=(image_size, image_size), mode="bilinear",
                         align_corners=False)[:, 0].cpu().numpy()
    plt = pyplot()
    fig, axes = plt.subplots(1, max(n, 1), figsize=(2.6 * max(n, 1), 3.0), squeeze=False)
    order = "official view(B, -1, C) order: tokens are not grid cells" if model.official_token_order else ""
    for k, ax in enumerate(axes[0]):
        ax.axis("off")
        if k >= n:
            continue
        ax.imshow(_gray(images[k]), cmap="gray")
        ax.imshow(maps[k], cmap="jet", alpha=0.4)
        x0, y0, x1, y1 = boxes[k]
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="white", linewidth=1.2))
        ax.set_title(_short(sentences[k]), fontsize=7, color="green" if hits[k] else "red")
    fig.suptitle(f"sentence -> patch attention ({grid}x{grid} tokens{'; ' + order if order else ''})", fontsize=8)
    return save_figure(fig, path)


@torch.no_grad()
def prototype_usage(model: PRIOR, sentences: Sequence[str], path: Path) -> Path:
    """Sorted number of ``sentences`` per SPB prototype (argmax assignment; zero-count codes included)."""
    model.eval()
    emb, mask = model.encode_sentences([[s] for s in sentences])
    index = model.sentence_bank(emb[mask]).index.cpu().numpy()
    k = model.sentence_bank.embed.num_embeddings
    counts = np.sort(np.bincount(index, minlength=k))[::-1]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 2.6))
    ax.bar(np.arange(k), counts, width=1.0)
    ax.set_xlabel("prototype (sorted by use)")
    ax.set_ylabel("sentences")
    ax.set_title(f"SPB usage: {int((counts > 0).sum())} of {k} prototypes take {len(index)} sentences", fontsize=9)
    return save_figure(fig, path)


@torch.no_grad()
def reconstructions(model: PRIOR, images: torch.Tensor, reports: Sequence[Sequence[str]], device: torch.device,
                    path: Path, n: int = 4) -> Path:
    """Rows: input (resized to the reconstruction), reconstruction with the report, without it (text zeroed),
    and |with - without|; L1 to the input in the titles."""
    model.eval()
    n = min(n, len(reports))
    x = images[:n].to(device)
    emb = model.encode_image(x)
    text = model.encode_text([list(r) for r in reports[:n]], model.losses["spb"])
    att = model.local_attention(emb, text)
    with_text = model.reconstruct_image(emb, att, with_text=True)
    without = model.reconstruct_image(emb, att, with_text=False)
    target = F.interpolate(x, size=with_text.shape[-2:], mode="bilinear", align_corners=True)
    plt = pyplot()
    fig, axes = plt.subplots(4, max(n, 1), figsize=(2.2 * max(n, 1), 8.8), squeeze=False)
    for k in range(axes.shape[1]):
        for r in range(4):
            axes[r, k].axis("off")
        if k >= n:
            continue
        l1_with = float((with_text[k] - target[k]).abs().mean())
        l1_without = float((without[k] - target[k]).abs().mean())
        panels = [(target[k], "input"), (with_text[k], f"with text L1 {l1_with:.3f}"),
                  (without[k], f"no text L1 {l1_without:.3f}")]
        for r, (img, title) in enumerate(panels):
            axes[r, k].imshow(img.squeeze().cpu().numpy(), cmap="gray")
            axes[r, k].set_title(title, fontsize=7)
        axes[3, k].imshow((with_text[k] - without[k]).abs().squeeze().cpu().numpy(), cmap="magma")
        axes[3, k].set_title("|with - without|", fontsize=7)
    return save_figure(fig, path)


def retrieval_examples(query_images: torch.Tensor, query_labels: Sequence[str], scores: np.ndarray,
                       reports: Sequence[Sequence[str]], report_labels: Sequence[str], path: Path, n: int = 4,
                       top: int = 3) -> Path:
    """``scores`` ``(Q, R)`` image->report scores: each of the first ``n`` queries with its ``top`` reports (the
    report's class, green when it matches the query's, and its first sentence)."""
    n = min(n, len(query_labels))
    plt = pyplot()
    fig, axes = plt.subplots(n, 2, figsize=(8, 2.2 * max(n, 1)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 3]})
    for q in range(n):
        axes[q, 0].imshow(_gray(query_images[q]), cmap="gray")
        axes[q, 0].set_title(f"query: {query_labels[q]}", fontsize=8)
        axes[q, 0].axis("off")
        ax = axes[q, 1]
        ax.axis("off")
        for rank, r in enumerate(np.argsort(-scores[q])[:top]):
            colour = "green" if report_labels[r] == query_labels[q] else "red"
            first = reports[r][0] if reports[r] else ""
            ax.text(0.0, 0.8 - 0.3 * rank, f"{rank + 1}. [{report_labels[r]}] {_short(first, 70)}", fontsize=8,
                    color=colour, transform=ax.transAxes)
    return save_figure(fig, path)

