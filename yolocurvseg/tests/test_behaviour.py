"""Behaviour on the hidden synthetic domain (small): a segmenter that never saw a real label, trained on SCA curves
composited on the ONE inpainted background, segments the hidden test images far above chance; the claimed ordering
(full pipeline > its coarse stage, > pCE on the same skeleton, >= synthetic-only) holds at reduced scale."""

from pathlib import Path

import numpy as np
import pytest

from yolocurvseg import train

CFG = str(Path(__file__).resolve().parents[1] / "configs" / "ci.yaml")
COMMON = ["data.size=96", "data.n_train=4", "data.n_test=3", "background.radius=4", "curves.n_samples=24",
          "curves.overrides={ref_size: 96, n_attractors: 90, influence: 20.0, kill: 3.0, step: 2.0, max_radius: 2.2,"
          " leaf_radius: 0.8, min_radius: 0.7}",
          "model.channels=[8, 16, 32, 64]", "model.strides=[2, 2, 2]", "eval.roi=96",
          "optim.steps=300", "optim.batch_size=4", "data.crop=64", "optim.lr=0.003", "fine.steps=60", "fine.rounds=2",
          "synthesizer.steps=20", "synthesizer.crop=48", "runtime.save_every=1000"]


def _chance_dice(res) -> float:
    """Dice of predicting every FOV pixel as vessel (the trivial segmenter) on the same test set."""
    from yolocurvseg.data import list_cases, load_cases

    cases = load_cases(list_cases("drive", res.run_dir.parents[3] / "data", "test"), "drive")
    d = [2 * c.label[c.fov].sum() / (c.label[c.fov].sum() + c.fov.sum()) for c in cases]
    return float(np.mean(d))


@pytest.mark.slow
def test_synthetic_curves_alone_segment_the_hidden_domain_and_the_ordering_holds(tmp_path):
    """Reduced scale, deterministic (fixed seeds, one thread): synthetic-only is far above chance; the full pipeline
    beats its own coarse stage by 0.01 Dice (the fine stage must gain, not merely not lose), pCE on the same skeleton
    by 0.05 Dice, and the synthetic-only ablation. The coarse stage has the default's 300 steps and the fine stage
    the default's two rounds (at 150 coarse steps and one 60-step round the fine stage lost 0.015 Dice). At this
    scale the gain (+0.040 Dice; +0.018 / +0.032 with seeds 1 / 2) is partly extra training: the same two rounds on
    synthetic crops only gain +0.017, so this test fails when the fine stage is off, not when it ignores the real
    images."""
    args = ["--config", CFG, f"runs_root={tmp_path / 'runs'}", f"data.root={tmp_path / 'data'}", *COMMON]
    synth_only = train.main(args + ["method=synthetic_only"])
    chance = _chance_dice(synth_only)
    assert chance < 0.3
    assert synth_only.summary["dice"] > 0.5, synth_only.summary
    assert synth_only.summary["cldice"] > 0.5
    full = train.main(args + ["method=yolocurvseg", "experiment=yolo"])
    pce = train.main(args + ["method=pce_skeleton", "experiment=pce"])
    dice, coarse = full.summary["dice"], full.stage_summaries["coarse"]["dice"]
    assert dice >= coarse + 0.01, (dice, coarse)
    assert dice >= pce.summary["dice"] + 0.05, (dice, pce.summary)
    assert dice >= synth_only.summary["dice"], (dice, synth_only.summary)
