"""Runtime keys: what fedlppa cannot honour is refused; ``runtime.device`` places every client (CPU here, CUDA
where present) while the states it returns stay on CPU; the CUDA configs set ``runtime.amp`` and the Flower
simulation's ``client_resources``, which are validated."""

import math
from pathlib import Path

import pytest
import torch

from common.config import ConfigError, from_dict, load_config
from fedlppa.federation import ClientState, client_device, client_evaluate, client_train, initial_global_state
from fedlppa.flower_app import backend_config
from fedlppa.pipeline import prepare_sites
from fedlppa.settings import Config

PROJECT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("runtime", "message"), [({"amp": "bf16"}, "no mixed-precision path"),
                                                  ({"compile": True}, "does not compile")])
def test_runtime_keys_it_cannot_honour_are_refused(runtime, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Config, {"runtime": runtime})


@pytest.mark.parametrize("name", ["faz", "odoc", "polyp", "prostate"])
def test_cuda_configs_set_amp_and_client_resources(name):
    cfg = load_config(Config, PROJECT / "configs" / f"{name}.yaml")
    assert cfg.runtime.amp == "off" and cfg.runtime.device == "auto"
    assert backend_config(cfg) == {"client_resources": {"num_cpus": 2, "num_gpus": 0.25}}


@pytest.mark.parametrize(("section", "message"), [
    ({"client_resources": {"num_gpus": 2}}, r"share of one GPU .* in \[0, 1\]"),
    ({"client_resources": {"num_cpus": 0}}, "num_cpus must be > 0"),
    ({"client_resources": {"num_gpus": 0.5}, "runtime": {"device": "cpu"}}, "runtime.device=cpu"),
    ({"runtime": {"num_gpus": 0.5}}, "client_resources|num_gpus"),
])
def test_client_resources_are_validated(section, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Config, section)


def test_client_device_follows_runtime_device(monkeypatch):
    assert client_device(from_dict(Config, {"runtime": {"device": "cpu"}})) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert client_device(from_dict(Config, {"runtime": {"device": "auto"}})) == torch.device("cpu")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        client_device(from_dict(Config, {"runtime": {"device": "cuda"}}))


def _one_round(cfg):
    specs, _ = prepare_sites(cfg)
    glob = initial_global_state(cfg)
    reply, state = client_train(cfg, specs[0], ClientState(0), glob, None, 1)
    _, summary = client_evaluate(cfg, specs[0], state, reply.state, None, 1)
    return reply, summary


@pytest.mark.gpu
def test_a_client_round_on_cuda_returns_cpu_states(ci_data, make_cfg):
    reply, summary = _one_round(make_cfg(ci_data, "runtime.device=cuda", "federation.method=fedlppa"))
    assert {v.device.type for v in reply.state.values()} == {"cpu"}
    assert math.isfinite(reply.metrics["loss"]) and 0.0 <= summary["dice"] <= 1.0


def test_a_client_round_on_cpu_returns_cpu_states(ci_data, make_cfg):
    reply, summary = _one_round(make_cfg(ci_data, "runtime.device=cpu", "federation.method=fedprox"))
    assert {v.device.type for v in reply.state.values()} == {"cpu"}
    assert math.isfinite(reply.metrics["loss"]) and 0.0 <= summary["dice"] <= 1.0
