"""Data-side stages of the YoloCurvSeg pipeline (paper abstract; README Fig. 2 / Fig. 3 columns of llmir/YoloCurvSeg),
as plain functions that ``train.py`` drives in order:

1. :func:`prepare_data` - list the dataset, check every file it lists, pick the single labelled image, read or
   simulate its noisy skeleton (all before a run folder exists);
2. :func:`build_background` - inflated inpainting mask, inpainted background, curve contrast estimate;
3. :func:`generate_pairs` - diversified backgrounds + SCA curves -> naive composites (domain A) and exact masks;
4. :func:`pce_labels` - fg+bg scribbles of the weakly supervised baseline;
5. :func:`synthesis_figure` - the figure with the paper's columns.

The networks of the later stages (synthesizer, coarse and fine segmenter) are trained by ``engine.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from common.config import ConfigError
from common.datasets import verify_files
from common.rundir import resolve_path
from common.synthetic import as_rng
from common.tracking import image_grid, overlay_mask
from yolocurvseg.background import augment_background, estimate_curve_contrast, inpaint, inpainting_mask
from yolocurvseg.compositor import (
    CurveAppearance,
    centre_contrast,
    curve_layer,
    fit_appearance,
    fuse,
    radius_map,
    renoise_band,
    texture_std,
)
from yolocurvseg.data import DATASETS, Case, LoadedCase, case_files, list_cases, load_cases
from yolocurvseg.hidden_domain import ensure_hidden_domain
from yolocurvseg.sca import SCAParams, generate_curves, preset_with_overrides
from yolocurvseg.settings import Config
from yolocurvseg.skeleton import read_noisy_skeleton, scribble_from_skeleton, simulate_noisy_skeleton

__all__ = ["Splits", "list_splits", "Prepared", "noisy_skeleton", "prepare_data", "sca_params", "Background",
           "build_background", "SyntheticPairs", "generate_pairs", "appearance_rows", "pce_labels", "synthesis_figure"]


@dataclass
class Splits:
    """The dataset ``root`` and the cases (paths) of its training and test splits."""

    root: Path
    train: list[Case]
    test: list[Case]


def list_splits(cfg: Config) -> Splits:
    """The cases of ``cfg.data`` (generating the hidden domain first when ``data.synthetic``), every listed file
    checked with ``data.verify`` (missing or undecodable files stop here, naming each file)."""
    d = cfg.data
    root = ensure_hidden_domain(d.root, d.n_train, d.n_test, d.size, d.synth_seed) if d.synthetic else \
        resolve_path(d.root)
    train = list_cases(d.dataset, root, "train", **d.reader_kwargs)
    test = list_cases(d.dataset, root, "test", **d.reader_kwargs)
    if d.max_train_images:
        train = train[: d.max_train_images]
    verify_files(case_files(train + test), d.verify, what=f"{d.dataset} ({root})")
    return Splits(root, train, test)


@dataclass
class Prepared:
    """Loaded cases: ``labelled`` (with its ``skeleton``), all ``train`` cases and ``test`` cases; ``polarity``;
    ``skeleton_source``: where the labelled image's noisy skeleton came from (a file path, or ``simulated ...``)."""

    labelled: LoadedCase
    skeleton: np.ndarray
    train: list[LoadedCase]
    test: list[LoadedCase]
    polarity: str
    skeleton_source: str = ""


def noisy_skeleton(case: Case, loaded: LoadedCase, root: Path, cfg: Config, rng: int | np.random.Generator
                   ) -> tuple[np.ndarray, str]:
    """The noisy skeleton of one training case and where it came from, by ``data.skeleton``: ``file`` reads
    ``<root>/skeleton/<id>.png`` (missing -> error naming the file); ``simulate`` draws one from the full label
    (an explicit choice: the paper's setting has no such label). Returns ``(bool (H, W), source)``."""
    if cfg.data.skeleton == "file":
        if case.skeleton is None:
            raise ConfigError(f"`data.skeleton` = file but {root / 'skeleton' / (case.case_id + '.png')} does not "
                              f"exist; put the released noisy skeleton there, or choose data.skeleton=simulate to "
                              f"simulate one from the full label (not the paper's setting)")
        return read_noisy_skeleton(case.skeleton, loaded.image.shape), str(case.skeleton)
    if loaded.label is None:
        raise ConfigError(f"`data.skeleton` = simulate needs the label of case {case.case_id} ({case.image}), "
                          f"which has none; use data.skeleton=file with a drawn skeleton")
    return simulate_noisy_skeleton(loaded.label, rng, cfg.skeleton) > 0, f"simulated from the label {case.label}"


