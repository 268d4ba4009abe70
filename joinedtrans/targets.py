"""Training targets and their decoding (JOINED ``Dataset/pre_FoveaOD.m``, ``Coarse/dataset.py``,
``Coarse/train_smp_y.py::findcenter``).

Coordinates: ``x`` = column (right), ``y`` = row (down), in pixels of the array they refer to.

- Mask codec (REFUGE/GAMMA 8-bit masks): 0 = optic cup, 128 = disc rim, 255 = background; channels
  OC = (m == 0), OD = (m <= 128) (solid disc, cup included), BG = (m == 255), each reduced to its largest connected
  component. PALM disc masks (0 = disc, 255 = background) give OD only, OC empty.
- Heatmap: ``exp(-d^2 / sigma^2)`` (sigma squared, not 2 sigma^2, as in the MATLAB script), ``sigma = 0.05 * H`` of
  the original image, values < 0.01 set to 0, peak 1. The OD landmark is the bounding-box centre of the pixels of
  value 0 (the cup under the REFUGE/GAMMA encoding, the disc under PALM's). No fovea -> an all-zero map.
- Distance map: Euclidean distance transform to the {fovea, OD centre} point set, divided by its maximum.
- Decoding: marginal argmax (x = argmax of column sums, y = argmax of row sums), after a bilinear resize of the
  network's map to the original W x H. [ours] ``constrain_fovea_map`` first keeps only where a fovea can be: inside
  the field of view and off the predicted disc.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

__all__ = ["CUP", "RIM", "BACKGROUND", "largest_component", "fill_holes", "mask_to_channels", "channels_to_mask",
           "label_map", "od_landmark", "heatmap", "distance_map", "decode_marginal", "field_of_view",
           "constrain_fovea_map", "resize_area",
           "resize_nearest", "resize_bilinear", "vertical_extent", "vcdr"]

CUP, RIM, BACKGROUND = 0, 128, 255


def largest_component(binary: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a boolean ``(H, W)`` mask (empty stays empty)."""
    binary = np.asarray(binary, bool)
    labels, n = ndimage.label(binary, structure=np.ones((3, 3), int))
    if n <= 1:
        return binary.copy()
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (int(np.argmax(sizes)) + 1)


def fill_holes(binary: np.ndarray) -> np.ndarray:
    """Holes filled: everything not reachable from the border through background becomes foreground."""
    return ndimage.binary_fill_holes(np.asarray(binary, bool))


def mask_to_channels(mask: np.ndarray, palm: bool = False) -> np.ndarray:
    """``(H, W)`` 0/128/255 mask -> ``(3, H, W)`` uint8 [OC, OD, BG], each the largest component (OC within OD).

    ``palm``: a 0/255 disc mask -> OD = (m == 0), OC empty, BG = not OD.
    """
    mask = np.asarray(mask)
    if palm:
        od = largest_component(mask == CUP)
        oc = np.zeros_like(od)
    else:
        od = largest_component(mask <= RIM)
        oc = largest_component((mask == CUP) & od)
    bg = largest_component(~od) if od.any() else np.ones_like(od)
    return np.stack([oc, od, bg]).astype(np.uint8)


def channels_to_mask(oc: np.ndarray, od: np.ndarray) -> np.ndarray:
    """Binary OC and OD masks -> a 0/128/255 uint8 mask (cup 0, rim 128, background 255; OC outside OD ignored)."""
    od = np.asarray(od, bool)
    out = np.full(od.shape, BACKGROUND, np.uint8)
    out[od] = RIM
    out[od & np.asarray(oc, bool)] = CUP
    return out


def label_map(mask: np.ndarray) -> np.ndarray:
    """0/128/255 mask -> integer labels 0 background, 1 rim, 2 cup (``common.metrics`` disc = [1, 2], cup = 2)."""
    mask = np.asarray(mask)
    out = np.zeros(mask.shape, np.uint8)
    out[mask == RIM] = 1
    out[mask == CUP] = 2
    return out


def od_landmark(mask: np.ndarray) -> tuple[float, float] | None:
    """Bounding-box centre ``(x, y)`` of the pixels of value 0, None when there are none."""
    rows, cols = np.nonzero(np.asarray(mask) == CUP)
    if rows.size == 0:
        return None
    return (float(cols.min() + cols.max()) / 2.0, float(rows.min() + rows.max()) / 2.0)


def heatmap(shape: tuple[int, int], point: tuple[float, float] | None, sigma: float, cut: float = 0.01
            ) -> np.ndarray:
    """``(H, W)`` float32 Gaussian ``exp(-d^2/sigma^2)`` around ``point = (x, y)``, < ``cut`` -> 0; zeros if None."""
    h, w = shape
    if point is None:
        return np.zeros((h, w), np.float32)
    x, y = point
    ys, xs = np.ogrid[:h, :w]
    z = np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / float(sigma) ** 2)
    z[z < cut] = 0.0
    return z.astype(np.float32)


