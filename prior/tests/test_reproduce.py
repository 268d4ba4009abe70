"""The reproduce driver's job order: no_reconstruction starts from its seed's prior run, and is refused alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from prior import reproduce


def test_no_reconstruction_gets_its_seeds_prior_run(monkeypatch) -> None:
    calls = []

    def fake_job(cfg, row, seed, prior_run):
        calls.append((row, seed, prior_run))
        return {"zeroshot_acc": float(seed)}, Path(f"/runs/{row}-{seed}"), 1.0

    monkeypatch.setattr(reproduce, "_job", fake_job)
    results = reproduce._run_jobs(None, ["no_reconstruction", "prior"], [1, 2], jobs=1)
    assert [c[0] for c in calls] == ["prior", "prior", "no_reconstruction", "no_reconstruction"]
    assert calls[2:] == [("no_reconstruction", 1, Path("/runs/prior-1")),
                         ("no_reconstruction", 2, Path("/runs/prior-2"))]
    assert [r["zeroshot_acc"] for r in results["no_reconstruction"]] == [1.0, 2.0]


def test_no_reconstruction_without_the_prior_row_is_refused() -> None:
    with pytest.raises(ValueError, match="together with the prior row"):
        reproduce._run_jobs(None, ["no_reconstruction", "global_only"], [1], jobs=2)
