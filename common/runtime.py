"""Device, mixed precision, torch.compile and torchrun/DDP helpers: one code path for 1 CPU, 1 GPU or N GPUs.

Multi-GPU runs are launched with ``torchrun --nproc_per_node=N <project>/train.py --config ...``; everything here
reads the torchrun environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``) and is a no-op without it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler, Sampler

AmpMode = Literal["off", "bf16", "fp16"]

__all__ = [
    "AmpMode",
    "Bf16Support",
    "DistInfo",
    "RuntimeConfig",
    "setup_runtime",
    "apply_threads",
    "refuse_unsupported",
    "backward_and_step",
    "pick_device",
    "autocast",
    "bf16_support",
    "make_grad_scaler",
    "maybe_compile",
    "compile_inference",
    "init_distributed",
    "dist_info",
    "is_main_process",
    "barrier",
    "cleanup_distributed",
    "wrap_ddp",
    "unwrap_model",
    "make_sampler",
    "all_gather_arrays",
    "all_gather_tensor",
    "all_gather_with_grad",
    "gather_by_index",
    "reduce_mean",
    "broadcast_object",
]


_TORCH_DEFAULT_THREADS = torch.get_num_threads()


@dataclass
class RuntimeConfig:
    """The ``runtime:`` section shared by every project's config (subclass it to add project fields).

    ``threads``: intra-op CPU threads; 0 keeps (or restores) torch's default for this machine.
    ``progress``: tqdm bars on long loops (one plain log line per epoch is printed either way).
    """

    device: str = "auto"
    amp: AmpMode = "off"
    compile: bool = False
    deterministic: bool = False
    threads: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.threads < 0:
            raise ValueError(f"runtime.threads must be >= 0 (0 = torch default), got {self.threads}")


def apply_threads(threads: int) -> int:
    """Set torch's intra-op thread count; ``0`` restores the default torch chose at start-up. Returns the count."""
    torch.set_num_threads(int(threads) if threads > 0 else _TORCH_DEFAULT_THREADS)
    return torch.get_num_threads()


def refuse_unsupported(runtime: RuntimeConfig, *, amp: bool = True, compile: bool = True,
                       project: str = "this project") -> None:
    """Raise for a runtime key the project cannot honour (never accept a key and ignore it)."""
    if not amp and runtime.amp != "off":
        raise ValueError(f"runtime.amp={runtime.amp}: {project} has no mixed-precision path; use runtime.amp=off")
    if not compile and runtime.compile:
        raise ValueError(f"runtime.compile=true: {project} does not compile its models; use runtime.compile=false")


def setup_runtime(runtime: RuntimeConfig, seed: int) -> torch.device:
    """The one place a run applies its ``runtime:`` section: process group (under torchrun), threads, seeds and
    determinism, then the device (``cuda:<local_rank>`` when CUDA is present and ``device: auto``)."""
    from common.seed import seed_everything  # common.seed imports nothing from here; keep the import local anyway

    info = init_distributed()
    apply_threads(runtime.threads)
    seed_everything(seed, rank=info.rank, deterministic=runtime.deterministic)
    return pick_device(runtime.device, info.local_rank)


def backward_and_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None = None,
                      parameters: Iterable[torch.nn.Parameter] | None = None, grad_clip: float = 0.0) -> None:
    """One optimisation step: zero grads, backward (loss-scaled for fp16), unscale, clip the gradient norm of
    ``parameters`` to ``grad_clip`` when > 0, step and update the scaler."""
    optimizer.zero_grad(set_to_none=True)
    scaling = scaler is not None and scaler.is_enabled()
    if scaling:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    if grad_clip > 0:
        if parameters is None:
            parameters = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(list(parameters), grad_clip)
    if scaling:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a torchrun job (world_size 1 when not distributed)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when CUDA is available, else CPU; otherwise ``torch.device(name)``."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"runtime.device={name} but CUDA is not available; use runtime.device=auto or cpu")
    return device