def distance_map(shape: tuple[int, int], points: list[tuple[float, float] | None]) -> np.ndarray:
    """``(H, W)`` float32 Euclidean distance to the nearest of ``points`` (x, y; None skipped), scaled to [0, 1]."""
    seeds = np.ones(shape, bool)
    for point in points:
        if point is None:
            continue
        col = int(np.clip(round(point[0]), 0, shape[1] - 1))
        row = int(np.clip(round(point[1]), 0, shape[0] - 1))
        seeds[row, col] = False
    if seeds.all():
        return np.ones(shape, np.float32)
    dist = ndimage.distance_transform_edt(seeds)
    return (dist / max(float(dist.max()), 1e-12)).astype(np.float32)


def decode_marginal(hmap: np.ndarray, floor: float = 0.0) -> tuple[float, float]:
    """Marginal argmax of an ``(H, W)`` map: ``(x, y)`` = (argmax of column sums, argmax of row sums).

    ``floor`` > 0 [ours]: values below ``floor`` x the map's maximum are set to 0 first, so that a low background
    (or a rim along the image border) summed over a whole row or column cannot outweigh the peak; 0 = JOINED."""
    hmap = np.asarray(hmap, np.float64)
    if floor > 0:
        hmap = np.where(hmap >= floor * hmap.max(), hmap, 0.0)
    return float(np.argmax(hmap.sum(axis=0))), float(np.argmax(hmap.sum(axis=1)))


def field_of_view(image: np.ndarray, threshold: int) -> np.ndarray:
    """Boolean ``(H, W)`` field of view of an RGB fundus photograph: brightest channel > ``threshold`` (0-255),
    eroded by 3 % of the shorter side so that the dark rim of the circular aperture is outside it."""
    inside = (np.asarray(image).max(axis=2) > threshold).astype(np.uint8)
    k = max(3, int(round(0.03 * min(inside.shape))))
    return cv2.erode(inside, np.ones((k, k), np.uint8)) > 0


def constrain_fovea_map(fovea_map: np.ndarray, image: np.ndarray, od: np.ndarray, fov_threshold: int,
                        disc_exclusion: float) -> np.ndarray:
    """[ours] The fovea heatmap restricted to where a fovea can lie, before decoding (all at original size):

    - ``fov_threshold`` > 0: zero outside ``field_of_view(image, fov_threshold)`` (a sigmoid head often leaves a
      rim along the image border, which the marginal argmax then picks);
    - ``disc_exclusion`` > 0: zero within ``disc_exclusion`` x the vertical diameter of the predicted disc ``od``
      around its centroid (the heatmap's fovea channel also fires on the disc, the other landmark).

    0 switches a rule off (JOINED decodes the raw map). If the rules leave no positive value, the map is returned
    unchanged, so a prediction is always made."""
    out = np.array(fovea_map, np.float32, copy=True)
    if fov_threshold > 0:
        out[~field_of_view(image, fov_threshold)] = 0.0
    if disc_exclusion > 0 and od.any():
        ys, xs = np.nonzero(od)
        radius = disc_exclusion * (ys.max() - ys.min() + 1)
        yy, xx = np.ogrid[:out.shape[0], :out.shape[1]]
        out[(xx - xs.mean()) ** 2 + (yy - ys.mean()) ** 2 < radius ** 2] = 0.0
    return out if out.max() > 0 else np.asarray(fovea_map, np.float32)


def resize_area(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Image resize with ``cv2.INTER_AREA`` to ``size = (W, H)`` (the albumentations interpolation=3 of JOINED)."""
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def resize_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize to ``size = (W, H)`` (masks, heatmaps and distance maps; channels last or 2-D)."""
    return cv2.resize(array, size, interpolation=cv2.INTER_NEAREST)


def resize_bilinear(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize to ``size = (W, H)`` (network maps back to the original image before decoding)."""
    return cv2.resize(np.ascontiguousarray(array, np.float32), size, interpolation=cv2.INTER_LINEAR)


def vertical_extent(binary: np.ndarray) -> int:
    """Number of rows spanned by a binary mask (max row - min row + 1; 0 when empty)."""
    rows = np.nonzero(np.asarray(binary, bool).any(axis=1))[0]
    return 0 if rows.size == 0 else int(rows.max() - rows.min() + 1)


def vcdr(oc: np.ndarray, od: np.ndarray) -> float:
    """Vertical cup-to-disc ratio from row extents; 0 when the disc is empty (JOINED ``faz_evalstep3.py``)."""
    disc = vertical_extent(od)
    return 0.0 if disc == 0 else vertical_extent(oc) / disc
