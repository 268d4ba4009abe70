"""Choose FedLPPA's ALA settings on a development set, never on the test split of the reported runs.

``python select_ala.py [--config configs/dev_small.yaml] [--only NAME,NAME] [k=v ...]``

Every candidate of ``CANDIDATES`` (ALA start point, one W per tensor or per element, eta; all with site-local
BatchNorm statistics) is one full ``train.py`` run on the development set of ``configs/dev_small.yaml`` (a second
synthetic set, generator seed 1, training seed 7; the reported runs use generator seed 0 and training seeds
2022-2024). Writes ``runs/fedlppa/select_ala/<timestamp>/comparison.csv`` (mean and per-site Dice / HD95 of each
candidate on the development set's test split, CPU-s per run) and prints the candidate with the highest mean Dice.
The choice is then written by hand into ``reproduce.ALA_CHOICE`` (README "ALA settings chosen on a development set").
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Sequence
from pathlib import Path

from common.cli import parse_reproduce, reproduce_parser
from common.config import apply_overrides, from_dict, to_dict
from common.rundir import create_run_dir
from common.tracking import write_comparison
from fedlppa import train
from fedlppa.pipeline import data_root
from fedlppa.settings import SITE_LETTERS, Config

__all__ = ["CANDIDATES", "best", "main"]

PROJECT_DIR = Path(__file__).resolve().parent
DEV_CONFIG = "configs/dev_small.yaml"
_KEEP = ["ala.persist_weights=true", "federation.bn_stats=local"]
CANDIDATES = {
    "tensor_global_eta30": ["ala.init=global", "ala.granularity=tensor", "ala.eta=30", *_KEEP],
    "tensor_global_eta300": ["ala.init=global", "ala.granularity=tensor", "ala.eta=300", *_KEEP],
    "tensor_global_eta3000": ["ala.init=global", "ala.granularity=tensor", "ala.eta=3000", *_KEEP],
    "tensor_released_eta300": ["ala.init=released", "ala.granularity=tensor", "ala.eta=300", *_KEEP],
    # FedALA's element-wise W (its ALA.py, eta = 1)
    "element_global_eta1": ["ala.init=global", "ala.granularity=element", "ala.eta=1", *_KEEP],
}


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def best(table: Sequence[dict]) -> str:
    """The candidate with the highest mean Dice on the development split (ties: the first listed)."""
    return max(table, key=lambda r: r["dice"])["method"]


def main(argv: Sequence[str] | None = None) -> str:
    parser = reproduce_parser("FedLPPA: choose the ALA settings on a development set")
    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(a == "--config" or a.startswith("--config=") for a in argv):
        argv = ["--config", DEV_CONFIG, *argv]
    cfg, args = parse_reproduce(Config, argv, parser, PROJECT_DIR, rows=list(CANDIDATES))
    names = args.only or list(CANDIDATES)
    data_root(cfg)
    base = to_dict(cfg)
    out = create_run_dir("fedlppa", "select_ala", cfg, root=cfg.runs_root)
    table, notes = [], []
    for name in names:
        start = _cpu_s()
        run_cfg = from_dict(Config, apply_overrides(base, [*CANDIDATES[name], f"experiment=select_ala-{name}"]))
        result = train.run(run_cfg)
        row = {"method": name, "dice": result.summary["dice"], "hd95_px": result.summary.get("hd95_px", float("nan"))}
        for k in SITE_LETTERS[:cfg.data.num_sites]:
            row[f"dice_{k}"] = result.summary[f"dice_{k}"]
        row["cpu_s"] = round(_cpu_s() - start, 1)
        table.append(row)
        notes.append(f"{name}: `{result.run_dir}`")
    choice = best(table)
    write_comparison(table, out.path, "FedLPPA ALA settings on the development set",
                     notes=f"Chosen: {choice}. Runs: " + ", ".join(notes))
    print(f"[fedlppa] ALA settings chosen on the development set: {choice} -> {out.path / 'comparison.csv'}")
    return choice


if __name__ == "__main__":
    main()
