import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from common import runtime
from common.runtime import (
    autocast,
    bf16_support,
    gather_by_index,
    make_grad_scaler,
    pick_device,
    reduce_mean,
    unwrap_model,
)


def test_device_and_amp_on_cpu():
    dev = pick_device("auto") if not torch.cuda.is_available() else torch.device("cpu")
    assert dev.type == "cpu" or torch.cuda.is_available()
    cpu = torch.device("cpu")
    a = torch.randn(4, 4)
    with autocast(cpu, "bf16"):
        assert (a @ a).dtype == torch.bfloat16
    with autocast(cpu, "off"):
        assert (a @ a).dtype == torch.float32
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        autocast(cpu, "fp16")
    assert not make_grad_scaler(cpu, "bf16").is_enabled()


def test_gather_by_index_single_process_sorts_and_dedupes():
    idx, val = gather_by_index(np.array([3, 1, 2, 1]), np.array([30.0, 10.0, 20.0, 10.0]))
    np.testing.assert_array_equal(idx, [1, 2, 3])
    np.testing.assert_array_equal(val, [10.0, 20.0, 30.0])
    assert reduce_mean(2.5) == 2.5


def test_unwrap_model_strips_compile_wrapper():
    model = torch.nn.Linear(2, 2)
    assert unwrap_model(torch.compile(model)) is model


@pytest.mark.slow
def test_torchrun_two_processes_sync_gradients_and_gather_exact_metrics(tmp_path):
    worker = Path(__file__).with_name("ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=0",
           "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0", str(worker), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    # DDP averaged the gradients: both ranks hold the same gradient, equal to the full-batch gradient
    for res in results:
        np.testing.assert_allclose(res["ddp_grad"], res["full_batch_grad"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(results[0]["ddp_grad"], results[1]["ddp_grad"], rtol=0, atol=0)
    # each rank saw only part of the data (with DistributedSampler padding), yet the gathered metric is exact
    assert results[0]["local_count"] + results[1]["local_count"] == 6  # 5 samples padded to 6
    for res in results:
        assert res["gathered_count"] == 5
        assert res["gathered_auc"] == pytest.approx(res["single_process_auc"], abs=0)
        assert res["world_size"] == 2
        assert res["gathered_tensor"] == [0.0, 0.0, 1.0, 1.0]  # every rank's tensor, in rank order
    # all_gather_with_grad: the local part's gradient sums every rank's loss ((1 + 2) x its slice of [0, 1, 2, 3])
    assert results[0]["gather_with_grad_grad"] == [0.0, 3.0]
    assert results[1]["gather_with_grad_grad"] == [6.0, 9.0]


def test_backward_and_step_clips_and_steps():
    from common.runtime import backward_and_step

    model = torch.nn.Linear(3, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    loss = (model(torch.full((1, 3), 100.0)) - 1.0).pow(2).sum()  # gradient norm far above 1
    backward_and_step(loss, opt, make_grad_scaler(torch.device("cpu"), "off"), grad_clip=1.0)
    # with clipping the update has norm exactly 1 (SGD, lr 1); without it would be ~346
    assert float(model.weight.detach().norm()) == pytest.approx(1.0, rel=1e-5)


def test_threads_zero_restores_the_torch_default():
    import torch

    from common.runtime import _TORCH_DEFAULT_THREADS, apply_threads

    assert apply_threads(1) == 1 == torch.get_num_threads()
    assert apply_threads(0) == _TORCH_DEFAULT_THREADS


def test_unsupported_runtime_keys_are_refused():
    import pytest

    from common.runtime import RuntimeConfig, refuse_unsupported

    refuse_unsupported(RuntimeConfig(), amp=False, compile=False)
    with pytest.raises(ValueError, match="runtime.amp=bf16"):
        refuse_unsupported(RuntimeConfig(amp="bf16"), amp=False)
    with pytest.raises(ValueError, match="runtime.compile"):
        refuse_unsupported(RuntimeConfig(compile=True), compile=False)
    with pytest.raises(ValueError, match="threads"):
        RuntimeConfig(threads=-1)


@pytest.mark.parametrize(("onednn", "units", "expected"), [
    (True, True, "native"), (True, False, "emulated"),  # oneDNN runs bf16 on plain AVX-512 in fp32 units
    (False, True, "none"), (False, False, "none"),
])
def test_bf16_support_on_cpu_follows_what_torch_reports(monkeypatch, onednn, units, expected):
    monkeypatch.setattr(runtime, "_onednn_bf16", lambda: onednn)
    monkeypatch.setattr(runtime, "_cpu_bf16_units", lambda: units)
    assert bf16_support(torch.device("cpu")) == expected


def test_bf16_support_of_this_cpu_agrees_with_its_instruction_flags():
    """torch's probe against the kernel's view of the CPU (Linux): no AVX512-BF16 / AMX-BF16 flag, no ``native``."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo on this system")
    flags = set()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    support = bf16_support(torch.device("cpu"))
    assert support in ("native", "emulated", "none")
    if not {"avx512_bf16", "amx_bf16"} & flags:
        assert support != "native"
    elif runtime._onednn_bf16():
        assert support == "native"
    if support != "none":  # what it reports, it can run
        with autocast(torch.device("cpu"), "bf16"):
            out = torch.ones(8, 8) @ torch.ones(8, 8)
        assert out.dtype == torch.bfloat16 and float(out[0, 0]) == 8.0


@pytest.mark.parametrize("freeze", [False, True])
def test_compile_inference_equals_the_module_and_scopes_freezing(freeze):
    from torch._inductor import config as inductor_config

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4)).eval()
    module.requires_grad_(False)
    x = torch.randn(3, 8)
    with torch.no_grad():
        expected = module(x)
        out = runtime.compile_inference(module, freeze=freeze)(x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert inductor_config.freezing is False  # the switch did not leak into the process
