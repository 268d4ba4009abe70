"""Static saliency maps for SPMix (paper Sec. II-A, "saliency mapping") and their precomputation into a PNG tree.

The paper uses a static saliency detector that emphasises intensity differences between lesion and background;
the detector SaliencyMix uses is OpenCV contrib's ``StaticSaliencyFineGrained`` (Montabone & Soto 2010). It needs
``opencv-contrib-python-headless`` (``cv2.saliency``). When it is missing, ``method: spectral_residual`` selects a
pure-numpy spectral-residual detector (Hou & Zhang 2007); ``auto`` picks fine_grained when available. The method
that actually ran is returned by :func:`resolve_method` and recorded in the run config/env.

Maps are stored as 8-bit PNG in a tree parallel to the images (same relative path and stem) plus
``saliency.json`` naming the detector that ran; the command line is ``python -m spmix.saliency_maps``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

METHODS = ("auto", "fine_grained", "spectral_residual")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class SaliencyUnavailableError(RuntimeError):
    """The configured saliency method cannot run in this environment."""


def fine_grained_available() -> bool:
    """True when OpenCV's contrib build provides ``cv2.saliency.StaticSaliencyFineGrained_create``."""
    try:
        import cv2
    except ImportError:
        return False
    return hasattr(getattr(cv2, "saliency", None), "StaticSaliencyFineGrained_create")


def resolve_method(method: str) -> str:
    """Map the configured ``saliency.method`` to the detector that will run (``auto`` -> best available).

    An explicit ``fine_grained`` without the contrib build raises with the install fix instead of silently
    falling back, so the recorded method is always the one that ran.
    """
    if method not in METHODS:
        raise ValueError(f"saliency.method={method!r} is unknown; use one of {METHODS}")
    if method == "auto":
        return "fine_grained" if fine_grained_available() else "spectral_residual"
    if method == "fine_grained" and not fine_grained_available():
        raise SaliencyUnavailableError(
            "saliency.method=fine_grained needs cv2.saliency from opencv-contrib-python-headless, which is missing or "
            "shadowed by opencv-python-headless. Fix: pip install --force-reinstall --no-deps "
            "opencv-contrib-python-headless==<installed opencv version> (the root `make install` does this), "
            "or set saliency.method=spectral_residual")
    return method


def _fine_grained(image: np.ndarray) -> np.ndarray:
    import cv2

    detector = cv2.saliency.StaticSaliencyFineGrained_create()
    ok, sal = detector.computeSaliency(np.ascontiguousarray(image))
    if not ok:
        raise RuntimeError("cv2 StaticSaliencyFineGrained failed on an image")
    return np.asarray(sal, dtype=np.float32)  # OpenCV 3.4 returned uint8, >= 4 float32 (opencv_contrib #1735)


def _spectral_residual(image: np.ndarray, work_size: int = 64, blur_sigma: float = 2.5) -> np.ndarray:
    """Hou & Zhang 2007 on the grey image downsized to ``work_size`` (their 64 px), upsampled back."""
    from scipy import ndimage
    from skimage.transform import resize

    grey = image.astype(np.float32).mean(axis=2) if image.ndim == 3 else image.astype(np.float32)
    small = resize(grey, (work_size, work_size), anti_aliasing=True, preserve_range=True)
    spectrum = np.fft.fft2(small)
    log_amp = np.log(np.abs(spectrum) + 1e-8)
    residual = log_amp - ndimage.uniform_filter(log_amp, size=3, mode="nearest")
    sal = np.abs(np.fft.ifft2(np.exp(residual + 1j * np.angle(spectrum)))) ** 2
    sal = ndimage.gaussian_filter(sal, blur_sigma)
    return resize(sal, grey.shape, preserve_range=True).astype(np.float32)


