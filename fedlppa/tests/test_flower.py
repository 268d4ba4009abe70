"""Flower apps: the ServerApp/ClientApp pair (3 sites x 2 rounds, a site failing in round 2) gives the per-site
metrics of the sequential driver to 1e-6, in process (a Grid that delivers messages to the ClientApp, as the
Simulation Engine does), in a real deployment (one SuperLink, three SuperNodes, ``flwr run``; processes on
127.0.0.1) and, where Ray is installed, with ``flwr.simulation.run_simulation``; handshake errors."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import pytest
from flwr.app import Context, Error, Message, RecordDict
from flwr.serverapp import Grid

from common.rundir import RunDir
from common.tracking import Tracker
from fedlppa.federation import FederationError
from fedlppa.fl_sequential import run_federation
from fedlppa.flower_app import FlowerResult, backend_config, make_client_app, make_server_app, site_map
from fedlppa.pipeline import prepare_sites


class LocalGrid(Grid):
    """Delivers every message to ``client_app`` with that node's Context (state kept per node); an exception in
    the ClientApp becomes an error reply with code 2, as the Flower runtimes do."""

    def __init__(self, client_app, partition_ids: list[int]):
        from flwr.supercore.task_identity import TaskIdentity

        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0  # set by a Flower runtime
        self.client_app = client_app
        self.contexts = {100 + i: Context(1, 100 + i, {"partition-id": pid, "num-partitions": len(partition_ids)},
                                          RecordDict(), {}) for i, pid in enumerate(partition_ids)}
        self._replies: dict[str, Message] = {}

    def set_run(self, run) -> None:
        self._run = run

    @property
    def run(self):
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:
        return Message(content, dst_node_id, message_type, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for i, msg in enumerate(messages):
            try:
                reply = self.client_app(msg, self.contexts[msg.metadata.dst_node_id])
            except Exception as exc:  # noqa: BLE001 - mirrors the runtime's error reply
                reply = Message(Error(2, f"{type(exc).__name__}: {exc}"), reply_to=msg)
            self._replies[str(i)] = reply
            ids.append(str(i))
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))


def _cfg(make_cfg, ci_data):
    return make_cfg(ci_data, "federation.rounds=2", "federation.inject_failure.site=1",
                    "federation.inject_failure.round=2", "federation.inject_failure.after_iters=1")


def _sequential(cfg, tmp_path):
    specs, sites = prepare_sites(cfg)
    run = RunDir(tmp_path / "seq")
    run.checkpoints.mkdir(parents=True)
    with Tracker(run.path, tensorboard=False) as tracker:
        return run_federation(cfg, run, specs, sites, None, tracker)


def _assert_same(seq, per_site):
    assert list(per_site) == list(seq.per_site)
    for site, ref in seq.per_site.items():
        for key, value in ref.items():
            assert math.isclose(per_site[site][key], value, abs_tol=1e-6), (site, key)


def test_flower_apps_equal_sequential_in_process(ci_data, make_cfg, tmp_path):
    cfg = _cfg(make_cfg, ci_data)
    seq = _sequential(cfg, tmp_path)
    result = FlowerResult()
    server = make_server_app(cfg, tmp_path / "flower", result=result)
    (tmp_path / "flower" / "checkpoints").mkdir(parents=True)
    grid = LocalGrid(make_client_app(cfg, tmp_path / "state"), [2, 0, 1])  # node order != site order
    server(grid, Context(1, 0, {}, RecordDict(), {}))
    assert [row["failed_b"] for row in result.history] == [0.0, 1.0]
    assert [row["failed_b"] for row in seq.state.history] == [0.0, 1.0]
    _assert_same(seq, result.per_site)
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["site_0.pt", "site_1.pt", "site_2.pt"]


def test_handshake_rejects_duplicate_and_missing_partition_ids(ci_data, make_cfg, tmp_path):
    cfg = _cfg(make_cfg, ci_data)
    app = make_client_app(cfg)
    with pytest.raises(FederationError, match="partition-id 0 is used by nodes"):
        site_map(LocalGrid(app, [0, 0, 1]), 3, timeout=1)
    with pytest.raises(FederationError, match=r"no SuperNode has partition-id \[2\]"):
        site_map(LocalGrid(app, [0, 1, 5]), 3, timeout=1)
    with pytest.raises(FederationError, match="only 2 of 3 SuperNodes"):
        site_map(LocalGrid(app, [0, 1]), 3, timeout=1)


@pytest.mark.slow
def test_run_simulation_equals_sequential(ci_data, make_cfg, tmp_path):
    pytest.importorskip("ray", reason="the Flower Simulation Engine needs flwr[simulation] (Ray)")
    from flwr.simulation import run_simulation

    cfg = _cfg(make_cfg, ci_data)
    seq = _sequential(cfg, tmp_path)
    (tmp_path / "sim" / "checkpoints").mkdir(parents=True)
    result = FlowerResult()
    run_simulation(make_server_app(cfg, tmp_path / "sim", result=result), make_client_app(cfg, tmp_path / "st"),
                   num_supernodes=3, backend_config=backend_config(cfg))
    _assert_same(seq, result.per_site)


# --------------------------------------------------------------------------------------------- deployment
PROJECT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def _start(cmd: list[str], log: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _deployment_env(tmp_path: Path, port: int) -> dict:
    home = tmp_path / "flwr_home"
    home.mkdir()
    (home / "config.toml").write_text(f'[superlink]\ndefault = "test"\n\n[superlink.test]\n'
                                      f'address = "127.0.0.1:{port}"\ninsecure = true\n')
    return {**os.environ, "FLWR_HOME": str(home), "OMP_NUM_THREADS": "1",
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


@pytest.mark.slow
def test_superlink_and_supernodes_equal_sequential(ci_data, make_cfg, tmp_path):
    overrides = f"data.root={ci_data / 'data'} runs_root={ci_data / 'runs'} federation.rounds=2"
    seq = _sequential(make_cfg(ci_data, "federation.rounds=2"), tmp_path)
    port = _free_port()
    env = _deployment_env(tmp_path, port)
    procs = [_start([str(BIN / "flower-superlink"), "--insecure", "--port", str(port),
                     "--disable-runtime-dependency-installation"], tmp_path / "superlink.log", env)]
    try:
        _wait_for_port(port, 120)
        for site in range(3):
            node = f'partition-id={site} num-partitions=3 state-dir="{tmp_path / "state"}"'
            cmd = [str(BIN / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{port}",
                   "--port", str(_free_port()), "--node-config", node]
            procs.append(_start(cmd, tmp_path / f"node{site}.log", env))
        run_config = (f'config="configs/ci.yaml" overrides="{overrides}" run-dir="{tmp_path / "run"}" '
                      f'node-wait-s=600')
        proc = subprocess.run([str(BIN / "flwr"), "run", "fl_app", "test", "--run-config", run_config, "--stream"],
                              cwd=PROJECT, env=env, capture_output=True, text=True, timeout=900)
    finally:
        _stop(procs)
    result = tmp_path / "run" / "flower_result.json"
    assert result.is_file(), (proc.stdout[-4000:], proc.stderr[-2000:])
    got = json.loads(result.read_text())
    assert [row["round"] for row in got["history"]] == [1.0, 2.0]
    _assert_same(seq, got["per_site"])
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["site_0.pt", "site_1.pt", "site_2.pt"]
