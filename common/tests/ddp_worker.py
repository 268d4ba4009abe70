"""Worker launched by test_runtime.py under torchrun (2 CPU processes, gloo): checks gradient sync and exact
metric gathering. Writes rank<N>.json into the folder given as argv[1]."""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from common.metrics import auc_macro_ovr
from common.runtime import (
    all_gather_tensor,
    all_gather_with_grad,
    cleanup_distributed,
    gather_by_index,
    init_distributed,
    make_sampler,
    wrap_ddp,
)


def main() -> None:
    out = Path(sys.argv[1])
    info = init_distributed()
    torch.manual_seed(0)  # same data and initial weights on every rank
    x = torch.randn(8, 3)
    y = torch.randn(8, 1)
    model = torch.nn.Linear(3, 1)
    reference = torch.nn.Linear(3, 1)
    reference.load_state_dict(model.state_dict())
    ddp = wrap_ddp(model, torch.device("cpu"))
    shard = slice(info.rank * 4, info.rank * 4 + 4)  # rank r gets samples 4r..4r+3
    torch.nn.functional.mse_loss(ddp(x[shard]), y[shard]).backward()
    torch.nn.functional.mse_loss(reference(x), y).backward()

    # evaluation: 5 samples, DistributedSampler pads to 6; gather by index must drop the duplicate
    labels = np.array([0, 1, 0, 1, 1])
    scores = np.array([0.2, 0.9, 0.4, 0.3, 0.7])
    dataset = TensorDataset(torch.arange(5), torch.as_tensor(scores))
    loader = DataLoader(dataset, batch_size=2, sampler=make_sampler(dataset, shuffle=False))
    local_idx, local_scores = [], []
    for idx, s in loader:
        local_idx.append(idx.numpy())
        local_scores.append(s.numpy())
    idx, gathered = gather_by_index(np.concatenate(local_idx), np.concatenate(local_scores))
    probs = np.stack([1 - gathered, gathered], 1)
    # the gather keeps the graph: rank r's loss weighs the gathered vector by (r + 1) * [0, 1, 2, 3]
    local = torch.full((2,), float(info.rank + 1), requires_grad=True)
    (all_gather_with_grad(local) * torch.arange(4.0) * (info.rank + 1)).sum().backward()
    result = {
        "world_size": info.world_size,
        "ddp_grad": model.weight.grad.ravel().tolist() + model.bias.grad.ravel().tolist(),
        "full_batch_grad": reference.weight.grad.ravel().tolist() + reference.bias.grad.ravel().tolist(),
        "local_count": int(sum(len(i) for i in local_idx)),
        "gathered_count": int(len(idx)),
        "gathered_auc": auc_macro_ovr(labels[idx], probs),
        "single_process_auc": auc_macro_ovr(labels, np.stack([1 - scores, scores], 1)),
        "gathered_tensor": all_gather_tensor(torch.full((2,), float(info.rank))).tolist(),
        "gather_with_grad_grad": local.grad.tolist(),
    }
    (out / f"rank{info.rank}.json").write_text(json.dumps(result))
    cleanup_distributed()


if __name__ == "__main__":
    main()
