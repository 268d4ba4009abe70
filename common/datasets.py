"""Dataset folders: synthetic sets that never touch real data, file checks before any work, split-file locations.

Three rules every project follows (CONVENTIONS, "Data"):

- A synthetic generator writes only into a folder it created itself (:func:`ensure_dataset`): it generates into
  ``<root>.partial``, leaves a stamp holding its parameters and renames the folder at the end, so a kill never
  leaves a half-written set that looks complete. A non-empty folder without the stamp is refused (it may be a
  user's real dataset), and so is a stamp whose parameters differ; nothing is ever deleted or silently reused.
- Every file a split lists is checked before the run folder is created (:func:`verify_files`): it exists and its
  header decodes (``header``), or it decodes completely (``full``).
- Derived files (splits) live under ``data/splits/<project>/``, keyed by the data root (:func:`split_path`), never
  inside a real data root.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from common.rundir import resolve_path

__all__ = ["STAMP_NAME", "DatasetFolderError", "DataVerificationError", "VerifyMode", "ensure_dataset",
           "verify_files", "check_file", "split_path", "partition_by_suffix"]

STAMP_NAME = ".synthetic-stamp.json"
_OWNER_NAME = ".synthetic-partial-owner"
VerifyMode = Literal["header", "full", "off"]


class DatasetFolderError(RuntimeError):
    """A dataset folder that a synthetic generator must not write into or reuse; the message says what to do."""


class DataVerificationError(RuntimeError):
    """One or more dataset files are missing or do not decode; the message lists them and the fix."""


# --------------------------------------------------------------------------------------------- synthetic sets
def _canonical(params: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(dict(params), sort_keys=True, default=str))


def ensure_dataset(root: str | Path, params: Mapping[str, Any], generate: Callable[[Path], Any], *,
                   what: str = "synthetic dataset") -> Path:
    """Return ``root`` holding the synthetic set described by ``params``, generating it on first use.

    ``generate(folder)`` writes the set into ``folder`` (an empty ``<root>.partial``). ``params`` must determine
    the content (generator parameters and seed); they are stored in ``<root>/.synthetic-stamp.json``.

    - stamp present, same params -> reused as it is;
    - stamp present, other params -> :class:`DatasetFolderError` (choose another root or delete it yourself);
    - folder exists, not empty, no stamp -> :class:`DatasetFolderError` (never written into: it may be real data);
    - ``<root>.partial`` left by a killed run (it carries our owner mark) -> removed and generated again;
      a ``.partial`` folder without the mark is refused like any foreign folder.
    """
    root = Path(root)
    wanted = _canonical(params)
    stamp = root / STAMP_NAME
    if stamp.is_file():
        found = json.loads(stamp.read_text())
        if found != wanted:
            diff = sorted(k for k in set(found) | set(wanted) if found.get(k) != wanted.get(k))
            raise DatasetFolderError(
                f"{root} holds a {what} generated with other parameters (differing: {', '.join(diff)}). It is "
                f"never regenerated in place: point data.root at another folder, or delete {root} yourself.")
        return root
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DatasetFolderError(
            f"refusing to write a {what} into {root}: the folder is not empty and has no {STAMP_NAME}, so it was "
            f"not created by this generator (it may hold real data). Use an empty or new folder for synthetic "
            f"data, or pass real data with --data-root / data.synthetic=false.")
    partial = root.with_name(root.name + ".partial")
    if partial.exists():
        if not (partial / _OWNER_NAME).is_file():
            raise DatasetFolderError(f"{partial} exists and was not created by this generator; move it away")
        shutil.rmtree(partial)  # our own leftover from a killed generation
    partial.mkdir(parents=True)
    (partial / _OWNER_NAME).write_text(str(os.getpid()))
    generate(partial)
    (partial / _OWNER_NAME).unlink()
    (partial / STAMP_NAME).write_text(json.dumps(wanted, indent=2, sort_keys=True))
    if root.exists():  # an empty folder the user created for us
        root.rmdir()
    os.replace(partial, root)
    return root


# --------------------------------------------------------------------------------------------- file checks
def _check_image(path: Path, full: bool) -> None:
    from PIL import Image

    with Image.open(path) as img:
        if full:
            img.load()
        else:
            img.verify()


def _check_nifti(path: Path, full: bool) -> None:
    import nibabel as nib

    img = nib.load(str(path))
    if full:
        img.get_fdata(dtype="float32")


def _check_npy(path: Path, full: bool) -> None:
    import numpy as np

    arr = np.load(path, mmap_mode=None if full else "r", allow_pickle=False)
    if full:
        _ = arr.sum()


def _check_npz(path: Path, full: bool) -> None:
    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        for key in data.files if full else data.files[:1]:
            _ = data[key]


def _check_h5(path: Path, full: bool) -> None:
    import h5py

    with h5py.File(path, "r") as handle:
        if full:
            handle.visititems(lambda _name, obj: obj[()] if isinstance(obj, h5py.Dataset) else None)


_CHECKERS: dict[str, Callable[[Path, bool], None]] = {
    ".png": _check_image, ".jpg": _check_image, ".jpeg": _check_image, ".bmp": _check_image,
    ".tif": _check_image, ".tiff": _check_image, ".gif": _check_image,
    ".nii": _check_nifti, ".gz": _check_nifti, ".npy": _check_npy, ".npz": _check_npz,
    ".h5": _check_h5, ".hdf5": _check_h5,
}


def check_file(path: str | Path, mode: VerifyMode = "header") -> str | None:
    """``None`` when ``path`` exists and decodes (header or fully), else the problem in words."""
    path = Path(path)
    if not path.is_file():
        return "missing"
    if mode == "off":
        return None
    suffix = path.suffix.lower()
    checker = _CHECKERS.get(suffix)
    if suffix == ".gz" and not path.name.lower().endswith(".nii.gz"):
        checker = None
    if checker is None:  # a format we do not decode here (csv, txt, ...): existence and a readable first block
        try:
            with path.open("rb") as handle:
                handle.read(1)
        except OSError as exc:
            return f"unreadable ({exc})"
        return None
    try:
        checker(path, mode == "full")
    except Exception as exc:  # every decoder raises its own type; the message is what matters
        return f"does not decode ({type(exc).__name__}: {exc})"
    return None


def verify_files(paths: Iterable[str | Path], mode: VerifyMode = "header", *, what: str = "dataset",
                 workers: int = 8, key: str = "data.verify") -> int:
    """Check every file before any work: exists, and decodes its header (``header``) or completely (``full``).

    Runs in a thread pool (decoders release the GIL while reading). Raises :class:`DataVerificationError` listing
    every bad file (the first 20 by name) and the fix. Returns the number of files checked (0 with ``off``).
    """
    files = [Path(p) for p in paths]
    if mode == "off":
        return 0
    if mode not in ("header", "full"):
        raise ValueError(f"{key} must be header, full or off, got {mode!r}")
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        problems = list(pool.map(lambda p: check_file(p, mode), files))
    bad = [(p, why) for p, why in zip(files, problems, strict=True) if why is not None]
    if bad:
        shown = "\n".join(f"  {p}: {why}" for p, why in bad[:20])
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise DataVerificationError(
            f"{len(bad)} of {len(files)} {what} files are missing or corrupt:\n{shown}{more}\n"
            f"Re-copy or re-extract them (or remove them from the split file); nothing was trained. "
            f"`{key}=off` skips this check.")
    return len(files)


# --------------------------------------------------------------------------------------------- derived files
def split_path(project: str, data_root: str | Path, name: str = "split.csv", override: str | Path | None = None
               ) -> Path:
    """Where a generated split file lives: ``override`` when given (``data.split_file``), else
    ``data/splits/<project>/<root-name>-<hash of the absolute root>/<name>``: one per data root, never inside it."""
    if override is not None and str(override):
        return resolve_path(override)
    absolute = Path(data_root).expanduser().resolve()
    digest = hashlib.sha1(str(absolute).encode()).hexdigest()[:10]
    return resolve_path("data/splits") / project / f"{absolute.name}-{digest}" / name


def partition_by_suffix(paths: Sequence[str | Path], suffixes: Sequence[str], *, where: str = "",
                        warn: bool = True) -> tuple[list[Path], list[Path]]:
    """Split ``paths`` into (kept, ignored) by suffix (case-insensitive); ignored files are counted and named on
    stdout, never dropped silently. Hidden files (``.name``) are ignored without a word."""
    wanted = {s.lower() for s in suffixes}
    kept, ignored = [], []
    for path in map(Path, paths):
        if path.name.startswith("."):
            continue
        (kept if "".join(path.suffixes[-2:]).lower() in wanted or path.suffix.lower() in wanted else ignored
         ).append(path)
    if ignored and warn:
        names = ", ".join(p.name for p in ignored[:10]) + (" ..." if len(ignored) > 10 else "")
        print(f"note: ignored {len(ignored)} file(s) with other suffixes than {sorted(wanted)}"
              f"{' in ' + where if where else ''}: {names}")
    return kept, ignored
