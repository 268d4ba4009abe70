"""The stages of ASLseg (paper abstract: SSL model -> pseudo-labels as prompts -> fine-tuned SAM -> adaptation
network -> reliable pseudo-labels expand the labelled set -> iterate), as numbered plain functions driven by
``train.py`` through ``loop.py``:

1. :func:`prepare_data` - split, labelled subset, slices of the labelled / unlabelled / test volumes;
2. ``engine.train_segmenter`` - SSL iterations ``[start, end)`` of the segmenter on the current labelled pool;
3. ``engine.predict_probs`` - segmenter tumour probabilities of slices;
4. :func:`prepare_sam` - SAM with its checkpoint (the tiny SAM pre-trained on shapes first when asked);
5. :func:`finetune_stage` - SAM fine-tuned on the ground-truth slices (SSL boxes as prompt noise);
6. :func:`adapter_stage` - the adaptation network trained on corrupted ground truth;
7. :func:`pseudo_label` - SSL prob -> boxes -> SAM -> adapter, per unlabelled slice;
8. ``engine.evaluate_volumes`` - per-volume 3D tumour metrics on the original grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from aslseg.adapter import AdapterPool, build_adapter, corrupt_mask, refine, train_adapter
from aslseg.data import (
    SliceSet,
    UnlabelledSlices,
    Volume,
    concat_slices,
    extract_slices,
    labelled_subset,
    list_cases,
    load_or_make_split,
    load_volume,
)
from aslseg.fusion import gated_fusion, mean_fusion
from aslseg.prompts import boxes_from_mask, component_points
from aslseg.sam_model import SAMSegmenter, build_sam, input_norm_for
from aslseg.sam_tuning import finetune_sam
from aslseg.semisup import SSLBatch, filter_components
from aslseg.settings import Config
from aslseg.sharding import map_sharded, rank_items

__all__ = ["Prepared", "TestCase", "prepare_data", "LabelledPool", "make_affine", "AugmentDraw", "BatchPlan",
           "plan_batch", "batch_share", "sample_batch", "prepare_sam",
           "finetune_stage", "embed_all", "sam_box_probs", "adapter_stage", "PseudoLabels", "pseudo_label",
           "sam_gtbox_probs"]


@dataclass
class TestCase:
    volume: Volume
    slices: SliceSet


@dataclass
class Prepared:
    """Labelled slices (tumour labels), unlabelled slices (labels hidden) and test volumes with their slices."""

    labelled: SliceSet
    unlabelled: UnlabelledSlices
    test: list[TestCase]
    labelled_ids: list[str]
    unlabelled_ids: list[str]


def _slices(volume: Volume, cfg: Config) -> SliceSet:
    d = cfg.data
    return extract_slices(volume, d.size, d.hu_window, d.roi, d.roi_margin, d.slice_margin)


def prepare_data(cfg: Config) -> Prepared:
    """1. Read the dataset (writing the synthetic set first when ``data.synthetic``), check every file, split."""
    from aslseg.synth import ensure_synthetic
    from common.datasets import split_path, verify_files
    from common.rundir import resolve_path
    from common.runtime import main_process_first

    d = cfg.data
    with main_process_first():  # under torchrun rank 0 writes the synthetic set and the split, the others read
        root = ensure_synthetic(d.root, d.synth) if d.synthetic else resolve_path(d.root)
        cases = {c.case_id: c for c in list_cases(d.dataset, root)}
        verify_files([p for c in cases.values() for p in (c.image, c.label) if p is not None], d.verify,
                     what=f"{d.dataset} volume")
        split = load_or_make_split(split_path("aslseg", root, f"split-test{d.n_test}-seed{d.split_seed}.json",
                                              d.split_file or None), list(cases), d.n_test, d.split_seed)
    train_ids = split["train"][: d.max_train_volumes or None]
    labelled_ids = labelled_subset(train_ids, d.labelled_fraction, cfg.seed)
    unlabelled_ids = [c for c in train_ids if c not in labelled_ids]
    labelled = concat_slices([_slices(load_volume(cases[c]), cfg) for c in labelled_ids])
    unl_sets = [_slices(load_volume(cases[c]), cfg) for c in unlabelled_ids]
    unlabelled = UnlabelledSlices(concat_slices(unl_sets) if unl_sets else labelled.subset(np.zeros(0, np.int64)))
    test = []
    for c in split["test"]:
        vol = load_volume(cases[c])
        test.append(TestCase(vol, _slices(vol, cfg)))
    return Prepared(labelled, unlabelled, test, labelled_ids, unlabelled_ids)


# --------------------------------------------------------------------------------------------- segmenter
@dataclass
class LabelledPool:
    """What the segmenter may learn from: labelled ``images``/``labels`` ``(N, H, W)`` (ground truth plus selected
    pseudo-labels) and unlabelled ``unlabelled`` images."""

    images: np.ndarray
    labels: np.ndarray
    unlabelled: np.ndarray


@dataclass(frozen=True)
class AugmentDraw:
    """One sample's augmentation: ``k`` quarter turns, a horizontal flip, and the seed of MONAI's ``RandAffine``
    (None: no affine)."""

    k: int
    flip: bool
    affine_seed: int | None


def _draw_augment(rng: np.random.Generator, affine: bool) -> AugmentDraw:
    k = int(rng.integers(4))
    flip = bool(rng.random() < 0.5)
    seed = int(rng.integers(2**31)) if affine and rng.random() < 0.5 else None
    return AugmentDraw(k, flip, seed)


def _augment_pair(image: np.ndarray, label: np.ndarray, draw: AugmentDraw, affine) -> tuple:
    image, label = np.rot90(image, draw.k), np.rot90(label, draw.k)
    if draw.flip:
        image, label = image[:, ::-1], label[:, ::-1]
    image, label = np.ascontiguousarray(image), np.ascontiguousarray(label)
    if draw.affine_seed is not None:
        affine.set_random_state(seed=draw.affine_seed)
        affine.randomize(None)
        image = np.asarray(affine(image[None], mode="bilinear", randomize=False))[0]
        label = np.asarray(affine(label[None].astype(np.float32), mode="nearest", randomize=False))[0]
    return image, label


def make_affine():
    from monai.transforms import RandAffine

    return RandAffine(prob=1.0, rotate_range=(np.pi / 12,), scale_range=(0.1, 0.1), padding_mode="border")


@dataclass(frozen=True)
class BatchPlan:
    """Iteration ``it``'s batch as drawn from (seed, it) alone: pool rows of the ``L`` labelled and ``U`` unlabelled
    samples and each sample's augmentation (labelled first; None without ``data.augment``). Sample ``j``'s row and
    augmentation are the same whichever rank realises it and however many ranks share the batch."""

    labelled: np.ndarray
    unlabelled: np.ndarray
    augment: tuple[AugmentDraw | None, ...]


def plan_batch(pool: LabelledPool, cfg: Config, it: int, affine: bool = False) -> BatchPlan:
    """The random draws of iteration ``it``'s batch (cheap: no image is touched), a function of (seed, it) only.
    The draw order is that of one process realising the whole batch, so a run's batches do not depend on the
    number of ranks (and a resumed run sees the same batches)."""
    rng = np.random.default_rng([cfg.seed, 4711, it])
    o = cfg.optim
    idx_l = rng.integers(0, len(pool.images), size=o.labelled_bs)
    n_u = o.batch_size - o.labelled_bs
    src_u = pool.unlabelled if len(pool.unlabelled) else pool.images
    idx_u = rng.integers(0, len(src_u), size=n_u)
    draws = tuple(_draw_augment(rng, affine) if cfg.data.augment else None for _ in range(len(idx_l) + len(idx_u)))
    return BatchPlan(idx_l, idx_u, draws)


def batch_share(n: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
    """Positions (0 .. n-1) of a batch part that rank ``rank`` of ``world_size`` trains on: an equal contiguous
    chunk of each BCP half (a = the first n // 2, b = the rest), so every rank's share pairs its halves as the
    whole batch does. One process: every position. ``n`` must be a multiple of 2 x ``world_size``."""
    if world_size == 1:
        return np.arange(n)
    if n % (2 * world_size):
        raise ValueError(f"a batch part of {n} samples cannot be split into equal BCP halves over {world_size} ranks")
    per, half = n // (2 * world_size), n // 2
    chunk = np.arange(rank * per, (rank + 1) * per)
    return np.concatenate([chunk, half + chunk])


def sample_batch(pool: LabelledPool, cfg: Config, it: int, affine=None, rank: int = 0, world_size: int = 1
                 ) -> SSLBatch:
    """The batch of iteration ``it`` (:func:`plan_batch`), or this rank's share of it (:func:`batch_share` of the
    labelled and of the unlabelled part): a function of (seed, it, sample position) only."""
    plan = plan_batch(pool, cfg, it, affine is not None)
    o = cfg.optim
    src_u = pool.unlabelled if len(pool.unlabelled) else pool.images
    imgs, labs, unl = [], [], []
    for j in batch_share(o.labelled_bs, rank, world_size):
        im, lb = (pool.images[plan.labelled[j]], pool.labels[plan.labelled[j]])
        if plan.augment[j] is not None:
            im, lb = _augment_pair(im, lb, plan.augment[j], affine)
        imgs.append(im)
        labs.append(lb)
    for j in batch_share(o.batch_size - o.labelled_bs, rank, world_size):
        im = src_u[plan.unlabelled[j]]
        draw = plan.augment[o.labelled_bs + j]
        if draw is not None:
            im, _ = _augment_pair(im, np.zeros_like(im), draw, affine)
        unl.append(im)

    def to_t(a):
        return (torch.from_numpy(np.stack(a).astype(np.float32))[:, None])
    unl_t = to_t(unl) if unl else torch.zeros(0, 1, *pool.images.shape[1:])
    return SSLBatch(to_t(imgs), torch.from_numpy(np.stack(labs).round().astype(np.int64)), unl_t)


# --------------------------------------------------------------------------------------------- SAM + adapter
def prepare_sam(cfg: Config, device: torch.device) -> SAMSegmenter:
    """4. SAM of ``sam.arch`` with ``sam.checkpoint`` (for the tiny SAM, ``pretrained`` runs/reuses
    ``pretrain_sam.py``'s cached result)."""
    from aslseg.sam_prior import ensure_pretrained

    pretrained = None
    if cfg.sam.arch == "tiny" and cfg.sam.checkpoint == "pretrained":
        pretrained = ensure_pretrained(cfg.sam_pretrain, cfg.data.size, cfg.runtime.progress, cfg.sam.mask_prompt)
    return SAMSegmenter(build_sam(cfg.sam, pretrained), input_norm_for(cfg.sam), cfg.sam.mask_prompt).to(device)


def finetune_stage(sam: SAMSegmenter, labelled: SliceSet, ssl_probs: np.ndarray, cfg: Config, seed: int
                   ) -> list[float]:
    """5. Fine-tune SAM on the ground-truth labelled slices; SSL predictions on them give realistic boxes."""
    ssl_masks = np.stack([filter_components(p > 0.5, cfg.prompts.min_area) for p in ssl_probs])
    return finetune_sam(sam, labelled.images, labelled.tumour.astype(np.float32), ssl_masks, cfg.sam,
                        cfg.prompts.min_area, cfg.prompts.box_margin, seed)


@torch.no_grad()
def embed_all(sam: SAMSegmenter, images: np.ndarray, batch: int = 16) -> torch.Tensor:
    sam.eval()
    x = torch.from_numpy(np.asarray(images, np.float32))[:, None]
    return torch.cat([sam.embed(x[i:i + batch].to(sam.mean.device)).cpu() for i in range(0, len(x), batch)])


def sam_box_probs(sam: SAMSegmenter, images: np.ndarray, masks: np.ndarray, cfg: Config,
               embeddings: torch.Tensor | None = None) -> np.ndarray:
    """SAM probability per slice prompted with the boxes (and optionally points) of ``masks``."""
    out = np.zeros(images.shape, np.float32)
    for i in range(len(images)):
        boxes = boxes_from_mask(masks[i], cfg.prompts.min_area, cfg.prompts.box_margin)
        if len(boxes) == 0:
            continue
        points = component_points(masks[i], cfg.prompts.min_area) if cfg.prompts.points else None
        emb = None if embeddings is None else embeddings[i:i + 1].to(sam.mean.device)
        out[i] = sam.predict(torch.from_numpy(images[i])[None], boxes, points, embedding=emb)
    return out


def adapter_stage(sam: SAMSegmenter | None, labelled: SliceSet, cfg: Config, seed: int, device: torch.device,
                  copies: int = 2, ssl_probs: np.ndarray | None = None) -> torch.nn.Module:
    """6. Train the adaptation network on ``copies`` versions of every labelled slice whose SSL channel (and SAM's
    prompt) is, per ``adapter.training``, a corruption of the ground truth, the segmenter's own prediction
    ``ssl_probs`` on the slice (its real errors; the copy is then taken once), or one of each (without SAM the SAM
    channel is that mask itself)."""
    rng = np.random.default_rng([seed, 515])
    images, sam_p, ssl_p, targets = [], [], [], []
    mode = cfg.adapter.training
    if mode != "corrupt" and ssl_probs is None:
        raise ValueError(f"adapter.training={mode} needs the segmenter's predictions on the labelled slices")
    share = rank_items(len(labelled))  # SAM's answers on this rank's labelled slices, gathered below
    emb = embed_all(sam, labelled.images[share]) if sam is not None else None
    sources = {"corrupt": ["corrupt"] * copies, "real": ["real"], "mixed": ["real", "corrupt"]}[mode]
    for source in sources:
        if source == "real":
            masks = np.stack([filter_components(p > 0.5, cfg.prompts.min_area) for p in ssl_probs])
        else:
            masks = np.stack([corrupt_mask(t, lv, rng, cfg.adapter) for t, lv in zip(labelled.tumour, labelled.liver)])
        soft = masks.astype(np.float32)
        if sam is not None:
            sam_p.append(map_sharded(len(labelled), lambda idx, m=masks: sam_box_probs(
                sam, labelled.images[idx], m[idx], cfg, emb)))
        else:
            sam_p.append(soft)
        images.append(labelled.images)
        ssl_p.append(soft)
        targets.append(labelled.tumour.astype(np.float32))
    pool = AdapterPool(*(np.concatenate(a) for a in (images, sam_p, ssl_p, targets)))
    adapter = build_adapter(cfg.adapter)
    train_adapter(adapter, pool, cfg.adapter, seed, device)
    return adapter


@dataclass
class PseudoLabels:
    """Per unlabelled slice: SSL probability, raw SAM probability and the refined probability."""

    ssl: np.ndarray
    sam: np.ndarray
    refined: np.ndarray
    extra: dict = field(default_factory=dict)


def pseudo_label(sam: SAMSegmenter, adapter: torch.nn.Module | None, images: np.ndarray, ssl_probs: np.ndarray,
                 cfg: Config, device: torch.device, embeddings: torch.Tensor | None = None) -> PseudoLabels:
    """7. SSL mask (components >= ``prompts.min_area``) -> boxes -> SAM -> adapter (or raw SAM)."""
    masks = np.stack([filter_components(p > 0.5, cfg.prompts.min_area) for p in ssl_probs])
    sam_p = sam_box_probs(sam, images, masks, cfg, embeddings)
    # the adapter was trained with binary (corrupted) masks in its SSL channel: give it the binary SSL mask
    ssl_in = masks.astype(np.float32) if cfg.adapter.ssl_input == "mask" else ssl_probs
    refiner = cfg.loop.refiner
    if refiner == "sam_gated":  # binary labels; scored on the mean probability (its entropy is informative)
        refined = gated_fusion(masks, sam_p, cfg.prompts.min_area, cfg.prompts.box_margin, cfg.loop.gate_dice)
        return PseudoLabels(ssl_probs, sam_p, refined, {"score_probs": mean_fusion(ssl_probs, sam_p)})
    if refiner == "sam_mean":
        return PseudoLabels(ssl_probs, sam_p, mean_fusion(ssl_probs, sam_p))
    refined = refine(adapter, images, sam_p, ssl_in, device) if adapter is not None else sam_p
    return PseudoLabels(ssl_probs, sam_p, refined)


def sam_gtbox_probs(sam: SAMSegmenter, slices: SliceSet, cfg: Config) -> np.ndarray:
    """SAM prompted with one ground-truth box per tumour component (the zero-shot upper bound of prompting)."""
    return sam_box_probs(sam, slices.images, slices.tumour.astype(bool), cfg)