def compute_saliency(image: np.ndarray, method: str = "auto") -> np.ndarray:
    """Saliency of an RGB uint8 image ``(H, W, 3)`` -> float32 ``(H, W)`` min-max normalised to [0, 1]."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"compute_saliency expects an (H, W, 3) RGB image, got shape {image.shape}")
    resolved = resolve_method(method)
    sal = _fine_grained(image) if resolved == "fine_grained" else _spectral_residual(image)
    lo, hi = float(sal.min()), float(sal.max())
    return (sal - lo) / (hi - lo) if hi > lo else np.zeros_like(sal)


def saliency_path(image_path: Path, image_root: Path, saliency_root: Path) -> Path:
    """``<image_root>/a/ISIC_x.jpg`` -> ``<saliency_root>/a/ISIC_x.png`` (parallel tree, same stem)."""
    return (saliency_root / image_path.relative_to(image_root)).with_suffix(".png")


def precompute_maps(images: Sequence[Path], image_root: str | Path, saliency_root: str | Path,
                    method: str = "auto", overwrite: bool = False, progress: bool = False) -> dict[str, object]:
    """Compute the saliency map of each of ``images`` (under ``image_root``) into ``saliency_root``'s parallel tree.

    Existing maps are kept unless ``overwrite``. Writes ``<saliency_root>/saliency.json`` recording the method
    that ran; returns that record.
    """
    from PIL import Image
    from tqdm import tqdm

    from common.readers import read_image

    image_root, saliency_root = Path(image_root), Path(saliency_root)
    resolved = resolve_method(method)
    todo = [p for p in images if overwrite or not saliency_path(Path(p), image_root, saliency_root).exists()]
    for path in tqdm(todo, desc=f"saliency ({resolved})", disable=not progress or not todo, leave=False):
        out = saliency_path(Path(path), image_root, saliency_root)
        out.parent.mkdir(parents=True, exist_ok=True)
        sal = compute_saliency(read_image(path, mode="RGB"), resolved)
        Image.fromarray(np.round(sal * 255).astype(np.uint8)).save(out)
    record = {"method": resolved, "requested": method, "images": len(images), "written": len(todo),
              "image_root": str(image_root)}
    path = saliency_root / "saliency.json"
    if todo or not path.is_file():  # parallel runs that only read the maps never rewrite the record
        saliency_root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".saliency.json.{os.getpid()}")
        tmp.write_text(json.dumps(record, indent=2))
        os.replace(tmp, path)
    return record


def images_under(image_root: str | Path, exclude: str | Path | None = None) -> list[Path]:
    """Every image below ``image_root`` (recursive), leaving out ``exclude`` (a saliency tree inside it); files
    with other suffixes are counted and named on stdout."""
    from common.datasets import partition_by_suffix

    image_root = Path(image_root)
    if not image_root.is_dir():
        raise FileNotFoundError(f"image folder {image_root} does not exist; pass the folder holding the images")
    skip = Path(exclude).resolve() if exclude is not None else None
    files = sorted(p for p in image_root.rglob("*") if p.is_file()
                   and (skip is None or skip not in p.resolve().parents) and p.suffix.lower() != ".json")
    images, _ = partition_by_suffix(files, IMAGE_SUFFIXES, where=str(image_root))
    if not images:
        raise FileNotFoundError(f"no .jpg/.png images under {image_root}")
    return images


def precompute_tree(image_root: str | Path, saliency_root: str | Path, method: str = "auto",
                    overwrite: bool = False, progress: bool = False) -> dict[str, object]:
    """Maps of every image under ``image_root`` (see :func:`precompute_maps`)."""
    images = images_under(image_root, exclude=saliency_root)
    return precompute_maps(images, image_root, saliency_root, method, overwrite, progress)


def read_saliency_record(saliency_root: str | Path) -> dict[str, object] | None:
    """The ``saliency.json`` written by :func:`precompute_tree`, or None when absent."""
    path = Path(saliency_root) / "saliency.json"
    return json.loads(path.read_text()) if path.is_file() else None