def autocast(device: torch.device, amp: AmpMode = "off") -> contextlib.AbstractContextManager:
    """Autocast context for ``off|bf16|fp16``. fp16 on CPU is refused (no CPU fp16 autocast worth having)."""
    if amp == "off":
        return contextlib.nullcontext()
    if amp not in ("bf16", "fp16"):
        raise ValueError(f"runtime.amp must be off, bf16 or fp16, got {amp!r}")
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("runtime.amp=fp16 needs CUDA; use runtime.amp=bf16 or off on CPU")
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


Bf16Support = Literal["native", "emulated", "none"]


def _onednn_bf16() -> bool:
    """oneDNN reports bf16 kernels (true on AVX-512 CPUs even where they only emulate bf16 in fp32 units)."""
    probe = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
    return bool(torch.backends.mkldnn.is_available() and probe is not None and probe())


def _cpu_bf16_units() -> bool:
    """torch's CPU probes: AVX512-BF16 instructions or AMX tiles (which carry AMX-BF16)."""
    probes = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(bool(probe()) for probe in probes if probe is not None)


def bf16_support(device: torch.device) -> Bf16Support:
    """What bf16 matrix products run on ``device``, as torch reports it at run time (CPUs of one kind of machine
    differ). ``native``: bf16 units (CUDA ``is_bf16_supported(including_emulation=False)``; a CPU with oneDNN bf16
    kernels and AVX512-BF16 or AMX): bf16 autocast pays. ``emulated``: bf16 runs but on fp32 units (older CUDA
    GPUs; oneDNN on plain AVX-512), usually slower than fp32. ``none``: bf16 autocast is not worth running or fails.
    Projects decide ``auto`` precision from ``native`` and refuse an explicit bf16 only on ``none``."""
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "none"
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return "native"
        return "emulated" if torch.cuda.is_bf16_supported(including_emulation=True) else "none"
    if device.type != "cpu" or not _onednn_bf16():
        return "none"
    return "native" if _cpu_bf16_units() else "emulated"


def make_grad_scaler(device: torch.device, amp: AmpMode = "off") -> torch.amp.GradScaler:
    """GradScaler that is enabled only for fp16 (bf16 and fp32 need no loss scaling)."""
    return torch.amp.GradScaler(device.type, enabled=(amp == "fp16"))


def maybe_compile(model: torch.nn.Module, enabled: bool = False, **kwargs: Any) -> torch.nn.Module:
    """``torch.compile(model)`` when enabled, else the model unchanged."""
    return torch.compile(model, **kwargs) if enabled else model


def compile_inference(module: torch.nn.Module, freeze: bool = False,
                      **kwargs: Any) -> Callable[..., Any]:
    """``torch.compile(module)`` for inference. ``freeze``: with inductor's freezing, which treats the parameters as
    constants (folded into the graph and, on CPU, pre-packed for oneDNN), for modules that never train. The freezing
    switch is scoped to the calls of the returned function (compilation happens at the first call, and again at a
    recompilation), so other compiled modules of the process are untouched."""
    compiled = torch.compile(module, **kwargs)
    if not freeze:
        return compiled

    def frozen(*args: Any, **call_kwargs: Any) -> Any:
        from torch._inductor import config as inductor_config

        with inductor_config.patch(freezing=True):
            return compiled(*args, **call_kwargs)

    return frozen


