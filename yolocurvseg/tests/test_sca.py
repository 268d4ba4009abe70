"""SCA curve generator: determinism, tree invariants, exact step, pipe-model radii, rendering."""

import numpy as np
import pytest

from yolocurvseg.sca import PRESETS, SCAParams, generate_curves, grow_tree, preset, render_tree

SMALL = SCAParams(n_attractors=150, influence=30, kill=4, step=2, n_roots=(2, 3), roots="border", region="full",
                  leaf_radius=0.8, min_radius=0.6, max_radius=3.0, ref_size=96)


def test_seeded_sca_is_byte_identical():
    a = generate_curves((96, 96), SMALL, 3)
    b = generate_curves((96, 96), SMALL, 3)
    c = generate_curves((96, 96), SMALL, 4)
    assert a.tree.pos.tobytes() == b.tree.pos.tobytes()
    assert a.intensity.tobytes() == b.intensity.tobytes() and a.mask.tobytes() == b.mask.tobytes()
    assert a.tree.pos.shape != c.tree.pos.shape or not np.array_equal(a.tree.pos, c.tree.pos)


def test_tree_is_acyclic_with_exact_steps_and_tapering():
    tree = grow_tree((96, 96), SMALL, 0)
    n_roots = int((tree.parent < 0).sum())
    assert 2 <= n_roots <= 3 and len(tree.pos) > 50
    child = np.flatnonzero(tree.parent >= 0)
    assert (tree.parent[child] < child).all()  # parents precede children -> no cycle possible
    assert len(tree.edges()) == len(tree.pos) - n_roots
    steps = np.linalg.norm(tree.pos[child] - tree.pos[tree.parent[child]], axis=1)
    np.testing.assert_allclose(steps, SMALL.step, atol=1e-6)
    assert (tree.radius[child] <= tree.radius[tree.parent[child]] + 1e-12).all()
    assert tree.radius.min() >= SMALL.min_radius and tree.radius.max() <= SMALL.max_radius
    leaves = np.setdiff1d(np.arange(len(tree.pos)), tree.parent)
    np.testing.assert_allclose(tree.radius[leaves], SMALL.leaf_radius)


def test_rendering_is_antialiased_and_mask_is_thresholded_coverage():
    sample = generate_curves((96, 96), SMALL, 1)
    cov, mask = sample.intensity, sample.mask
    assert cov.min() >= 0 and cov.max() <= 1
    assert ((cov > 0) & (cov < 1)).sum() > 50  # partial coverage at the borders
    np.testing.assert_array_equal(mask, cov >= 0.5)
    assert 0.01 < mask.mean() < 0.5


def test_single_segment_coverage_matches_area():
    from yolocurvseg.sca import SCATree

    tree = SCATree(np.array([[20.0, 10.0], [20.0, 40.0]]), np.array([-1, 0]), np.array([3.0, 3.0]))
    cov, mask = render_tree(tree, (40, 50), supersample=8)
    area = 30 * 6 + np.pi * 9  # capsule area
    assert abs(cov.sum() - area) / area < 0.02
    assert mask[20, 10:41].all() and not mask[15, 25] and mask[18, 25]


def test_fov_restricts_curves():
    fov = np.zeros((96, 96), bool)
    fov[10:80, 10:80] = True
    sample = generate_curves((96, 96), SMALL, 2, allowed=fov)
    assert not sample.mask[~fov].any()


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_generate_curves(name):
    p = preset(name, n_attractors=120)
    sample = generate_curves((128, 128), p, 0)
    assert sample.mask.any() and len(sample.tree.pos) > 10


def test_bad_parameters_raise():
    with pytest.raises(ValueError, match="kill"):
        SCAParams(kill=60, influence=50)
    with pytest.raises(KeyError, match="unknown SCA preset"):
        preset("retina")