def prepare_data(cfg: Config) -> Prepared:
    """Stage 1: the splits of ``cfg.data`` (see :func:`list_splits`), decoded, with the labelled image's skeleton."""
    d = cfg.data
    splits = list_splits(cfg)
    ids = [c.case_id for c in splits.train]
    chosen = d.labelled_case or ids[0]
    if chosen not in ids and chosen.isdigit():  # YAML reads an override 03 as the octal integer 3
        chosen = next((i for i in ids if i.isdigit() and int(i) == int(chosen)), chosen)
    if chosen not in ids:
        raise ConfigError(f"`data.labelled_case` = {chosen!r} is not a training case of {splits.root}; choose one "
                          f"of {ids}")
    train = load_cases(splits.train, d.dataset)
    test = load_cases(splits.test, d.dataset)
    i = ids.index(chosen)
    skeleton, source = noisy_skeleton(splits.train[i], train[i], splits.root, cfg, cfg.seed)
    if cfg.pce.images == "all" and cfg.method == "pce_skeleton":
        for k, (case, loaded) in enumerate(zip(splits.train, train, strict=True)):
            if k != i:  # every skeleton is read (or simulated) before any work
                rng = np.random.default_rng([cfg.seed, 7, k])
                loaded.skeleton = noisy_skeleton(case, loaded, splits.root, cfg, rng)[0]
    print(f"[yolocurvseg] labelled image {chosen}: noisy skeleton ({d.skeleton}) {source}")
    return Prepared(train[i], skeleton, train, test, DATASETS[d.dataset].polarity, source)


def sca_params(cfg: Config) -> SCAParams:
    """The SCA preset of ``cfg.curves`` with its overrides (already checked when the config was loaded)."""
    return preset_with_overrides(cfg.curves.preset, dict(cfg.curves.overrides))


@dataclass
class Background:
    """``mask`` (inflated skeleton, bool), ``image`` (inpainted background, float32, re-noised when
    ``background.renoise``), ``contrast`` (median curve contrast on the skeleton) and the fitted ``appearance`` of
    the curves (None: one median contrast, no PSF)."""

    mask: np.ndarray
    image: np.ndarray
    contrast: float
    appearance: CurveAppearance | None = None


def build_background(prep: Prepared, cfg: Config) -> Background:
    """Stage 2: inpaint the inflated noisy skeleton (inside the FOV) out of the labelled image, fit the curve
    appearance on the residual (``compositor.fit_appearance``), re-noise the band."""
    img, fov = prep.labelled.image, prep.labelled.fov
    mask = inpainting_mask(prep.skeleton, cfg.background.radius) & fov
    image = inpaint(img, mask, cfg.background.method)
    cc = cfg.curves
    contrast = cc.contrast or estimate_curve_contrast(img, image, prep.skeleton, prep.polarity)
    appearance = None
    if cc.contrast_model == "calibre" or cc.psf == "fitted":
        appearance = fit_appearance(img, image, prep.skeleton, prep.polarity, float(cfg.background.radius))
        if cc.contrast_model == "median":
            appearance = CurveAppearance(appearance.sigma, contrast, 0.0, contrast, contrast)
        if cc.psf == "off":
            appearance = replace(appearance, sigma=0.0)
    if cfg.background.renoise:
        image = renoise_band(image, img, mask, fov, np.random.default_rng([cfg.seed, 103]))
    return Background(mask, image, contrast, appearance)


@dataclass
class SyntheticPairs:
    """``composites`` ``(N, H, W)`` float32 (domain A), exact ``masks`` ``(N, H, W)`` uint8, the rendered ``curves``
    (anti-aliased coverage) and the diversified ``backgrounds``, both ``(N, H, W)`` float32."""

    composites: np.ndarray
    masks: np.ndarray
    curves: np.ndarray
    backgrounds: np.ndarray


def generate_pairs(bg: Background, prep: Prepared, cfg: Config, n: int | None = None) -> SyntheticPairs:
    """Stage 3: ``n`` (default ``curves.n_samples``) synthetic pairs; deterministic given ``cfg.seed``. Curve layer
    ``compositor.curve_layer`` (contrast by local radius, PSF) times a jitter in [0.8, 1.2], fused with a
    diversified background."""
    n = cfg.curves.n_samples if n is None else n
    rng = as_rng(np.random.default_rng([cfg.seed, 101]))
    params = sca_params(cfg)
    fov = prep.labelled.fov
    multiplicative = cfg.curves.contrast_model == "calibre"
    comps, masks, curves, bgs = [], [], [], []
    for _ in tqdm(range(n), desc="curves", disable=not cfg.runtime.progress, leave=False):
        b = augment_background(bg.image, rng, cfg.background.aug, fov)
        c = generate_curves(b.shape, params, rng, allowed=fov)
        radii = radius_map(c.tree.pos, c.tree.radius, c.intensity)
        layer = curve_layer(c.intensity, radii, bg.appearance, bg.contrast) * rng.uniform(0.8, 1.2)
        comps.append(fuse(b, layer, prep.polarity, multiplicative))
        masks.append(c.mask.astype(np.uint8))
        curves.append(c.intensity)
        bgs.append(b)
    return SyntheticPairs(np.stack(comps), np.stack(masks), np.stack(curves), np.stack(bgs))


