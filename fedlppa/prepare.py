"""Convert the PNG release to the h5 layout the loader reads (official
``code_v4/dataloaders/odocfaz_data_processing.py``).

``python prepare.py --png-root DIR --out DIR --dataset faz|odoc|polyp``

PNG release::

    <png_root>/Domain{k}/{train,test}/{imgs,mask,scr,scr_n,block,box,keypoint}/<stem>.png

h5 keys: ``imgs`` -> ``image`` (per-image min-max to [0, 1], float32, grey ``(H, W)`` or RGB ``(3, H, W)``),
``mask`` -> ``mask``, ``scr`` -> ``scribble``, ``scr_n`` -> ``scribble_noisy``, ``block``, ``box``, ``keypoint``
(test split: image and mask). Value maps: FAZ mask 127 -> 1, weak labels 0 -> 0, 127 -> 1, 254 -> 2 (unlabelled);
fundus mask 170 -> 1 (cup), 85 -> 2 (rim), weak labels also 255 -> 3 (unlabelled). Binary endoscopy PNGs use the FAZ
map (ours: the release's own values are not documented). A pixel value outside the map is an error naming the file.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from fedlppa.data import PNG_DIRS, PNG_MAPS

__all__ = ["PNGMapError", "map_values", "convert_release", "main"]


class PNGMapError(ValueError):
    """A PNG whose values are not in the release's value map."""


def map_values(path: Path, array: np.ndarray, table: dict[int, int]) -> np.ndarray:
    values = np.unique(array)
    unknown = [int(v) for v in values if int(v) not in table]
    if unknown:
        raise PNGMapError(f"{path}: pixel values {unknown} are not in the value map {table}; is --dataset right "
                          f"(faz, odoc, polyp) and is the file a label PNG of the release?")
    lut = np.zeros(256, np.uint8)
    for src, dst in table.items():
        lut[src] = dst
    return lut[array]


def _read(path: Path, colour: bool) -> np.ndarray:
    arr = cv2.imread(str(path), cv2.IMREAD_COLOR if colour else cv2.IMREAD_GRAYSCALE)
    if arr is None:
        raise PNGMapError(f"{path}: cannot be decoded as an image; re-copy it from the release")
    return arr


def _image(path: Path) -> np.ndarray:
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise PNGMapError(f"{path}: cannot be decoded as an image; re-copy it from the release")
    img = raw.astype(np.float32) if raw.ndim == 2 else np.moveaxis(raw[..., :3][..., ::-1], -1, 0).astype(np.float32)
    lo, hi = img.min(), img.max()
    return ((img - lo) / max(hi - lo, 1e-6)).astype(np.float32)


def convert_release(png_root: str | Path, out: str | Path, dataset: str = "faz") -> Path:
    """Write every Domain/split of the PNG release as h5 files; returns ``out``."""
    import h5py

    png_root, out = Path(png_root), Path(out)
    maps = PNG_MAPS.get(dataset, PNG_MAPS["faz"])
    domains = sorted(p for p in png_root.glob("Domain*") if p.is_dir())
    if not domains:
        raise PNGMapError(f"{png_root}: no Domain* folders; expected the PNG release layout (see prepare.py)")
    for domain in domains:
        for split in ("train", "test"):
            images = sorted((domain / split / PNG_DIRS["image"]).glob("*.png"))
            if not images:
                raise PNGMapError(f"{domain / split / PNG_DIRS['image']}: no images")
            for img_path in images:
                arrays = {"image": _image(img_path)}
                for key, folder in PNG_DIRS.items():
                    path = domain / split / folder / img_path.name
                    if key == "image" or not path.is_file():
                        continue
                    table = maps["mask" if key == "mask" else "weak"]
                    arrays[key] = map_values(path, _read(path, False), table)
                target = out / domain.name / split / f"{img_path.stem}.h5"
                target.parent.mkdir(parents=True, exist_ok=True)
                with h5py.File(target, "w") as handle:
                    for key, value in arrays.items():
                        handle.create_dataset(key, data=value, compression="gzip")
    return out


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description="PNG release -> h5 layout of the FedLPPA loader")
    parser.add_argument("--png-root", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--dataset", default="faz", choices=["faz", "odoc", "polyp"])
    args = parser.parse_args(argv)
    out = convert_release(args.png_root, args.out, args.dataset)
    print(f"[fedlppa] h5 layout written to {out}")
    return out


if __name__ == "__main__":
    main()
