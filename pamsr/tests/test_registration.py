"""Odd/even-row registration against the known ground-truth shifts of synth.py."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from pamsr.degradation import displace_odd_rows
from pamsr.registration import estimate_row_shifts, estimate_shift, register
from pamsr.synth import make_sample, render_cartesian, render_polar

SIZE = 192


@pytest.fixture(scope="module")
def cartesian():
    return render_cartesian(SIZE, np.random.default_rng(11))


@pytest.mark.parametrize("shift", [-5, -3, -1, 0, 2, 4, 5])
def test_integer_shift_recovered_exactly(shift):
    raw = make_sample(SIZE, float(shift), np.random.default_rng(100 + shift))["raw"]
    estimate, score = estimate_shift(raw, max_shift=8)
    assert estimate == shift
    assert score > 0.5


@pytest.mark.parametrize("shift", [-2.37, 0.5, 1.25, 3.8])
def test_subpixel_shift_within_a_tenth_of_a_pixel(shift):
    raw = make_sample(SIZE, shift, np.random.default_rng(7))["raw"]
    estimate, _ = estimate_shift(raw, max_shift=8, subpixel=True)
    assert abs(estimate - shift) < 0.1


def test_registered_image_gives_zero_and_displacement_is_recovered(cartesian):
    polar = render_polar(cartesian, SIZE, 3.0)
    registered, result = register(polar, max_shift=8)
    assert result.shift == 3.0
    assert estimate_shift(registered, 8)[0] == 0.0
    displaced, shifts = displace_odd_rows(registered, np.random.default_rng(0), p=1.0, max_shift=2)
    assert estimate_shift(displaced, 8)[0] == shifts[0] != 0


def test_banded_mode_follows_piecewise_shifts(cartesian):
    n_odd = SIZE // 2
    truth = np.repeat([2.0, -1.0, 3.0], int(np.ceil(n_odd / 3)))[:n_odd]
    polar = render_polar(cartesian, SIZE, truth)
    result = estimate_row_shifts(polar, max_shift=8, mode="banded", band=32)
    centres = [16, 48, 80]  # middle of each 32-odd-row segment (two bands each), away from the steps
    assert np.allclose(result.row_shifts[centres], [2.0, -1.0, 3.0])
    with pytest.raises(ValueError, match="global or banded"):
        estimate_row_shifts(polar, mode="local")


def test_preprocessed_synthetic_set_matches_ground_truth(synth_root):
    with (synth_root / "shifts.csv").open() as handle:
        truth = {r["sample"]: float(r["shift"]) for r in csv.DictReader(handle)}
    with (synth_root / "reg_mid" / "registration.csv").open() as handle:
        estimated = {r["sample"]: float(r["shift"]) for r in csv.DictReader(handle)}
    assert estimated == truth
    assert any(v != 0 for v in truth.values())
