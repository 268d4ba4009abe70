"""Two gloo processes: the global CLIP loss with ``all_gather_with_grad`` gives the single-process loss and, after
DDP-style gradient averaging, the single-process gradients of the full batch."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from prior.models.alignment import global_clip_loss


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    image_proj, text_proj = torch.nn.Linear(6, 4), torch.nn.Linear(5, 4)
    images, texts = torch.randn(8, 6), torch.randn(8, 5)
    return image_proj, text_proj, images, texts


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    image_proj, text_proj, images, texts = _setup()
    part = slice(rank * 4, (rank + 1) * 4)
    loss = global_clip_loss(image_proj(images[part]), text_proj(texts[part]), torch.tensor(10.0))
    loss.backward()
    grads = [p.grad.clone() for p in (*image_proj.parameters(), *text_proj.parameters())]
    for g in grads:  # what DistributedDataParallel does
        dist.all_reduce(g)
        g /= world
    losses = [torch.zeros(()) for _ in range(world)]
    dist.all_gather(losses, loss.detach())
    if rank == 0:
        torch.save({"grads": grads, "loss": torch.stack(losses).mean()}, out)
    dist.barrier()
    dist.destroy_process_group()


def test_two_process_loss_and_gradients_equal_single_process(tmp_path: Path):
    out = str(tmp_path / "ddp.pt")
    mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    image_proj, text_proj, images, texts = _setup()
    loss = global_clip_loss(image_proj(images), text_proj(texts), torch.tensor(10.0))
    loss.backward()
    ref = [p.grad for p in (*image_proj.parameters(), *text_proj.parameters())]
    got = torch.load(out, weights_only=True)
    torch.testing.assert_close(got["loss"], loss.detach(), rtol=1e-5, atol=1e-6)
    for a, b in zip(got["grads"], ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
