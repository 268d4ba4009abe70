"""Readers for the on-disk formats of the papers' datasets: 2D images (PNG, JPEG, TIFF, BMP, GIF masks) and NIfTI.

Every failure names the file: missing, truncated or corrupt, or of an unexpected mode. Nothing is skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["IMAGE_SUFFIXES", "ImageReadError", "list_images", "read_image", "read_mask", "read_nifti", "NiftiVolume",
           "require_columns"]


class ImageReadError(OSError):
    """An input image or volume that cannot be used; the message names the file and the problem."""


_MODES = {"L", "RGB", "I", "I;16", "F"}

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")


def list_images(paths: Sequence[str | Path], suffixes: Sequence[str] = IMAGE_SUFFIXES, recursive: bool = True,
                what: str = "--predict") -> list[Path]:
    """Expand files and folders (searched recursively by default) into a sorted list of image files.

    A path that does not exist, or an input that yields no image, raises FileNotFoundError naming ``what``.
    """
    files: list[Path] = []
    wanted = {s.lower() for s in suffixes}
    for path in map(Path, paths):
        if path.is_dir():
            found = path.rglob("*") if recursive else path.iterdir()
            files += sorted(f for f in found if f.is_file() and f.suffix.lower() in wanted)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{what} {path}: no such file or folder")
    if not files:
        raise FileNotFoundError(f"{what} {[str(p) for p in paths]}: no images ({sorted(wanted)}) found")
    return files


def read_image(path: str | Path, mode: str | None = None, allowed_modes: Sequence[str] | None = None) -> np.ndarray:
    """Read a 2D image into a numpy array (``(H, W)`` or ``(H, W, 3)``), fully decoded.

    ``mode``: convert to ``L`` (grey uint8), ``RGB`` (uint8) or ``F`` (float32); ``None`` keeps the file's own
    data (16-bit TIFF/PNG stay uint16/int32). ``allowed_modes`` rejects files whose native PIL mode is not listed
    (e.g. a colour image where a grey mask is expected).
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image not found: {path}. Check the dataset root and the file list/CSV that names it")
    if mode is not None and mode not in _MODES:
        raise ValueError(f"mode must be one of {sorted(_MODES)} or None, got {mode!r}")
    try:
        with Image.open(path) as img:
            img.load()  # force decoding now: truncated files fail here, not later in a worker
            if allowed_modes is not None and img.mode not in allowed_modes:
                raise ImageReadError(f"{path} has image mode {img.mode}, expected one of {list(allowed_modes)}")
            if img.mode == "P" and mode is None:  # palette (GIF masks): keep the indices
                return np.array(img)
            if mode is not None and img.mode != mode:
                img = img.convert(mode)
            return np.array(img)
    except ImageReadError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"cannot decode image {path} ({exc}); the file is corrupt or truncated: "
                             f"re-download or re-export it") from exc


def read_mask(path: str | Path, binary: bool = False, num_labels: int | None = None) -> np.ndarray:
    """Read a label mask (PNG/GIF/TIFF/BMP) as an integer ``(H, W)`` array.

    RGB masks whose three channels are equal are accepted as grey; a truly colour mask is an error. ``binary``
    maps every non-zero value to 1; ``num_labels`` checks that labels lie in ``[0, num_labels)``.
    """
    arr = read_image(path)
    if arr.ndim == 3:
        if arr.shape[-1] == 4:
            arr = arr[..., :3]
        if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])):
            raise ImageReadError(f"mask {path} is a colour image; expected one label per pixel (grey or palette)")
        arr = arr[..., 0]
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if binary:
        return (arr > 0).astype(np.uint8)
    if num_labels is not None:
        bad = np.setdiff1d(np.unique(arr), np.arange(num_labels))
        if bad.size:
            raise ImageReadError(f"mask {path} holds label(s) {bad.tolist()} outside 0..{num_labels - 1}")
    return arr


class NiftiVolume:
    """A NIfTI volume: ``array`` in the file's voxel order, ``affine`` (4x4) and ``spacing`` (mm per axis)."""

    def __init__(self, array: np.ndarray, affine: np.ndarray, spacing: tuple[float, ...], path: Path):
        self.array, self.affine, self.spacing, self.path = array, affine, spacing, path


def read_nifti(path: str | Path, dtype: np.dtype | type | None = None) -> NiftiVolume:
    """Read ``.nii``/``.nii.gz`` with nibabel, fully loading the data so truncated files fail here."""
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"volume not found: {path}. Check the dataset root and the case list")
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj)
    except Exception as exc:  # nibabel raises several types (ImageFileError, EOFError, zlib/gzip errors)
        raise ImageReadError(f"cannot read NIfTI volume {path} ({type(exc).__name__}: {exc}); the file is "
                             f"corrupt or truncated: re-download or re-convert it") from exc
    if dtype is not None:
        data = data.astype(dtype)
    spacing = tuple(float(z) for z in img.header.get_zooms()[: data.ndim])
    return NiftiVolume(data, np.asarray(img.affine), spacing, path)


def require_columns(frame, columns: Sequence[str], source: str | Path) -> None:
    """Raise a clear error when a table (pandas DataFrame) lacks columns a dataset format requires."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{source} lacks column(s) {missing}; found {list(frame.columns)}. "
                         f"Check that the file is the dataset's published CSV, unmodified")
