"""``make bench-fedlppa``: bytes per site per round each way, from ``ArrayRecord.count_bytes()`` of the real
Flower messages (flower_app.train_message / the ClientApp reply), for every method, at the paper's FAZ setting
(256 px, full widths, K = 5) and the CPU default; plus time per local iteration and peak memory (CPU RSS high-water
mark after a reset, or CUDA peak) of the CPU default against FedAvg. Also the released protocol's broadcast of
(K + 1) full models to every client. Writes ``runs/bench/fedlppa/bench.json`` and ``bench.csv``.

``python bench.py [--iters 3] [--skip-time]``
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from common.config import apply_overrides, from_dict, load_config, to_dict
from common.memory import peak_memory_mb, reset_peak_memory
from common.rundir import resolve_path
from fedlppa.federation import ClientState, TrainReply, client_train
from fedlppa.fl_sequential import new_server_state
from fedlppa.flower_app import encode_state, train_message
from fedlppa.pipeline import prepare_sites
from fedlppa.settings import Config

__all__ = ["METHODS", "message_bytes", "iteration_time", "main"]

PROJECT_DIR = Path(__file__).resolve().parent
METHODS = ("fedlppa", "fedavg", "fedprox", "fedbn", "fedala", "local")
PAPER = ["data.image_size=256", "data.synth.size=256", "model.channels=[16,32,64,128,256]"]


class _Site:
    def __init__(self, site: int):
        self.site = site


def message_bytes(cfg: Config) -> dict[str, float]:
    """Down- and uplink bytes of site 0 in round 2 (after every site uploaded once) for ``cfg``'s method."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0
    k = cfg.data.num_sites
    state = new_server_state(cfg, [_Site(i) for i in range(k)])
    glob = state.aggregator.global_state
    state.aggregator.aggregate([TrainReply(i, glob, 1) for i in range(k)])
    down = train_message(state, 0, 1, 2, "train").content
    up = encode_state(glob)
    down_bytes = sum(rec.count_bytes() for rec in down.values())
    full = up.count_bytes()
    tensor = sum(v.numel() * v.element_size() for v in glob.values())
    return {"down_bytes": down_bytes, "up_bytes": full, "tensor_bytes": tensor,
            "official_broadcast_bytes": (k + 1) * full if cfg.federation.method == "fedlppa" else full}


def iteration_time(cfg: Config, iters: int) -> dict[str, float]:
    """Seconds per local iteration and peak memory of one round of site 0 (after a warm-up round)."""
    specs, _ = prepare_sites(cfg)
    state = new_server_state(cfg, specs)
    glob = state.aggregator.global_state
    aux = state.aggregator.aux_for_site(0, 1)
    device = "cpu"
    client_train(cfg, specs[0], ClientState(0), glob, aux, 1)
    reset_peak_memory(device)
    start = time.perf_counter()
    client_train(cfg, specs[0], ClientState(0), glob, aux, 1)
    seconds = (time.perf_counter() - start) / cfg.federation.iters_per_round
    return {"s_per_iter": seconds, "peak_mb": peak_memory_mb(device)}


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description="FedLPPA communication and compute benchmark")
    parser.add_argument("--config", default=str(PROJECT_DIR / "configs" / "default.yaml"))
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--skip-time", action="store_true")
    args = parser.parse_args(argv)
    base = to_dict(load_config(Config, args.config))
    rows = []
    for setting, extra in (("paper_faz256", PAPER), ("cpu_default", [])):
        for method in METHODS:
            cfg = from_dict(Config, apply_overrides(base, [*extra, f"federation.method={method}"]))
            row = {"setting": setting, "method": method, **message_bytes(cfg)}
            if setting == "cpu_default" and not args.skip_time:
                timed = from_dict(Config, apply_overrides(base, [f"federation.method={method}",
                                                                 f"federation.iters_per_round={args.iters}"]))
                row.update(iteration_time(timed, args.iters))
            rows.append(row)
    for row in rows:
        ref = next(r for r in rows if r["setting"] == row["setting"] and r["method"] == "fedavg")
        row["down_vs_fedavg"] = row["down_bytes"] / ref["down_bytes"]
        if "s_per_iter" in row:
            row["time_vs_fedavg"] = row["s_per_iter"] / ref["s_per_iter"]
    out = resolve_path("runs/bench/fedlppa")
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(rows, indent=2))
    import pandas as pd

    pd.DataFrame(rows).to_csv(out / "bench.csv", index=False)
    print(pd.DataFrame(rows).to_string(index=False))
    torch.set_num_threads(torch.get_num_threads())
    return out / "bench.csv"


if __name__ == "__main__":
    main()
