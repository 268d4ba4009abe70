"""Polar <-> Cartesian geometry and the scanning-consistency loss."""

from __future__ import annotations

import numpy as np
import torch

from common.synthetic import ellipse_mask
from pamsr.geometry import cartesian_to_polar, polar_to_cartesian, rec_index_map
from pamsr.losses import RecLoss, SRLoss, scatter_to_cartesian


def test_disk_round_trip_keeps_centre_and_radius():
    size = 160
    centre, radius = (100.0, 60.0), 15.0
    disk = ellipse_mask((size, size), centre, (radius, radius)).astype(np.float32)
    cart = polar_to_cartesian(cartesian_to_polar(disk, size, size)) > 0.5
    rows, cols = np.nonzero(cart)
    assert abs(rows.mean() - centre[0]) <= 1 and abs(cols.mean() - centre[1]) <= 1
    equivalent_radius = np.sqrt(cart.sum() / np.pi)
    assert abs(equivalent_radius - radius) <= 1


def test_official_geometry_row_angle_and_column_radius():
    polar = np.zeros((8, 10))
    polar[0, 0] = 1.0  # angle 0, radius +5: x = 5, y = 0 -> (row 5, col 9 after clipping)
    cart = polar_to_cartesian(polar)
    assert cart[5, 9] == 1.0 and cart.sum() == 1.0


def test_rec_map_scatter_round_trip_and_loss():
    n, w, pad = 64, 64, 4
    index_map = rec_index_map(n, w, pad)
    canvas = w + 2 * pad
    assert index_map.shape == (n + 2 * pad, w + 2 * pad) and int(index_map[0, 0]) == canvas * canvas
    patch = torch.rand(1, 1, 8, 8)
    corner = torch.tensor([[pad + 2, pad + 5]])
    cart = scatter_to_cartesian(patch, corner, index_map, canvas).flatten()
    idx = index_map[pad + 2: pad + 10, pad + 5: pad + 13].flatten()
    unique, counts = torch.unique(idx, return_counts=True)
    single = unique[counts == 1]
    gathered = cart[single]
    source = patch.flatten()[[int((idx == u).nonzero()[0]) for u in single]]
    assert len(single) > 20 and torch.equal(gathered, source)
    rec = RecLoss(n, w, pad)
    hr = torch.rand(2, 1, 16, 16)
    corners = torch.tensor([[pad + 10, pad + 20], [pad + 30, pad + 3]])
    assert float(rec(hr, hr, corners)) == 0.0
    assert float(rec(torch.roll(hr, 2, dims=-1), hr, corners)) > 0.0
    total, parts = SRLoss(1.0, 0.5, rec)(hr, hr, corners)
    assert float(total) == 0.0 and set(parts) == {"l1", "rec"}
