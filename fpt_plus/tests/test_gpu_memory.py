"""GPU memory claim (FPT+ abstract: 3.18 % of full fine-tuning's training memory): one AdamW step of FPT+ from
preloaded keys/values vs full fine-tuning of ViT-B/16 at 512^2, fp32, batch 16, ``torch.cuda.max_memory_allocated``
in the same process. Needs CUDA (marker ``gpu``; skipped elsewhere)."""

from __future__ import annotations

import pytest
import torch

from fpt_plus.bench import measure_step


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_preloaded_fpt_plus_needs_under_a_tenth_of_full_finetuning_memory() -> None:
    device = torch.device("cuda")
    full = measure_step("full_finetune", 512, 16, device, repeats=1)
    torch.cuda.empty_cache()
    fpt_plus = measure_step("fpt_plus", 512, 16, device, repeats=1)
    ratio = fpt_plus["peak_mib"] / full["peak_mib"]
    print(f"{torch.cuda.get_device_name(device)}: FPT+ {fpt_plus['peak_mib']:.0f} MiB, full fine-tuning "
          f"{full['peak_mib']:.0f} MiB, ratio {ratio:.4f}")
    assert full["peak_mib"] > 1000  # the full ViT-B step really ran at 512^2
    assert ratio < 0.10
