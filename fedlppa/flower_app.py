"""Flower apps (flwr 1.42 Message API) running the same core functions as the sequential driver.

- ``make_server_app(cfg, run_dir, resume_from)``: a ``ServerApp`` whose ``main(grid, context)`` owns the round loop
  (a ``Strategy.start`` loop cannot resume): wait for K nodes (bounded), a ``query`` handshake maps node id -> site
  from each node's ``node_config["partition-id"]`` (a duplicate or missing id is an error), then per round ONE
  message per node (theta_G without the auxiliary decoder + that site's auxiliary decoder + the round), the same
  ``Aggregator``, ``checkpoints/last.pt`` after every round, and ``evaluate`` messages at ``eval_every`` and at the end.
- ``make_client_app(cfg, state_dir)``: a ``ClientApp`` whose per-site state (``ClientState``: theta_old, ALA flags,
  batch-stream position) lives in ``context.state`` and is mirrored atomically to ``<state_dir>/site_<k>.pt``
  (the state after the last two rounds), so a restarted run continues from the round the server resumes.

``run_simulation`` takes no run config, so these factories bind the config; ``backend_config(cfg)`` is its
``backend_config`` (the ``client_resources`` section). ``flwr run fedlppa/fl_app`` (deployment)
uses ``server_app``/``client_app`` below, which read ``config``/``overrides``/``run-dir`` from the run config and
``state-dir``/``data-root`` from the node config.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from common.checkpoint import atomic_torch_save
from common.config import load_config
from fedlppa.federation import (
    ClientState,
    FederationError,
    TrainReply,
    aux_keys,
    client_evaluate,
    client_train,
)
from fedlppa.fl_sequential import ServerState, load_server_state, new_server_state, round_row, save_server_state
from fedlppa.pipeline import prepare_sites
from fedlppa.settings import SITE_LETTERS, Config

__all__ = ["make_server_app", "make_client_app", "site_map", "encode_state", "decode_state", "train_message",
           "server_app", "client_app", "FlowerResult", "backend_config"]

NODE_WAIT_S = 120.0


def backend_config(cfg: Config) -> dict:
    """``run_simulation(..., backend_config=backend_config(cfg))``: the Simulation Engine's per-ClientApp resources
    from ``cfg.client_resources``."""
    r = cfg.client_resources
    return {"client_resources": {"num_cpus": r.num_cpus, "num_gpus": r.num_gpus}}


def encode_state(state: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """A state dict as an ArrayRecord (numpy bytes: exact for every dtype)."""
    return ArrayRecord.from_torch_state_dict(dict(state))


def decode_state(record: ArrayRecord) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in record.to_torch_state_dict().items()}


def _blob(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _unblob(data: bytes) -> object:
    return torch.load(io.BytesIO(data), weights_only=True)


# --------------------------------------------------------------------------------------------- server
class FlowerResult:
    """What the ServerApp leaves behind (for tests and train-like callers)."""

    def __init__(self) -> None:
        self.per_site: dict[str, dict[str, float]] = {}
        self.history: list[dict] = []


def site_map(grid: Grid, num_sites: int, timeout: float = NODE_WAIT_S) -> dict[int, int]:
    """``{site: node_id}`` after waiting (bounded) for ``num_sites`` nodes and asking each its partition id."""
    deadline = time.monotonic() + timeout
    nodes = list(grid.get_node_ids())
    while len(nodes) < num_sites and time.monotonic() < deadline:
        time.sleep(0.5)
        nodes = list(grid.get_node_ids())
    if len(nodes) < num_sites:
        raise FederationError(f"only {len(nodes)} of {num_sites} SuperNodes connected within {timeout:.0f} s; "
                              f"start one SuperNode per site (partition-id 0..{num_sites - 1})")
    queries = [Message(RecordDict({"q": ConfigRecord({"what": "partition-id"})}), node, MessageType.QUERY)
               for node in nodes]
    mapping: dict[int, int] = {}
    replies = list(grid.send_and_receive(queries, timeout=timeout))
    if len(replies) < len(queries):
        raise FederationError(f"{len(queries) - len(replies)} of {len(queries)} SuperNodes did not answer the "
                              f"handshake within {timeout:.0f} s (each message starts a ClientApp process: on a slow "
                              f"machine raise the run config value node-wait-s)")
    for reply in replies:
        if reply.has_error():
            raise FederationError(f"node {reply.metadata.src_node_id} failed the handshake: {reply.error.reason}")
        pid = int(reply.content["site"]["partition-id"])
        if pid in mapping:
            raise FederationError(f"partition-id {pid} is used by nodes {mapping[pid]} and "
                                  f"{reply.metadata.src_node_id}; give every SuperNode its own partition-id")
        mapping[pid] = reply.metadata.src_node_id
    missing = sorted(set(range(num_sites)) - set(mapping))
    if missing:
        raise FederationError(f"no SuperNode has partition-id {missing}; node-config of each SuperNode must set "
                              f"partition-id=k for k in 0..{num_sites - 1}")
    return mapping


def train_message(state: ServerState, site: int, node: int, rnd: int, kind: str) -> Message:
    """theta_G (without the auxiliary decoder when one is sent separately) + the site's aux decoder + the round."""
    glob = state.aggregator.global_state
    aux = state.aggregator.aux_for_site(site, rnd if kind == MessageType.TRAIN else rnd + 1)
    drop = set(aux_keys(glob)) if aux is not None else set()
    content = RecordDict({"arrays": encode_state({k: v for k, v in glob.items() if k not in drop}),
                          "config": ConfigRecord({"round": rnd, "site": site})})
    if aux is not None:
        content["aux"] = encode_state(aux)
    return Message(content, node, kind, group_id=str(rnd))


