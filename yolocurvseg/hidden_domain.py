"""Hidden "real" domain in the DRIVE layout: vessel images with exact masks whose appearance model the pipeline never
sees (the stand-in for a real dataset; ``synth.py`` writes it, ``pipeline.prepare_data`` generates it on first use).

Geometry: ``common.synthetic.vessel_tree`` (a recursive branching tree, a different generator from the pipeline's
SCA, so the curve generator cannot simply copy the test distribution). Appearance (hidden from the pipeline):
textured, unevenly lit background inside a circular FOV with a bright optic-disc-like blob; dark vessels whose
contrast grows with calibre and follows a blurred (Gaussian-like) cross profile with a central light reflex on thick
vessels; multiplicative speckle, additive noise and a gamma curve. Written as DRIVE writes it::

    <root>/training/images/NN_training.tif      RGB uint8 (the green channel carries the vessels)
    <root>/training/1st_manual/NN_manual1.gif   {0, 255}
    <root>/training/mask/NN_training_mask.gif   FOV {0, 255}
    <root>/test/...                             same with _test
    <root>/skeleton/NN.png                      simulated noisy skeleton of every training image (DCA1 statistics)

The pipeline and ``synth.py`` go through :func:`ensure_hidden_domain` (``common.datasets.ensure_dataset``): the set
is written into a fresh ``<root>.partial`` folder and renamed at the end, next to a stamp with its parameters, so a
real dataset folder (or one generated with other parameters) is refused, never written to.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from common.datasets import ensure_dataset
from common.rundir import resolve_path
from common.synthetic import as_rng, smooth_field, speckle_noise, vessel_tree
from yolocurvseg.skeleton import simulate_noisy_skeleton

__all__ = ["render_hidden_case", "write_drive_like", "hidden_domain_params",
           "ensure_hidden_domain"]


def render_hidden_case(size: int, rng: int | np.random.Generator | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One hidden-domain case: RGB uint8 ``(S, S, 3)``, vessel mask bool ``(S, S)``, FOV bool ``(S, S)``."""
    rng = as_rng(rng)
    shape = (size, size)
    yy, xx = np.mgrid[:size, :size]
    c = (size - 1) / 2
    dist = np.hypot(yy - c, xx - c)
    fov = dist <= 0.47 * size
    tree = vessel_tree(shape, rng, roots=int(rng.integers(3, 5)), depth=5, root_radius=size / 48,
                       taper=0.75, min_radius=0.7, segment_length=0.16, branch_angle=32, wobble=14,
                       root_positions="center")
    mask = tree.mask & fov
    # background: illumination + large blobs + fine texture + optic disc
    illum = 0.62 - 0.25 * (dist / (0.5 * size)) ** 2
    bg = illum + 0.16 * (smooth_field(shape, size / 8, rng) - 0.5) + 0.08 * (smooth_field(shape, 1.5, rng) - 0.5)
    oy, ox = c + rng.normal(0, size * 0.08), c + rng.choice([-1, 1]) * size * 0.25
    bg += 0.18 * np.exp(-((yy - oy) ** 2 + (xx - ox) ** 2) / (2 * (size * 0.06) ** 2))
    # vessels: calibre-dependent contrast, blurred profile, central reflex on thick vessels
    radius = ndimage.grey_dilation(tree.radius, size=(3, 3))
    contrast = 0.18 + 0.22 * np.clip(radius / (size / 48), 0, 1)
    profile = ndimage.gaussian_filter(tree.intensity, 0.9)
    reflex = ndimage.gaussian_filter((ndimage.distance_transform_edt(tree.mask) > 1.8) * (radius > 2.0), 0.6)
    green = bg * (1 - contrast * profile + 0.12 * reflex)
    green = speckle_noise(np.clip(green, 0.01, 1), looks=40, rng=rng)
    green = ndimage.gaussian_filter(green, 0.5) + rng.normal(0, 0.015, shape)
    green = np.clip(green, 0, 1) ** 1.3
    green = np.where(fov, green, 0.02)
    red = np.where(fov, np.clip(0.35 + 0.6 * green, 0, 1), 0.03)
    blue = np.where(fov, np.clip(0.4 * green, 0, 1), 0.01)
    rgb = (np.stack([red, green, blue], axis=-1) * 255).round().astype(np.uint8)
    return rgb, mask, fov


def _save_gif(mask: np.ndarray, path: Path) -> None:
    Image.fromarray((mask > 0).astype(np.uint8) * 255, mode="L").save(path)


def write_drive_like(root: str | Path, n_train: int = 12, n_test: int = 8, size: int = 128, seed: int = 0
                     ) -> Path:
    """Write the hidden domain under ``root`` (DRIVE layout, see module docstring); returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    ids = {"test": range(1, n_test + 1), "training": range(n_test + 1, n_test + n_train + 1)}
    for folder, numbers in ids.items():
        for sub in ("images", "1st_manual", "mask"):
            (root / folder / sub).mkdir(parents=True, exist_ok=True)
        for n in numbers:
            rgb, mask, fov = render_hidden_case(size, rng)
            num = f"{n:02d}"
            Image.fromarray(rgb, mode="RGB").save(root / folder / "images" / f"{num}_{folder}.tif")
            _save_gif(mask, root / folder / "1st_manual" / f"{num}_manual1.gif")
            _save_gif(fov, root / folder / "mask" / f"{num}_{folder}_mask.gif")
            if folder == "training":
                (root / "skeleton").mkdir(exist_ok=True)
                sk = simulate_noisy_skeleton(mask, rng)
                Image.fromarray(sk, mode="L").save(root / "skeleton" / f"{num}.png")
    return root


def hidden_domain_params(n_train: int, n_test: int, size: int, seed: int) -> dict[str, int | str]:
    """The parameters that determine the hidden domain (the stamp ``ensure_dataset`` keeps next to it)."""
    return {"generator": "yolocurvseg.hidden_domain", "layout": "drive", "n_train": n_train, "n_test": n_test,
            "size": size, "seed": seed}


def ensure_hidden_domain(root: str | Path, n_train: int, n_test: int, size: int, seed: int) -> Path:
    """``root`` (resolved from the repository root) holding the hidden domain, generated on first use."""
    params = hidden_domain_params(n_train, n_test, size, seed)
    return ensure_dataset(resolve_path(root), params, lambda folder: write_drive_like(folder, n_train, n_test, size,
                                                                                       seed),
                          what="hidden DRIVE-like domain")
