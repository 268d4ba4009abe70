"""reproduce.py end to end on the CI config (one seed, two rows): sub-runs, comparison table, figures, retina smoke."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from joinedtrans import reproduce


@pytest.mark.slow
def test_reproduce_writes_the_comparison(synth_root: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(Path(reproduce.__file__).parent)
    out = reproduce.main(["--config", "configs/ci.yaml", "--only", "joinedtrans,coarse_only", "--seeds", "1",
                          "--out", str(tmp_path), f"data.root={synth_root}", "data.synthetic=false"])
    table = pd.read_csv(out / "comparison.csv")
    assert table["method"].tolist() == ["joinedtrans", "coarse_only"]
    for column in ("dice_disc", "dice_cup", "vcdr_mae", "fovea_dist_norm", "dice_disc_hard", "fovea_dist_norm_hard",
                   "dice_disc_std", "seeds", "params_m", "train_time_s"):
        assert column in table.columns
    assert table.loc[0, "params_m"] > table.loc[1, "params_m"]  # coarse only has no fine/fovea networks
    info = json.loads((out / "figures" / "retina_smoke.json").read_text())
    assert info["image_size"] == [1411, 1411] and (out / "figures" / "retina_smoke.png").is_file()
    assert "PASS" in (out / "comparison.md").read_text() or "FAIL" in (out / "comparison.md").read_text()


def test_schedule_runs_dependents_after_their_needs_two_at_a_time(monkeypatch) -> None:
    """The driver's scheduler: never more than two jobs at once, a job only after the jobs it needs, all run."""
    import threading
    import time

    lock, state = threading.Lock(), {"now": 0, "peak": 0, "order": []}

    def fake_run(name: str, delay: float) -> float:
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
            state["order"].append(("start", name))
        time.sleep(delay)
        with lock:
            state["now"] -= 1
            state["order"].append(("end", name))
        return delay

    monkeypatch.setattr(reproduce, "_run", fake_run)
    jobs = {"pre": ("pre", 0.05), "a": ("a", 0.02), "b": ("b", 0.01), "c": ("c", 0.01)}
    times = reproduce._schedule(jobs, {"a": ["pre"]})
    assert set(times) == set(jobs) and state["peak"] == 2
    order = state["order"]
    assert order.index(("start", "a")) > order.index(("end", "pre"))
    assert order.index(("start", "b")) < order.index(("end", "pre"))  # b does not wait for pre's dependents


def test_retina_plausibility_needs_distance_side_and_field_of_view() -> None:
    from joinedtrans.smoke import plausibility

    h = w = 400
    yy, xx = np.mgrid[:h, :w]
    image = np.zeros((h, w, 3), np.uint8)
    image[(xx - 200) ** 2 + (yy - 200) ** 2 < 190 ** 2] = (180, 80, 40)
    disc, dd = (100.0, 200.0), 40.0  # disc on the left: the fovea lies to its right (towards the centre)
    good = plausibility(image, disc, dd, (200.0, 210.0))
    assert good["plausible"] and good["fovea_temporal"] and good["fovea_in_fov"]
    assert good["disc_fovea_dd"] == pytest.approx(np.hypot(100, 10) / 40)
    nasal = plausibility(image, disc, dd, (0.0, 200.0))  # right distance, wrong side, on the black border
    assert not nasal["plausible"] and not nasal["fovea_temporal"] and not nasal["fovea_in_fov"]
    far = plausibility(image, disc, dd, (290.0, 200.0))  # 4.75 DD
    assert far["fovea_temporal"] and not far["plausible"]