def _collect(cfg: Config, replies: list[Message], node_site: dict[int, int], rnd: int, ckpt: Path | None
             ) -> tuple[list[TrainReply], list[int]]:
    ok, failed = [], []
    for reply in replies:
        site = node_site[reply.metadata.src_node_id]
        if reply.has_error():
            reason = f"error reply, code {reply.error.code}: {(reply.error.reason or '').strip()[-200:]}"
            if cfg.federation.on_failure == "abort":
                where = f"resume from {ckpt} with --resume auto" if ckpt else "no checkpoint yet"
                raise FederationError(f"federation stopped: site {site} failed in round {rnd} ({reason}); {where}")
            failed.append(site)
            continue
        metrics = dict(reply.content["metrics"])
        nb = int(metrics.pop("num-examples"))
        ok.append(TrainReply(site, decode_state(reply.content["arrays"]), nb, {k: float(v) for k, v in
                                                                                metrics.items()}))
    missing = set(node_site.values()) - {r.site for r in ok} - set(failed)
    failed += sorted(missing)
    return ok, sorted(failed)


def _evaluate(grid: Grid, state: ServerState, mapping: dict[int, int], rnd: int) -> dict[str, dict[str, float]]:
    msgs = [train_message(state, site, node, rnd, MessageType.EVALUATE) for site, node in sorted(mapping.items())]
    node_site = {n: s for s, n in mapping.items()}
    out = {}
    for reply in grid.send_and_receive(msgs):
        if reply.has_error():
            raise FederationError(f"evaluation failed on site {node_site[reply.metadata.src_node_id]}: "
                                  f"{reply.error.reason}")
        out[SITE_LETTERS[node_site[reply.metadata.src_node_id]]] = {k: float(v) for k, v in
                                                                    reply.content["metrics"].items()}
    return dict(sorted(out.items()))


def make_server_app(cfg: Config, run_dir: Path, resume_from: Path | None = None,
                    result: FlowerResult | None = None, node_wait_s: float = NODE_WAIT_S) -> ServerApp:
    """The ServerApp of one run writing ``run_dir/checkpoints/last.pt`` (see module docstring); ``node_wait_s``
    bounds the wait for the SuperNodes and their handshake replies."""
    app = ServerApp()
    result = result if result is not None else FlowerResult()
    k = cfg.data.num_sites

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        mapping = site_map(grid, k, timeout=node_wait_s)
        node_site = {n: s for s, n in mapping.items()}
        state = load_server_state(resume_from, cfg, k) if resume_from else new_server_state(cfg, _Sites(k))
        last = Path(run_dir) / "checkpoints" / "last.pt"
        for rnd in range(state.round + 1, cfg.federation.rounds + 1):
            msgs = [train_message(state, s, n, rnd, MessageType.TRAIN) for s, n in sorted(mapping.items())]
            replies, failed = _collect(cfg, list(grid.send_and_receive(msgs)), node_site, rnd,
                                       last if last.is_file() else None)
            if len(replies) < cfg.federation.min_sites:
                raise FederationError(f"round {rnd}: only {len(replies)} replies, fewer than federation.min_sites")
            state.aggregator.aggregate(replies)
            state.round = rnd
            row = round_row(rnd, replies, failed, state)
            state.history.append({k2: float(v) for k2, v in row.items()})
            save_server_state(last, cfg, state)
        result.history = state.history
        result.per_site = _evaluate(grid, state, mapping, state.round)

    return app


class _Sites(list):
    """Stand-in for the site list: the server knows only how many sites there are."""

    def __init__(self, k: int):
        super().__init__(type("S", (), {"site": i})() for i in range(k))


# --------------------------------------------------------------------------------------------- client
_DATA: dict[tuple, list] = {}


def _spec(cfg: Config, site: int):
    key = (str(cfg.data.root), tuple(cfg.data.domains), tuple(cfg.data.sup_types))
    if key not in _DATA:
        _DATA[key] = prepare_sites(cfg)[0]
    return _DATA[key][site]


