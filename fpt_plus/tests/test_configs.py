"""Every shipped config loads, validates and builds its networks (meta device: no memory, no weights)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from common.config import load_config
from fpt_plus.models.factory import build_model, count_learnable
from fpt_plus.models.lpm import num_tokens
from fpt_plus.settings import Config

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_loads_and_builds(path: Path) -> None:
    cfg = load_config(Config, path, ["model.pretrained=none"])
    num_classes = len(cfg.data.classes) if cfg.data.classes else 3
    with torch.device("meta"):
        for method in ("fpt_plus", "fpt"):
            cfg.model.method = method
            model = build_model(cfg.model, num_classes, preloaded=True)
            variant = getattr(cfg.model, method)
            assert len(model.side.vit.blocks) == len(variant.layers)
            assert model.side.vit.embed_dim == cfg.model.lpm.embed_dim // cfg.model.side_reduction
            assert model.side.vit.patch_embed.patch_size[0] == cfg.model.lpm.patch_size
            assert count_learnable(model) > 0
    if path.stem in ("messidor2", "ddr"):
        cfg.model.method = "fpt_plus"
        with torch.device("meta"):
            assert count_learnable(build_model(cfg.model, 5, preloaded=True)) == 900_965
        assert num_tokens(cfg.model.lpm.img_size, cfg.model.lpm.patch_size) == 1025


def test_paper_config_without_weights_says_what_to_download(tmp_path: Path) -> None:
    from common.weights import PretrainedWeightsError
    from fpt_plus.models.lpm import FrozenLPM

    cfg = load_config(Config, CONFIGS[0].parent / "messidor2.yaml")
    with pytest.raises(PretrainedWeightsError, match="vit_base_patch16_384"):
        FrozenLPM(cfg.model.lpm, cfg.model.fpt_plus.layers, pretrained=cfg.model.pretrained)
    cfg2 = load_config(Config, CONFIGS[0].parent / "messidor2.yaml",
                       [f"model.pretrained={tmp_path / 'missing.safetensors'}"])
    with pytest.raises(PretrainedWeightsError, match="file not found"):
        FrozenLPM(cfg2.model.lpm, cfg2.model.fpt_plus.layers, pretrained=cfg2.model.pretrained)


def test_root_readme_overrides_work_on_every_dataset_config() -> None:
    """``optim.lr=1e-4`` and ``model.pretrained=...`` (the root README's examples) are keys of every config."""
    for path in CONFIGS:
        cfg = load_config(Config, path, ["optim.lr=1e-4", "model.pretrained=/w/vit.safetensors", "data.root=/d"])
        assert cfg.optim.lr == 1e-4 and cfg.model.pretrained == "/w/vit.safetensors"


@pytest.mark.parametrize("override,key", [("optim.epochs=-1", "optim.epochs"), ("optim.lr=0", "optim.lr"),
                                          ("optim.batch_size=0", "optim.batch_size"),
                                          ("runtime.threads=-2", "runtime.threads"),
                                          ("data.synth.num_test=2", "data.synth.num_test"),
                                          ("model.token_ratio=1.5", "model.token_ratio")])
def test_out_of_range_values_are_refused_before_any_work(override: str, key: str) -> None:
    from common.config import ConfigError

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(Config, CONFIGS[0].parent / "ci.yaml", [override])
