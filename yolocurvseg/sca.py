"""Curve generator: Space Colonization Algorithm (SCA) with pipe-model thickness and exact anti-aliased masks.

YoloCurvSeg (Lin et al., MedIA 2023; abstract and README Fig. 2 of llmir/YoloCurvSeg): curves are emulated by an
SCA-based foreground generator with dataset-specific settings. The algorithm is Runions, Lane & Prusinkiewicz (2007):

- attractors A are sampled in a region, the tree starts from root nodes;
- each iteration, every attractor associates with its nearest node within the influence distance ``d_i``;
- every node v with associated attractors S(v) grows one child at ``v + D * normalize(sum_a normalize(a - v))``
  (plus an optional inertia term along v's own direction and a small random jitter, then re-normalised, so the
  step length is exactly ``D``);
- attractors within the kill distance ``d_k`` of any node are removed;
- growth stops when no node grows or after ``max_iter`` iterations.

Nearest-node queries use ``scipy.spatial.cKDTree`` built on the nodes added in each iteration only (each attractor
keeps its nearest node so far), so one iteration costs O(|A| log |new nodes|).

Thickness (pipe model, Murray-like): leaves get ``leaf_radius``; a parent gets ``(sum_children r^gamma)^(1/gamma)
+ taper * D``, clamped to ``[min_radius, max_radius]``. Both maps are monotone, so radius never increases from a
root to a leaf. Rendering: every edge is a tapered capsule; coverage is measured on an ``s x s`` supersampling grid
per pixel (anti-aliased ``intensity`` in [0, 1]); the label is ``intensity >= 0.5``.

The dataset presets (OCTA500, CORN, DRIVE, CHASEDB1, DCA1) are OURS (anatomy-driven, see README "Design notes"), not
the paper's numbers, which are not public. Distances are given in pixels at ``ref_size`` and scaled to the requested
image.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from common.synthetic import as_rng

__all__ = ["SCAParams", "PRESETS", "preset", "preset_with_overrides", "SCATree", "grow_tree", "render_tree",
           "generate_curves", "CurveSample"]


@dataclass
class SCAParams:
    """Parameters of one curve family. Distances in pixels at ``ref_size`` (scaled to the image's smaller side)."""

    n_attractors: int = 600
    influence: float = 50.0          # d_i
    kill: float = 6.0                # d_k
    step: float = 3.0                # D
    n_roots: tuple[int, int] = (1, 1)
    roots: str = "border"            # border | disc | edge | center
    region: str = "full"             # full | fov | annulus | stripes
    hole_radius: float = 0.1         # annulus: excluded central disk, fraction of the smaller side (FAZ)
    fov_radius: float = 0.46         # fov: circle radius, fraction of the smaller side
    anisotropy: float = 1.0          # stripes: attractor density stretched along the growth direction
    leaf_radius: float = 0.7
    min_radius: float = 0.5
    max_radius: float = 4.0
    gamma: float = 2.5               # pipe-model exponent
    taper: float = 0.0               # radius added per step towards the root (pixels per pixel of length)
    inertia: float = 0.3             # weight of the parent direction in the growth direction
    jitter: float = 0.1              # std of a random direction perturbation
    max_iter: int = 400
    ref_size: int = 512
    supersample: int = 4

    def __post_init__(self) -> None:
        if not 0 < self.kill < self.influence:
            raise ValueError(f"SCA needs 0 < kill ({self.kill}) < influence ({self.influence})")
        if self.step <= 0 or self.step >= self.kill * 2:
            raise ValueError(f"SCA step ({self.step}) must be positive and below 2 * kill ({2 * self.kill})")
        if not 0 < self.min_radius <= self.leaf_radius <= self.max_radius:
            raise ValueError("SCA radii must satisfy 0 < min_radius <= leaf_radius <= max_radius")
        for name in ("n_attractors", "max_iter", "ref_size", "supersample"):
            if getattr(self, name) < 1:
                raise ValueError(f"SCA {name} must be >= 1, got {getattr(self, name)}")
        if len(self.n_roots) != 2 or not 1 <= self.n_roots[0] <= self.n_roots[1]:
            raise ValueError(f"SCA n_roots must be (low, high) with 1 <= low <= high, got {self.n_roots}")
        if not (0 <= self.hole_radius < 0.5 and 0 < self.fov_radius <= 0.5):
            raise ValueError(f"SCA needs 0 <= hole_radius < 0.5 and 0 < fov_radius <= 0.5 (fractions of the smaller "
                             f"side), got {self.hole_radius}, {self.fov_radius}")
        if min(self.anisotropy, self.gamma) <= 0 or min(self.taper, self.inertia, self.jitter) < 0:
            raise ValueError("SCA needs anisotropy, gamma > 0 and taper, inertia, jitter >= 0")
        for name in ("roots", "region"):
            allowed = {"roots": ("border", "disc", "edge", "center"), "region": ("full", "fov", "annulus", "stripes")}
            if getattr(self, name) not in allowed[name]:
                raise ValueError(f"SCA {name}={getattr(self, name)!r}; choose one of {allowed[name]}")

    def scaled(self, side: int) -> SCAParams:
        """Copy with distances (and radii) rescaled from ``ref_size`` to an image whose smaller side is ``side``."""
        f = side / self.ref_size
        return dataclasses.replace(self, influence=self.influence * f, kill=self.kill * f, step=self.step * f,
                                   ref_size=side)


# OURS: anatomy-driven presets; radii are in pixels of the dataset's native size.
PRESETS: dict[str, SCAParams] = {
    "octa500": SCAParams(n_attractors=900, influence=40, kill=4, step=2, n_roots=(6, 12), roots="border",
                         region="annulus", hole_radius=0.1, leaf_radius=0.6, min_radius=0.5, max_radius=3.0,
                         gamma=2.2, ref_size=400),
    "corn": SCAParams(n_attractors=500, influence=90, kill=6, step=3, n_roots=(3, 8), roots="edge", region="stripes",
                      anisotropy=4.0, leaf_radius=1.2, min_radius=1.0, max_radius=2.5, gamma=4.0, inertia=0.8,
                      ref_size=384),
    "drive": SCAParams(n_attractors=700, influence=60, kill=6, step=3, n_roots=(2, 4), roots="disc", region="fov",
                       leaf_radius=0.8, min_radius=0.7, max_radius=5.0, gamma=2.5, ref_size=565),
    "chasedb1": SCAParams(n_attractors=800, influence=70, kill=7, step=3, n_roots=(2, 4), roots="disc",
                          region="fov", leaf_radius=1.0, min_radius=0.8, max_radius=7.0, gamma=2.5, ref_size=960),
    "dca1": SCAParams(n_attractors=500, influence=60, kill=6, step=3, n_roots=(1, 1), roots="edge", region="full",
                      leaf_radius=1.0, min_radius=0.8, max_radius=5.0, gamma=2.5, ref_size=320),
}


def preset(name: str, **overrides: object) -> SCAParams:
    """A copy of ``PRESETS[name]`` with fields replaced by ``overrides``."""
    key = name.lower()
    if key not in PRESETS:
        raise KeyError(f"unknown SCA preset {name!r}; choose one of {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[key], **overrides)


def preset_with_overrides(name: str, overrides: dict[str, object]) -> SCAParams:
    """``preset(name, **overrides)`` for config values: unknown fields and invalid values raise ``ValueError``
    naming the field (YAML lists become tuples)."""
    fields = {f.name for f in dataclasses.fields(SCAParams)}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise ValueError(f"unknown `curves.overrides` key(s) {bad}; valid keys: {sorted(fields)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    defaults = SCAParams()
    for key, value in values.items():
        want = type(getattr(defaults, key))
        ok = isinstance(value, want) or (want is float and isinstance(value, int))
        if not ok or isinstance(value, bool):
            raise ValueError(f"`curves.overrides.{key}` must be {want.__name__}, got {value!r}")
    try:
        return preset(name, **values)
    except KeyError as exc:
        raise ValueError(f"`curves.preset`: {exc.args[0]}") from exc
    except (TypeError, ValueError) as exc:
        raise ValueError(f"`curves.overrides`: {exc}") from exc


@dataclass
class SCATree:
    """Nodes ``pos`` ``(N, 2)`` as (row, col) floats, ``parent`` ``(N,)`` (-1 for roots), ``radius`` ``(N,)``."""

    pos: np.ndarray
    parent: np.ndarray
    radius: np.ndarray

    def edges(self) -> np.ndarray:
        """``(E, 2)`` (parent, child) node index pairs."""
        child = np.flatnonzero(self.parent >= 0)
        return np.stack([self.parent[child], child], axis=1)

    def depth_order(self) -> np.ndarray:
        """Node indices sorted so that every parent precedes its children (creation order already does)."""
        return np.arange(len(self.parent))


# --------------------------------------------------------------------------------------------- sampling
def _region_mask(shape: tuple[int, int], p: SCAParams) -> np.ndarray | None:
    h, w = shape
    side = min(h, w)
    rr, cc = np.mgrid[:h, :w]
    d = np.hypot(rr - (h - 1) / 2, cc - (w - 1) / 2)
    if p.region == "fov":
        return d <= p.fov_radius * side
    if p.region == "annulus":
        return d >= p.hole_radius * side
    return None


def _sample_attractors(shape: tuple[int, int], p: SCAParams, rng: np.random.Generator, allowed: np.ndarray | None,
                       direction: float) -> np.ndarray:
    h, w = shape
    region = _region_mask(shape, p)
    if allowed is not None:
        region = allowed if region is None else (region & allowed)
    pts: list[np.ndarray] = []
    need = p.n_attractors
    for _ in range(50):
        cand = rng.uniform([0, 0], [h - 1, w - 1], size=(need * 2, 2))
        if p.region == "stripes":  # anisotropic: keep points near a few lines along the growth direction
            normal = np.array([math.cos(direction), -math.sin(direction)])
            offs = cand @ normal
            period = min(h, w) / max(p.anisotropy * 2, 1)
            keep = np.abs(((offs / period) % 1.0) - 0.5) < 0.5 / max(p.anisotropy, 1.0) * 2
            cand = cand[keep]
        if region is not None:
            ri = np.clip(cand[:, 0].round().astype(int), 0, h - 1)
            ci = np.clip(cand[:, 1].round().astype(int), 0, w - 1)
            cand = cand[region[ri, ci]]
        pts.append(cand)
        need -= len(cand)
        if need <= 0:
            break
    out = np.concatenate(pts)[: p.n_attractors] if pts else np.zeros((0, 2))
    return out


def _sample_roots(shape: tuple[int, int], p: SCAParams, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Root positions ``(R, 2)`` and the main growth direction (radians, for ``edge``/``stripes``)."""
    h, w = shape
    side = min(h, w)
    n = int(rng.integers(p.n_roots[0], p.n_roots[1] + 1))
    cy, cx = (h - 1) / 2, (w - 1) / 2
    if p.roots == "center":
        return np.array([cy, cx]) + rng.normal(0, side * 0.03, size=(n, 2)), 0.0
    if p.roots == "disc":  # optic disc: one site inside the FOV, left or right of the centre
        side_sign = rng.choice([-1.0, 1.0])
        disc = np.array([cy + rng.normal(0, side * 0.05), cx + side_sign * p.fov_radius * side * 0.6])
        return disc + rng.normal(0, side * 0.02, size=(n, 2)), 0.0
    if p.roots == "edge":  # all roots on one edge, growing across the image
        edge = int(rng.integers(4))
        t = rng.uniform(0.1, 0.9, size=n)
        coords = {0: (np.zeros(n), t * (w - 1)), 1: (np.full(n, h - 1.0), t * (w - 1)),
                  2: (t * (h - 1), np.zeros(n)), 3: (t * (h - 1), np.full(n, w - 1.0))}[edge]
        direction = {0: math.pi / 2, 1: -math.pi / 2, 2: 0.0, 3: math.pi}[edge]
        return np.stack(coords, axis=1), direction
    angles = rng.uniform(0, 2 * math.pi, size=n)  # border: spread around the image border
    ys = cy + np.sin(angles) * (h - 1) / 2 * 1.0
    xs = cx + np.cos(angles) * (w - 1) / 2 * 1.0
    return np.stack([np.clip(ys, 0, h - 1), np.clip(xs, 0, w - 1)], axis=1), 0.0


# --------------------------------------------------------------------------------------------- growth
def grow_tree(shape: tuple[int, int], params: SCAParams, rng: int | np.random.Generator | None = None,
              allowed: np.ndarray | None = None) -> SCATree:
    """Run the SCA on an ``(H, W)`` canvas; ``allowed`` (bool ``(H, W)``) restricts attractors (e.g. a FOV).

    ``params`` distances are scaled from ``params.ref_size`` to ``min(H, W)``. Deterministic given ``rng``.
    """
    rng = as_rng(rng)
    p = params.scaled(min(shape))
    roots, direction = _sample_roots(shape, p, rng)
    attractors = _sample_attractors(shape, p, rng, allowed, direction)
    pos = [r for r in roots]
    parent = [-1] * len(roots)
    heading = [np.array([0.0, 0.0]) for _ in roots]
    if p.roots == "edge":
        heading = [np.array([math.sin(direction), math.cos(direction)]) for _ in roots]
    child_dirs: list[list[np.ndarray]] = [[] for _ in roots]
    alive = np.ones(len(attractors), bool)
    nearest = np.full(len(attractors), -1, np.int64)
    near_d = np.full(len(attractors), np.inf)
    new_idx = np.arange(len(roots))
    pos_np = np.asarray(roots, dtype=np.float64).reshape(-1, 2)  # array mirror of ``pos`` for vectorised lookups
    for _ in range(p.max_iter):
        if len(attractors) == 0:
            break
        d, j = cKDTree(pos_np[new_idx]).query(attractors)
        closer = d < near_d
        near_d[closer], nearest[closer] = d[closer], new_idx[j[closer]]
        alive &= near_d > p.kill
        assoc = alive & (near_d <= p.influence)
        if not assoc.any():
            break
        grown: list[int] = []
        owners = nearest[assoc]
        vecs = attractors[assoc] - pos_np[owners]
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True) + 1e-12
        order = np.argsort(owners, kind="stable")
        owners, vecs = owners[order], vecs[order]
        uniq, starts = np.unique(owners, return_index=True)
        sums = np.add.reduceat(vecs, starts, axis=0)
        for node, vsum in zip(uniq.tolist(), sums):
            g = vsum / (np.linalg.norm(vsum) + 1e-12) + p.inertia * heading[node] + rng.normal(0, p.jitter, 2)
            norm = np.linalg.norm(g)
            if norm < 1e-9:
                continue
            g = g / norm
            if any(float(g @ c) > 0.995 for c in child_dirs[node]):  # same child again: SCA oscillation guard
                continue
            child_dirs[node].append(g)
            pos.append(pos[node] + p.step * g)
            parent.append(node)
            heading.append(g)
            child_dirs.append([])
            grown.append(len(pos) - 1)
        if not grown:
            break
        new_idx = np.asarray(grown)
        pos_np = np.concatenate([pos_np, np.asarray(pos[len(pos_np):])])
    pos_arr = np.asarray(pos, dtype=np.float64).reshape(-1, 2)
    parent_arr = np.asarray(parent, dtype=np.int64)
    return SCATree(pos_arr, parent_arr, _pipe_radii(parent_arr, p))


def _pipe_radii(parent: np.ndarray, p: SCAParams) -> np.ndarray:
    """Pipe model bottom-up: leaves ``leaf_radius``; parents ``(sum r_c^gamma)^(1/gamma) + taper * D``, clamped."""
    n = len(parent)
    acc = np.zeros(n)
    has_child = np.zeros(n, bool)
    has_child[parent[parent >= 0]] = True
    radius = np.zeros(n)
    for i in range(n - 1, -1, -1):  # children are created after their parent
        r = p.leaf_radius if not has_child[i] else acc[i] ** (1.0 / p.gamma) + p.taper * p.step
        radius[i] = min(max(r, p.min_radius), p.max_radius)
        if parent[i] >= 0:
            acc[parent[i]] += radius[i] ** p.gamma
    return radius


# --------------------------------------------------------------------------------------------- rendering
def render_tree(tree: SCATree, shape: tuple[int, int], supersample: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Anti-aliased coverage ``(H, W)`` float32 in [0, 1] and its label ``(H, W)`` bool (coverage >= 0.5).

    Each edge (parent -> child) is a tapered capsule whose radius interpolates linearly between the two nodes;
    coverage is the fraction of the ``supersample**2`` sub-pixel centres inside any capsule.
    """
    h, w = shape
    s = int(supersample)
    hi = np.zeros((h * s, w * s), bool)
    edges = tree.edges()
    for a, b in edges:
        (r0, c0), (r1, c1) = tree.pos[a], tree.pos[b]
        ra, rb = tree.radius[a], tree.radius[b]
        pad = max(ra, rb) + 1.0
        top = max(int(math.floor((min(r0, r1) - pad + 0.5) * s)), 0)
        bot = min(int(math.ceil((max(r0, r1) + pad + 0.5) * s)), h * s)
        lef = max(int(math.floor((min(c0, c1) - pad + 0.5) * s)), 0)
        rig = min(int(math.ceil((max(c0, c1) + pad + 0.5) * s)), w * s)
        if top >= bot or lef >= rig:
            continue
        yy = (np.arange(top, bot) + 0.5) / s - 0.5
        xx = (np.arange(lef, rig) + 0.5) / s - 0.5
        dr, dc = r1 - r0, c1 - c0
        den = max(dr * dr + dc * dc, 1e-12)
        py, px = yy[:, None] - r0, xx[None, :] - c0
        t = np.clip((py * dr + px * dc) / den, 0.0, 1.0)
        dist = np.hypot(py - t * dr, px - t * dc)
        hi[top:bot, lef:rig] |= dist <= ra + t * (rb - ra)
    coverage = hi.reshape(h, s, w, s).mean(axis=(1, 3)).astype(np.float32)
    return coverage, coverage >= 0.5


@dataclass
class CurveSample:
    """One generated foreground: anti-aliased ``intensity`` (H, W) float32, ``mask`` (H, W) bool, the ``tree``."""

    intensity: np.ndarray
    mask: np.ndarray
    tree: SCATree


def generate_curves(shape: tuple[int, int], params: SCAParams, rng: int | np.random.Generator | None = None,
                    allowed: np.ndarray | None = None) -> CurveSample:
    """Grow and render one SCA curve set; pixels outside ``allowed`` (e.g. outside the FOV) are cleared."""
    tree = grow_tree(shape, params, rng, allowed)
    intensity, mask = render_tree(tree, shape, params.supersample)
    if allowed is not None:
        intensity = intensity * allowed
        mask = mask & allowed
    return CurveSample(intensity, mask, tree)