def _load_client(context: Context, site: int, state_dir: Path | None) -> dict:
    if "fedlppa" in context.state:
        rec = context.state["fedlppa"]
        return {name: _unblob(rec[name]) for name in ("current", "previous") if name in rec}
    path = state_dir / f"site_{site}.pt" if state_dir else None
    if path is not None and path.is_file():
        return torch.load(path, weights_only=True)
    return {}


def _state_for(saved: dict, site: int, rnd: int) -> ClientState:
    """The newest saved state that finished before round ``rnd`` (a resumed server may repeat a round)."""
    for name in ("current", "previous"):
        if name in saved and saved[name]["rounds_done"] < rnd:
            return ClientState.from_dict(saved[name])
    return ClientState(site)


def _store(context: Context, saved: dict, new: ClientState, site: int, state_dir: Path | None) -> None:
    current = saved.get("current")
    keep = {"current": new.to_dict()}
    if current is not None and current["rounds_done"] < new.rounds_done:
        keep["previous"] = current
    elif "previous" in saved:
        keep["previous"] = saved["previous"]
    context.state["fedlppa"] = ConfigRecord({name: _blob(v) for name, v in keep.items()})
    if state_dir is not None:
        atomic_torch_save(keep, state_dir / f"site_{site}.pt")


def _received(msg: Message) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None, int]:
    glob = decode_state(msg.content["arrays"])
    aux = decode_state(msg.content["aux"]) if "aux" in msg.content else None
    if aux is not None:
        glob.update(aux)
    return glob, aux, int(msg.content["config"]["round"])


def make_client_app(cfg: Config, state_dir: str | Path | None = None) -> ClientApp:
    """The ClientApp of one run (see module docstring)."""
    app = ClientApp()
    folder = Path(state_dir) if state_dir else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)

    def site_of(context: Context) -> int:
        return int(context.node_config["partition-id"])

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        return Message(RecordDict({"site": ConfigRecord({"partition-id": site_of(context)})}), reply_to=msg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        site = site_of(context)
        glob, aux, rnd = _received(msg)
        saved = _load_client(context, site, folder)
        reply, new = client_train(cfg, _spec(cfg, site), _state_for(saved, site, rnd), glob, aux, rnd)
        _store(context, saved, new, site, folder)
        metrics = MetricRecord({**{k: float(v) for k, v in reply.metrics.items() if np.isfinite(v)},
                                "num-examples": reply.num_examples})
        return Message(RecordDict({"arrays": encode_state(reply.state), "metrics": metrics}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        site = site_of(context)
        glob, aux, rnd = _received(msg)
        state = _state_for(_load_client(context, site, folder), site, rnd + 1)
        _, summary = client_evaluate(cfg, _spec(cfg, site), state, glob, aux, rnd)
        return Message(RecordDict({"metrics": MetricRecord({k: float(v) for k, v in summary.items()})}),
                       reply_to=msg)

    return app


# --------------------------------------------------------------------------------------------- `flwr run` entry
def _cfg_from(context: Context) -> Config:
    overrides = [o for o in str(context.run_config.get("overrides", "")).split() if o]
    root = context.node_config.get("data-root")
    if root:
        overrides += [f"data.root={root}", "data.synthetic=false"]
    return load_config(Config, str(context.run_config["config"]), overrides,
                       search_dirs=[Path(__file__).resolve().parent])


def _server_main(grid: Grid, context: Context) -> None:
    """Deployment: checkpoints under ``run-dir``; the per-round history and the final per-site test metrics are
    written to ``run-dir/flower_result.json`` when the run ends."""
    cfg = _cfg_from(context)
    run_dir = Path(str(context.run_config["run-dir"]))
    last = run_dir / "checkpoints" / "last.pt"
    last.parent.mkdir(parents=True, exist_ok=True)
    resume = last if str(context.run_config.get("resume", "")) == "auto" and last.is_file() else None
    result = FlowerResult()
    wait = float(context.run_config.get("node-wait-s", NODE_WAIT_S))
    make_server_app(cfg, run_dir, resume, result, node_wait_s=wait)(grid, context)
    out = run_dir / "flower_result.json"
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"history": result.history, "per_site": result.per_site}, indent=1))
    tmp.replace(out)


server_app = ServerApp()
server_app.main()(_server_main)
client_app = ClientApp()


@client_app.query()
def _query(msg: Message, context: Context) -> Message:
    return make_client_app(_cfg_from(context), context.node_config.get("state-dir"))(msg, context)


@client_app.train()
def _train(msg: Message, context: Context) -> Message:
    return make_client_app(_cfg_from(context), context.node_config.get("state-dir"))(msg, context)


@client_app.evaluate()
def _evaluate_entry(msg: Message, context: Context) -> Message:
    return make_client_app(_cfg_from(context), context.node_config.get("state-dir"))(msg, context)
