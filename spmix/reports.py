"""What a run shows besides its metrics.csv: evaluation tables and figures, TensorBoard image grids, and the
mixed-samples figure of the comparison (tail image, saliency, head image, per-patch ratio r, the mix; paper Fig. 1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from spmix.data import ISIC_MEAN, ISIC_STD
from spmix.engine import Evaluation
from spmix.settings import CLASSES


def denormalise(image: torch.Tensor) -> np.ndarray:
    """Normalised ``(3, H, W)`` tensor -> ``(H, W, 3)`` float RGB in [0, 1]."""
    img = image.detach().float().cpu().permute(1, 2, 0).numpy() * np.array(ISIC_STD) + np.array(ISIC_MEAN)
    return np.clip(img, 0, 1)


def write_evaluation(result: Evaluation, frame: pd.DataFrame, subset: str, eval_dir: Path,
                     figures_dir: Path | None = None, prefix: str = "", extra: dict | None = None) -> None:
    """``eval/<prefix>summary.csv`` (one row, plus the ``extra`` columns), ``eval/<prefix>per_case.csv`` (image,
    label, pred, p_<CLS>), and the confusion matrix / ROC figures of ``subset`` (when ``figures_dir`` is given)."""
    from common.tracking import plot_confusion_matrix, plot_roc, write_eval_tables

    probs = torch.softmax(torch.from_numpy(result.outputs), 1).numpy()
    per_case = pd.DataFrame({"image": frame["image"].to_numpy()[result.indices],
                             "label": [CLASSES[i] for i in result.targets],
                             "pred": [CLASSES[i] for i in probs.argmax(1)]})
    for c, name in enumerate(CLASSES):
        per_case[f"p_{name}"] = probs[:, c]
    write_eval_tables(eval_dir, {"subset": subset, "n": len(result.targets), **(extra or {}), **result.metrics},
                      per_case, prefix=prefix)
    if figures_dir is not None:
        from sklearn.metrics import confusion_matrix

        cm = confusion_matrix(result.targets, probs.argmax(1), labels=list(range(len(CLASSES))))
        plot_confusion_matrix(cm, CLASSES, figures_dir / f"confusion_{subset}.png")
        plot_roc(result.targets, probs, figures_dir / f"roc_{subset}.png", class_names=CLASSES)


def training_grid(batch: dict, cfg, n: int = 4) -> np.ndarray:
    """TensorBoard grid of the first training batch: per row the input and its saliency and, for SPMix, the
    dominant and context images of the label rule, the per-patch ratio r (without tie noise) and the pixel picture
    of the mix ``r x_dom + (1 - r) x_ctx`` (a hybrid backbone mixes its tokens with the same r)."""
    from common.tracking import image_grid
    from spmix.mixing import mixing_ratio, order_pair, patch_scores, ratio_map

    inst, bal = batch["inst"], batch.get("bal")
    pair = ratio = None
    if cfg.method == "spmix" and bal is not None:
        pair = order_pair((inst["image"], inst["sal"], inst["label"]), (bal["image"], bal["sal"], bal["label"]),
                          cfg.spmix.dominant)
        p = cfg.saliency.patch
        ratio = mixing_ratio(patch_scores(pair.sal_dom, p, 0.0), patch_scores(pair.sal_ctx, p, 0.0), cfg.spmix.alpha)
    rows = []
    for i in range(min(n, inst["image"].shape[0])):
        row = [denormalise(inst["image"][i]), inst["sal"][i, 0].cpu().numpy()]
        if pair is not None:
            h, w = inst["image"].shape[-2:]
            p = cfg.saliency.patch
            r = ratio_map(ratio[i : i + 1].cpu(), (h // p, w // p), p)[0, 0].numpy()[..., None]
            x_dom, x_ctx = denormalise(pair.x_dom[i]), denormalise(pair.x_ctx[i])
            row += [x_dom, x_ctx, r[..., 0], r * x_dom + (1 - r) * x_ctx]
        rows.append(row)
    return image_grid(rows)


def prediction_grid(images: list[np.ndarray], targets: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """Images framed green (correct) or red (wrong), one row per true class."""
    from common.tracking import image_grid, to_uint8_rgb

    tiles = []
    for img, t, p in zip(images, targets, preds):
        framed = to_uint8_rgb(img).copy()
        framed[:3], framed[-3:], framed[:, :3], framed[:, -3:] = (
            [(0, 170, 0) if t == p else (220, 0, 0)] * 4)
        tiles.append((int(t), framed))
    rows = [[tile for label, tile in tiles if label == c][:6] for c in range(len(CLASSES))]
    return image_grid([r for r in rows if r])


def log_predictions(tracker, result: Evaluation, frame: pd.DataFrame, cfg, step: int) -> None:
    """TensorBoard ``test/predictions``: a few test images per class, framed by whether they were right."""
    from spmix.pipeline import eval_loader

    ds = eval_loader(cfg, frame).dataset
    preds = result.outputs.argmax(1)
    chosen = [i for c in range(len(CLASSES)) for i in np.flatnonzero(result.targets == c)[:6]]
    images = [denormalise(ds[int(result.indices[i])]["image"]) for i in chosen]
    tracker.log_image("test/predictions", prediction_grid(images, result.targets[chosen], preds[chosen]), step)


def mixed_samples_figure(cfg, prep, path: Path, n: int = 4, seed: int = 0) -> Path:
    """Tail (dominant) and head (context) images, their saliency maps, the SPMix ratio map and the pixel-space
    picture of the mix r*x_dom + (1-r)*x_ctx (for a hybrid backbone the same r mixes tokens)."""
    from common.tracking import pyplot, save_figure
    from spmix.data import ISICDataset, eval_transform
    from spmix.mixing import mix_pixels, mixing_ratio, patch_scores, ratio_map

    plt = pyplot()
    frame = prep.frame[prep.frame["subset"] == "train"].reset_index(drop=True)
    ds = ISICDataset(frame, [eval_transform(cfg.data.img_size, cfg.data.augment)], prep.data_root,
                     prep.saliency_root)
    rng = np.random.default_rng(seed)
    labels = np.array(ds.labels)
    tail = [CLASSES.index(c) for c in cfg.data.tail]
    dom = [ds[int(i)] for i in rng.choice(np.flatnonzero(np.isin(labels, tail)), n, replace=False)]
    ctx = [ds[int(i)] for i in rng.choice(np.flatnonzero(labels == CLASSES.index(cfg.data.head[0])), n,
                                          replace=False)]
    x_dom, x_ctx = torch.stack([d["image"] for d in dom]), torch.stack([c["image"] for c in ctx])
    s_dom, s_ctx = torch.stack([d["sal"] for d in dom]), torch.stack([c["sal"] for c in ctx])
    p = cfg.saliency.patch
    r = mixing_ratio(patch_scores(s_dom, p, 0.0), patch_scores(s_ctx, p, 0.0), cfg.spmix.alpha)
    mixed = mix_pixels(x_dom, x_ctx, r, p)
    rmap = ratio_map(r, (x_dom.shape[-2] // p, x_dom.shape[-1] // p), p)
    cols = ["tail image (label)", "its saliency", "head image", "its saliency", "ratio r (0.5..alpha)", "mixed"]
    fig, axes = plt.subplots(n, len(cols), figsize=(2.1 * len(cols), 2.1 * n))
    for i in range(n):
        panels = [denormalise(x_dom[i]), s_dom[i, 0].numpy(), denormalise(x_ctx[i]), s_ctx[i, 0].numpy(),
                  rmap[i, 0].numpy(), denormalise(mixed[i])]
        for j, panel in enumerate(panels):
            ax = axes[i, j]
            kw = {"cmap": "magma", "vmin": 0.5, "vmax": cfg.spmix.alpha} if j == 4 else {"cmap": "gray"}
            ax.imshow(panel, **({} if panel.ndim == 3 else kw))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(cols[j], fontsize=8)
        axes[i, 0].set_ylabel(CLASSES[int(dom[i]["label"])], fontsize=9)
    return save_figure(fig, path, dpi=110)
