"""eval.py on a ci checkpoint (zero-shot, retrieval, prediction), finetune.py probe, segmentation and detection, the
zero-shot head's argmax, and bad fine-tuning requests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import prior.eval as eval_module
import prior.finetune as finetune_module
import prior.train as train_module
from common.config import ConfigError, load_config
from prior.downstream import _combine, precision_at_k
from prior.settings import Config

STAGES = "optim.stages=[{epochs: 1, lr: 1.0e-3, lr_start: 1.0e-5, warmup_epochs: 0.5}, " \
         "{epochs: 0, lr: 1.0e-3, lr_start: 1.0e-5}, {epochs: 1, lr: 5.0e-4, lr_start: 1.0e-6, warmup_epochs: 0.5}]"


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory) -> tuple[list[str], Path]:
    tmp = tmp_path_factory.mktemp("prior_downstream")
    common = ["--config", "configs/ci.yaml", f"runs_root={tmp / 'runs'}", f"data.root={tmp / 'synthetic'}",
              "data.synth.n_studies=24", "data.image_size=32", "runtime.threads=1"]
    run = train_module.main([*common, STAGES, "--no-eval"])
    return common, run


def test_eval_and_predict(ci_run, tmp_path: Path):
    common, run = ci_run
    checkpoint = run / "checkpoints" / "last.pt"
    summary = eval_module.main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "eval"),
                                *common[2:]])
    assert 0 <= summary["zeroshot_accuracy"] <= 1 and "retrieval_p_at_5" in summary
    assert 0 <= summary["zeroshot_raw_accuracy"] <= 1  # the unquantised-prompt scoring [ours] is logged too
    assert (tmp_path / "eval" / "summary.csv").is_file()
    images = next((Path(common[3].split("=", 1)[1]) / "CheXpert-v1.0-small" / "train").glob("patient0000*"))
    eval_module.main(["--checkpoint", str(checkpoint), "--predict", str(images), "--out", str(tmp_path / "pred")])
    frame = pd.read_csv(tmp_path / "pred" / "predict_per_case.csv")
    assert len(frame) >= 1 and frame["prediction"].isin(["Atelectasis", "Cardiomegaly", "Consolidation", "Edema",
                                                          "Pleural Effusion"]).all()


def test_finetune_probe_and_seg(ci_run):
    common, run = ci_run
    init = str(run / "checkpoints" / "last.pt")
    probe = finetune_module.main([*common, "finetune.task=probe", "finetune.dataset=rsna", "finetune.epochs=5",
                                  f"finetune.init={init}"])
    assert "auc" in probe
    seg = finetune_module.main([*common, "finetune.task=seg", "finetune.dataset=rsna", "finetune.epochs=1",
                                "finetune.init=none"])
    assert 0.0 <= seg["seg_dice"] <= 1.0 and seg["seg_cases"] >= 1
    det = finetune_module.main([*common, "finetune.task=det", "finetune.dataset=object_cxr", "finetune.epochs=1",
                                "finetune.det_width=8", "finetune.init=none"])
    assert -1.0 <= det["det_map"] <= 1.0 and det["det_cases"] >= 1


def test_bad_finetune_requests():
    with pytest.raises(ConfigError, match="supports datasets"):
        load_config(Config, None, ["finetune.task=seg", "finetune.dataset=chexpert"])
    with pytest.raises(ConfigError, match="fraction"):
        load_config(Config, None, ["finetune.fraction=0"])


def test_zeroshot_head_argmax_and_precision():
    g = np.array([[0.0, 5.0, 0.0], [3.0, 0.0, 0.0]])
    local = np.zeros_like(g)
    assert _combine(g, local, 0.5).argmax(1).tolist() == [1, 0]
    scores = np.array([[0.9, 0.1, 0.8], [0.1, 0.9, 0.2]])
    assert precision_at_k(scores, np.array([0, 1]), np.array([0, 1, 0]), 1) == 1.0
    assert precision_at_k(scores, np.array([0, 1]), np.array([0, 1, 0]), 2) == pytest.approx(0.75)
    torch.manual_seed(0)


def test_upper_bound_smoke(tmp_path):
    """The supervised upper bound [ours] trains and scores the 5x200 set on the CI configuration."""
    from prior.upper_bound import main as upper_main

    stages = ("optim.stages=[{epochs: 1, lr: 1.0e-3, lr_start: 1.0e-5, warmup_epochs: 0.5}, "
              "{epochs: 0, lr: 1.0e-3, lr_start: 1.0e-5}, {epochs: 0, lr: 5.0e-4, lr_start: 1.0e-6}]")
    summary = upper_main(["--config", "configs/ci.yaml", f"runs_root={tmp_path / 'runs'}",
                          f"data.root={tmp_path / 'synthetic'}", "data.synth.n_studies=24", "data.image_size=32",
                          "runtime.threads=1", stages])
    assert 0.0 <= summary["upper_zeroshot_accuracy"] <= 1.0
    assert {f"upper_acc_{c}" for c in ("atelectasis", "edema")} <= set(summary)


def test_zeroshot_prompt_sets_reduce_to_the_single_prompt():
    """A prompt set holding the official prompt (twice) scores exactly as the single prompt: max of the global
    and mean of the local scores over a class's prompts; the located set names every class."""
    from torch.utils.data import DataLoader, TensorDataset

    from prior.downstream import located_prompts, zeroshot
    from prior.models import build_model

    cfg = load_config(Config, Path(__file__).resolve().parents[1] / "configs" / "ci.yaml")
    torch.manual_seed(0)
    model = build_model(cfg.model, 32, "prior").eval()
    images = torch.randn(6, 1, 32, 32)
    loader = DataLoader(TensorDataset(images, torch.zeros(6), torch.arange(6)), batch_size=3)
    labels = np.arange(6) % 5
    classes = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
    one, p1 = zeroshot(model, loader, labels, classes, torch.device("cpu"))
    sets = {c: [f"{c} is observed"] * 2 for c in classes}
    two, p2 = zeroshot(model, loader, labels, classes, torch.device("cpu"), prompt_sets=sets)
    np.testing.assert_allclose(p1, p2, rtol=1e-5, atol=1e-6)
    assert one == two
    assert set(located_prompts()) == set(classes) and all(located_prompts().values())


