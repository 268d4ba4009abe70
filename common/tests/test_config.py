from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml

from common.config import ConfigError, build_arg_parser, dump_config, load_config, parse_cli, to_dict


@dataclass
class Optim:
    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class Data:
    root: Path
    image_size: int = 512
    classes: list[str] = field(default_factory=lambda: ["a", "b"])
    split: Literal["official", "random"] = "official"
    mean: list[float] | None = None


@dataclass
class Cfg:
    experiment: str
    data: Data
    optim: Optim = field(default_factory=Optim)
    amp: bool = False


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_nested_load_coercion_and_overrides(tmp_path):
    f = write(tmp_path / "c.yaml", {"experiment": "x", "data": {"root": "data/x", "image_size": 256.0},
                                    "optim": {"lr": "1e-4", "betas": [0.8, 0.9]}})
    cfg = load_config(Cfg, f, ["optim.weight_decay=0.05", "data.mean=[0.5, 0.4, 0.3]", "amp=true"])
    assert cfg.data.root == Path("data/x") and cfg.data.image_size == 256
    assert cfg.optim.lr == pytest.approx(1e-4) and isinstance(cfg.optim.lr, float)
    assert cfg.optim.betas == (0.8, 0.9)
    assert cfg.optim.weight_decay == 0.05 and cfg.amp is True
    assert cfg.data.mean == [0.5, 0.4, 0.3]


def test_unknown_key_names_key_and_closest(tmp_path):
    f = write(tmp_path / "c.yaml", {"experiment": "x", "data": {"root": "r"}})
    with pytest.raises(ConfigError, match=r"`optim\.lrr`; did you mean `optim\.lr`\?"):
        load_config(Cfg, f, ["optim.lrr=1e-4"])
    with pytest.raises(ConfigError, match=r"`data\.imagesize`; did you mean `data\.image_size`\?"):
        load_config(Cfg, f, ["data.imagesize=3"])


def test_wrong_type_and_missing_value_and_literal(tmp_path):
    f = write(tmp_path / "c.yaml", {"experiment": "x", "data": {"root": "r"}})
    with pytest.raises(ConfigError, match=r"`data\.image_size` must be an integer"):
        load_config(Cfg, f, ["data.image_size=big"])
    with pytest.raises(ConfigError, match=r"`amp` must be true or false"):
        load_config(Cfg, f, ["amp=3"])
    with pytest.raises(ConfigError, match=r"`data\.split`.*not one of"):
        load_config(Cfg, f, ["data.split=mine"])
    g = write(tmp_path / "g.yaml", {"experiment": "x", "data": {}})
    with pytest.raises(ConfigError, match=r"missing required config value `data\.root`"):
        load_config(Cfg, g)


def test_base_inheritance_merges_recursively(tmp_path):
    write(tmp_path / "base.yaml", {"experiment": "base", "data": {"root": "r", "image_size": 128},
                                   "optim": {"lr": 0.1, "weight_decay": 0.2}})
    (tmp_path / "sub").mkdir()
    child = write(tmp_path / "sub" / "child.yaml", {"base": "../base.yaml", "experiment": "child",
                                                    "optim": {"lr": 0.01}})
    cfg = load_config(Cfg, child, ["data.image_size=64"])
    assert cfg.experiment == "child" and cfg.optim.lr == 0.01 and cfg.optim.weight_decay == 0.2
    assert cfg.data.image_size == 64 and cfg.data.root == Path("r")


def test_circular_base_is_an_error(tmp_path):
    write(tmp_path / "a.yaml", {"base": "b.yaml"})
    write(tmp_path / "b.yaml", {"base": "a.yaml"})
    with pytest.raises(ConfigError, match="circular"):
        load_config(Cfg, tmp_path / "a.yaml")


def test_dump_round_trip(tmp_path):
    f = write(tmp_path / "c.yaml", {"experiment": "x", "data": {"root": "r"}})
    cfg = load_config(Cfg, f, ["optim.lr=2e-4"])
    out = dump_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(Cfg, out) == cfg
    assert to_dict(cfg)["data"]["root"] == "r"


def test_cli_reports_config_errors_as_usage_errors(tmp_path, capsys):
    f = write(tmp_path / "c.yaml", {"experiment": "x", "data": {"root": "r"}})
    cfg, args = parse_cli(Cfg, ["--config", str(f), "optim.lr=0.5"], build_arg_parser("t"))
    assert cfg.optim.lr == 0.5 and args.resume is None
    with pytest.raises(SystemExit) as exc:
        parse_cli(Cfg, ["--config", str(f), "optim.lx=0.5"], build_arg_parser("t"))
    assert exc.value.code == 2
    assert "optim.lx" in capsys.readouterr().err


def test_config_path_resolves_against_search_dirs(tmp_path, monkeypatch):
    (tmp_path / "configs").mkdir()
    write(tmp_path / "configs" / "d.yaml", {"experiment": "x", "data": {"root": "r"}})
    monkeypatch.chdir(tmp_path.parent)
    assert load_config(Cfg, "configs/d.yaml", search_dirs=[tmp_path]).experiment == "x"
    with pytest.raises(ConfigError, match="not found"):
        load_config(Cfg, "configs/nope.yaml", search_dirs=[tmp_path])