# --------------------------------------------------------------------------------------------- distributed
def dist_info() -> DistInfo:
    """Rank / local rank / world size from an initialised process group or the torchrun environment."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0)), dist.get_world_size())
    return DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
                    int(os.environ.get("WORLD_SIZE", 1)))


def init_distributed(backend: str | None = None) -> DistInfo:
    """Initialise the process group from the torchrun environment (nccl on CUDA, gloo on CPU); no-op otherwise."""
    info = dist_info()
    if info.world_size > 1 and not dist.is_initialized():
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend)
    return dist_info()


def is_main_process() -> bool:
    return dist_info().is_main


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup_distributed() -> None:
    """Tear the process group down once every rank got here (a rank that leaves while a peer still exchanges the
    last collective's data can abort gloo's transport thread)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def wrap_ddp(model: torch.nn.Module, device: torch.device, find_unused_parameters: bool = False) -> torch.nn.Module:
    """DistributedDataParallel when a process group is up, else the model itself."""
    if not (dist.is_available() and dist.is_initialized()):
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids,
                                                     find_unused_parameters=find_unused_parameters)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """Strip DDP and torch.compile wrappers."""
    while True:
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def make_sampler(dataset: Dataset, shuffle: bool, seed: int = 0, drop_last: bool = False) -> Sampler | None:
    """A DistributedSampler in a distributed run (call ``set_epoch`` each epoch), else None (use ``shuffle``)."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    return DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)


def all_gather_arrays(array: np.ndarray | torch.Tensor) -> np.ndarray:
    """Concatenate (along axis 0) arrays of possibly different lengths from every rank, in rank order."""
    arr = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    if not (dist.is_available() and dist.is_initialized()):
        return arr
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, arr)
    return np.concatenate(gathered, axis=0)


class _GatherWithGrad(torch.autograd.Function):
    """Forward: ``all_gather`` + concatenation; backward: the gradient of the whole concatenation summed over
    ranks (``all_reduce``), then this rank's slice. Plain synchronous collectives (no deprecated
    ``torch.distributed.nn`` path)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # noqa: D102 - see class docstring
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        ctx.rank, ctx.size = dist.get_rank(), tensor.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.size:(ctx.rank + 1) * ctx.size]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate a same-shaped tensor from every rank along dim 0, keeping the autograd graph (the backward
    sums every rank's gradient into the local part: CLIP-style losses with other ranks' negatives); the tensor
    itself when not distributed."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    return _GatherWithGrad.apply(tensor)


def all_gather_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate (along dim 0) a same-shaped tensor from every rank, in rank order, on its device (no gradient;
    e.g. the keys a MoCo-style queue enqueues). The tensor itself when not distributed."""
    if not (dist.is_available() and dist.is_initialized()):
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def gather_by_index(indices: np.ndarray | torch.Tensor, *arrays: np.ndarray | torch.Tensor
                    ) -> tuple[np.ndarray, ...]:
    """Gather per-sample arrays from all ranks and return them sorted by dataset index, duplicates removed.

    DistributedSampler pads the last shard by repeating samples; dropping repeated indices makes metrics computed on
    the gathered arrays exactly equal to a single-process evaluation. Returns ``(indices, *arrays)``.
    """
    idx = all_gather_arrays(indices).astype(np.int64)
    gathered = [all_gather_arrays(a) for a in arrays]
    _, first = np.unique(idx, return_index=True)
    order = first[np.argsort(idx[first])]
    return (idx[order], *(g[order] for g in gathered))


def reduce_mean(value: float | torch.Tensor) -> float:
    """Mean of a scalar over all ranks (for logging losses)."""
    if not (dist.is_available() and dist.is_initialized()):
        return float(value)
    tensor = torch.as_tensor(float(value), dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return float(tensor) / dist.get_world_size()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Send a picklable object from rank ``src`` to every rank (identity when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. writes a synthetic dataset), the others wait and then run it."""
    info = dist_info()
    if not info.is_main:
        barrier()
    yield
    if info.is_main:
        barrier()


def shard(items: Sequence[Any], info: DistInfo | None = None) -> list[Any]:
    """The strided share of ``items`` that this rank handles (for embarrassingly parallel preprocessing)."""
    info = info or dist_info()
    return list(items[info.rank :: info.world_size])


__all__ += ["main_process_first", "shard"]