def appearance_rows(prep: Prepared, cfg: Config, variants: dict[str, list[str]], n: int = 24) -> list[dict]:
    """Stage 3 check: the composites' appearance against the real training images (``compositor.centre_contrast``
    by calibre: radius < 1.2 px, 1.2-2 px, > 2 px; ``texture_std`` of the background inside vs outside the inpainted
    band). One row for the real images (their labels, only for this measurement), one per ``variants`` entry
    (name -> config overrides, e.g. the compositor features switched off)."""
    from common.config import apply_overrides, from_dict, to_dict

    def by_calibre(images: list, masks: list, fovs: list) -> dict[str, float]:
        pairs = [centre_contrast(i, m, f, prep.polarity) for i, m, f in zip(images, masks, fovs, strict=True)]
        r, c = np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])
        bins = {"contrast_r_lt_1.2": r < 1.2, "contrast_r_1.2_2": (r >= 1.2) & (r <= 2), "contrast_r_gt_2": r > 2}
        return {k: float(np.median(c[b])) if b.any() else float("nan") for k, b in bins.items()}

    lab = prep.labelled
    vessel_free = lab.fov & ~ndimage.binary_dilation(lab.label > 0, iterations=2) if lab.label is not None else lab.fov
    labelled = [c for c in prep.train if c.label is not None]
    rows = [{"images": "real training images", **by_calibre([c.image for c in labelled], [c.label for c in labelled],
                                                            [c.fov for c in labelled]),
             "texture_in_band": float("nan"), "texture_outside_band": texture_std(lab.image, vessel_free)}]
    for name, overrides in variants.items():
        vcfg = from_dict(Config, apply_overrides(to_dict(cfg), overrides))
        bg = build_background(prep, vcfg)
        pairs = generate_pairs(bg, prep, vcfg, n=n)
        outside = vessel_free & ~ndimage.binary_dilation(bg.mask, iterations=2)
        rows.append({"images": f"composites ({name})", **by_calibre(list(pairs.composites), list(pairs.masks),
                                                                    [lab.fov] * n),
                     "texture_in_band": texture_std(bg.image, bg.mask), "texture_outside_band":
                     texture_std(bg.image, outside), "psf_sigma": bg.appearance.sigma if bg.appearance else 0.0})
    return rows


def pce_labels(prep: Prepared, cfg: Config) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stage 4: (image, scribble) pairs of the pCE baseline: the labelled image's skeleton, or the skeletons of
    every training image (``pce.images = all``; read or simulated by ``data.skeleton`` in :func:`prepare_data`).
    Scribble labels: 1 fg, 0 bg, 2 unlabelled (also outside the FOV)."""
    pairs = []
    cases = [prep.labelled] if cfg.pce.images == "one" else prep.train
    for case in cases:
        sk = prep.skeleton if case is prep.labelled else case.skeleton
        if sk is None:
            raise ValueError(f"case {case.case_id} has no noisy skeleton; prepare_data reads or simulates one for "
                             f"every training image when pce.images=all")
        scribble = scribble_from_skeleton(sk, cfg.pce.bg_dilation)
        scribble[~case.fov] = 2
        pairs.append((case.image, scribble))
    return pairs


def synthesis_figure(prep: Prepared, bg: Background, pairs: SyntheticPairs, synthesized: np.ndarray, rows: int = 3
                     ) -> np.ndarray:
    """Stage 5: README Fig. 3 columns: noisy skeleton | inflated inpainting mask | background | generated curves |
    synthesized image | curves overlaid on it. Returns an ``(H', W', 3)`` uint8 grid."""
    grid = []
    for i in range(min(rows, len(synthesized))):
        grid.append([overlay_mask(prep.labelled.image, prep.skeleton.astype(np.uint8)),
                     bg.mask.astype(np.float32), pairs.backgrounds[i], pairs.curves[i], synthesized[i],
                     overlay_mask(synthesized[i], pairs.masks[i])])
    return image_grid(grid)
