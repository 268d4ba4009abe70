"""Data-side stages of the YoloCurvSeg pipeline (paper Fig. 2 / README Fig. 3 columns), as plain functions:

1. :func:`prepare_data` - read the dataset, pick the single labelled image, read or simulate its noisy skeleton;
2. :func:`build_background` - inflated inpainting mask, inpainted background, curve contrast estimate;
3. :func:`generate_pairs` - diversified backgrounds + SCA curves -> naive composites (domain A) and exact masks;
4. :func:`pce_labels` - fg+bg scribbles of the weakly supervised baseline;
5. :func:`synthesis_figure` - the figure with the paper's columns.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from common.config import ConfigError
from common.synthetic import as_rng
from common.tracking import image_grid, overlay_mask
from yolocurvseg.background import augment_background, composite, estimate_curve_contrast, inpaint, inpainting_mask
from yolocurvseg.data import DATASETS, LoadedCase, list_cases, load_cases
from yolocurvseg.sca import SCAParams, generate_curves, preset
from yolocurvseg.settings import Config
from yolocurvseg.skeleton import read_noisy_skeleton, scribble_from_skeleton, simulate_noisy_skeleton
from yolocurvseg.synth import ensure_synthetic

__all__ = ["Prepared", "prepare_data", "sca_params", "Background", "build_background", "generate_pairs",
           "pce_labels", "synthesis_figure"]


@dataclass
class Prepared:
    """Loaded cases: ``labelled`` (with its ``skeleton``), all ``train`` cases and ``test`` cases; ``polarity``."""

    labelled: LoadedCase
    skeleton: np.ndarray
    train: list[LoadedCase]
    test: list[LoadedCase]
    polarity: str


def prepare_data(cfg: Config) -> Prepared:
    """Read the dataset of ``cfg.data`` (generating the hidden domain first when ``data.synthetic``)."""
    from common.rundir import resolve_path

    d = cfg.data
    if d.dataset not in DATASETS:
        raise ConfigError(f"`data.dataset` = {d.dataset!r}; choose one of {sorted(DATASETS)}")
    root = ensure_synthetic(d.root, d.n_train, d.n_test, d.size, d.synth_seed) if d.synthetic else resolve_path(d.root)
    train_cases = list_cases(d.dataset, root, "train", **d.reader_kwargs)
    test_cases = list_cases(d.dataset, root, "test", **d.reader_kwargs)
    if d.max_train_images:
        train_cases = train_cases[: d.max_train_images]
    ids = [c.case_id for c in train_cases]
    chosen = d.labelled_case or ids[0]
    if chosen not in ids:
        raise ConfigError(f"`data.labelled_case` = {chosen!r} is not a training case of {root}; choose one of {ids}")
    train = load_cases(train_cases, d.dataset)
    test = load_cases(test_cases, d.dataset)
    labelled = train[ids.index(chosen)]
    case = train_cases[ids.index(chosen)]
    if d.skeleton == "file" or (d.skeleton == "auto" and case.skeleton is not None):
        if case.skeleton is None:
            raise ConfigError(f"`data.skeleton` = file but {root}/skeleton/{chosen}.png does not exist; draw it or use "
                              f"data.skeleton=simulate")
        skeleton = read_noisy_skeleton(case.skeleton, labelled.image.shape)
    else:
        if labelled.label is None:
            raise ConfigError(f"case {chosen} has neither a skeleton file nor a label to simulate one from")
        skeleton = simulate_noisy_skeleton(labelled.label, cfg.seed, cfg.skeleton) > 0
    return Prepared(labelled, skeleton, train, test, DATASETS[d.dataset].polarity)


def sca_params(cfg: Config) -> SCAParams:
    """The SCA preset of ``cfg.curves`` with its overrides (unknown fields are a config error)."""
    fields = {f.name for f in dataclasses.fields(SCAParams)}
    bad = sorted(set(cfg.curves.overrides) - fields)
    if bad:
        raise ConfigError(f"unknown `curves.overrides` key(s) {bad}; valid keys: {sorted(fields)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.curves.overrides.items()}
    try:
        return preset(cfg.curves.preset, **values)
    except KeyError as exc:
        raise ConfigError(f"`curves.preset`: {exc.args[0]}") from exc
    except ValueError as exc:
        raise ConfigError(f"`curves.overrides`: {exc}") from exc


@dataclass
class Background:
    """``mask`` (inflated skeleton, bool), ``image`` (inpainted background, float32), ``contrast`` of the curves."""

    mask: np.ndarray
    image: np.ndarray
    contrast: float


def build_background(prep: Prepared, cfg: Config) -> Background:
    mask = inpainting_mask(prep.skeleton, cfg.background.radius) & prep.labelled.fov
    image = inpaint(prep.labelled.image, mask, cfg.background.method)
    contrast = cfg.curves.contrast or estimate_curve_contrast(prep.labelled.image, image, prep.skeleton,
                                                              prep.polarity)
    return Background(mask, image, contrast)


def generate_pairs(bg: Background, prep: Prepared, cfg: Config, n: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``n`` synthetic pairs: composites ``(N, H, W)`` float32, masks ``(N, H, W)`` uint8, curve intensities and the
    diversified backgrounds ``(N, H, W)`` float32. Deterministic given ``cfg.seed``."""
    n = cfg.curves.n_samples if n is None else n
    rng = as_rng(np.random.default_rng([cfg.seed, 101]))
    params = sca_params(cfg)
    fov = prep.labelled.fov
    comps, masks, curves, bgs = [], [], [], []
    for _ in range(n):
        b = augment_background(bg.image, rng, cfg.background.aug, fov)
        c = generate_curves(b.shape, params, rng, allowed=fov)
        contrast = bg.contrast * rng.uniform(0.8, 1.2)
        comps.append(composite(b, c.intensity, contrast, prep.polarity))
        masks.append(c.mask.astype(np.uint8))
        curves.append(c.intensity)
        bgs.append(b)
    return np.stack(comps), np.stack(masks), np.stack(curves), np.stack(bgs)


def pce_labels(prep: Prepared, cfg: Config) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, scribble) pairs of the pCE baseline: the labelled image's skeleton, or simulated skeletons of every
    training image (``pce.images = all``). Scribble labels: 1 fg, 0 bg, 2 unlabelled; outside the FOV unlabelled."""
    pairs = []
    cases = [prep.labelled] if cfg.pce.images == "one" else prep.train
    for i, case in enumerate(cases):
        if case is prep.labelled:
            sk = prep.skeleton
        else:
            sk = simulate_noisy_skeleton(case.label, np.random.default_rng([cfg.seed, 7, i]), cfg.skeleton) > 0
        scribble = scribble_from_skeleton(sk, cfg.pce.bg_dilation)
        scribble[~case.fov] = 2
        pairs.append((case.image, scribble))
    return pairs


def synthesis_figure(prep: Prepared, bg: Background, backgrounds: np.ndarray, curves: np.ndarray,
                     synthesized: np.ndarray, masks: np.ndarray, rows: int = 3) -> np.ndarray:
    """README Fig. 3 columns: noisy skeleton | inflated inpainting mask | background | generated curves |
    synthesized image | curves overlaid on it. Returns an ``(H', W', 3)`` uint8 grid."""
    grid = []
    for i in range(min(rows, len(synthesized))):
        grid.append([overlay_mask(prep.labelled.image, prep.skeleton.astype(np.uint8)),
                     bg.mask.astype(np.float32), backgrounds[i], curves[i], synthesized[i],
                     overlay_mask(synthesized[i], masks[i])])
    return image_grid(grid)