def test_raw_text_embedding_skips_the_spb():
    """``quantize=True`` (official head) sends prompts through the SPB: with one shared prototype every prompt gets
    the same embedding; ``quantize=False`` [ours] keeps the projected sentence embeddings and their pool."""
    from prior.downstream import encode_reports
    from prior.models import build_model

    cfg = load_config(Config, Path(__file__).resolve().parents[1] / "configs" / "ci.yaml")
    torch.manual_seed(0)
    model = build_model(cfg.model, 32, "prior").eval()
    bank = model.sentence_bank.embed.weight.data
    bank.copy_(bank[:1].expand_as(bank))
    prompts = [[f"{c} is observed"] for c in ("Atelectasis", "Cardiomegaly", "Edema")]
    cpu = torch.device("cpu")
    gq, sq, _ = encode_reports(model, prompts, cpu)
    torch.testing.assert_close(gq, gq[:1].expand_as(gq))
    torch.testing.assert_close(sq[:, 0], bank[:1].expand(3, -1))
    gr, sr, mr = encode_reports(model, prompts, cpu, quantize=False)
    with torch.no_grad():
        raw, mask = model.encode_sentences(prompts)
        torch.testing.assert_close(sr, raw)
        torch.testing.assert_close(gr, model.global_text_attention(raw, mask))
    assert not torch.allclose(gr[0], gr[1])


def test_retrieval_pool_adds_the_validate_reports(ci_run):
    """``eval.retrieval_splits=[test,validate]`` [ours] adds the validate studies' reports to the test candidates;
    an unknown split is refused."""
    from common.config import apply_overrides, from_dict, to_dict
    from prior.pipeline import prepare_data, retrieval_studies

    common, _ = ci_run
    cfg = load_config(Config, Path(__file__).resolve().parents[1] / "configs" / "ci.yaml")
    cfg = from_dict(Config, apply_overrides(to_dict(cfg), [c for c in common[2:] if not c.startswith("runtime")]))
    data = prepare_data(cfg)
    assert retrieval_studies(cfg, data) == data.test
    wide = from_dict(Config, apply_overrides(to_dict(cfg), ["eval.retrieval_splits=[test, validate]"]))
    pool = retrieval_studies(wide, data)
    test_ids = {s.study_id for s in data.test}
    assert pool[: len(data.test)] == data.test and len(pool) > len(data.test)
    assert not test_ids & {s.study_id for s in pool[len(data.test):]}
    with pytest.raises((ValueError, ConfigError), match="retrieval_splits"):
        from_dict(Config, apply_overrides(to_dict(cfg), ["eval.retrieval_splits=[train]"]))


def test_box_cells_and_grounding_diagnosis():
    """A box covering grid cell (1, 2) of a 4x4 grid marks token 1 * 4 + 2 only; the grounding diagnosis [ours]
    gives rates in [0, 1] and a chance level equal to the covered share of the grid."""
    from prior.downstream import box_cells, grounding_diagnosis
    from prior.models import build_model

    cells = box_cells([(17, 9, 23, 15), (0, 0, 32, 32)], grid=4, image_size=32)
    assert np.flatnonzero(cells[0]).tolist() == [6] and cells[1].all()
    cfg = load_config(Config, Path(__file__).resolve().parents[1] / "configs" / "ci.yaml")
    torch.manual_seed(0)
    model = build_model(cfg.model, 32, "prior").eval()
    grid = model.grid[0]
    boxes = [(0, 0, 32 / grid, 32 / grid), (0, 0, 32, 32)]
    out = grounding_diagnosis(model, torch.randn(2, 1, 32, 32), ["Small left effusion.", "Mild edema."], boxes, 32,
                              torch.device("cpu"))
    assert out["pg_chance"] == pytest.approx((1 / grid**2 + 1) / 2)
    assert all(0 <= out[k] <= 1 for k in ("pg_sentence_attention", "pg_patch_attention", "pg_cosine",
                                         "peak_mode_share", "att_range"))
