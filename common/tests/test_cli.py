from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from common.checkpoint import save_checkpoint
from common.cli import eval_parser, parse_eval, parse_reproduce, parse_train, reproduce_parser, train_parser
from common.config import ConfigError, all_keys, from_dict, to_dict


@dataclass
class Data:
    root: Path = Path("data/synthetic/x")
    synthetic: bool = True


@dataclass
class Train:
    lr: float = 1e-3


@dataclass
class Cfg:
    experiment: str = "demo"
    runs_root: Path = Path("runs")
    data: Data = field(default_factory=Data)
    train: Train = field(default_factory=Train)


def _project(tmp_path):
    (tmp_path / "configs").mkdir(exist_ok=True)
    (tmp_path / "configs" / "default.yaml").write_text(f"experiment: demo\nruns_root: {tmp_path / 'runs'}\n")
    return tmp_path


def test_config_is_optional_and_data_root_means_real_data(tmp_path):
    project = _project(tmp_path)
    cfg, args = parse_train(Cfg, ["--data-root", str(tmp_path / "real"), "train.lr=0.5"], train_parser("t"), project)
    assert cfg.data.root == (tmp_path / "real").resolve() and cfg.data.synthetic is False and cfg.train.lr == 0.5


def test_print_config_exits_zero_without_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        parse_train(Cfg, ["--print-config", "train.lr=0.25"], train_parser("t"), _project(tmp_path))
    assert info.value.code == 0 and "lr: 0.25" in capsys.readouterr().out


def test_eval_rebuilds_the_config_from_the_checkpoint(tmp_path):
    project = _project(tmp_path)
    trained = Cfg(train=Train(lr=0.123), runs_root=tmp_path / "runs")
    ckpt = tmp_path / "runs" / "x" / "demo" / "20260101-000000" / "checkpoints" / "best.pt"
    save_checkpoint(ckpt, model=torch.nn.Linear(1, 1), config=to_dict(trained), epoch=1, step=1)
    got = parse_eval(Cfg, ["--checkpoint", str(ckpt), "data.synthetic=false"], eval_parser("e"), "x", project)
    assert got.checkpoint == ckpt and got.config.train.lr == 0.123 and got.config.data.synthetic is False
    auto = parse_eval(Cfg, [], eval_parser("e"), "x", project)
    assert auto.checkpoint == ckpt and auto.config.train.lr == 0.123


def test_eval_auto_without_a_run_is_a_clean_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        parse_eval(Cfg, [], eval_parser("e"), "x", _project(tmp_path))
    assert info.value.code == 2 and "train first" in capsys.readouterr().err


def test_reproduce_only_rows_are_checked(tmp_path, capsys):
    _, args = parse_reproduce(Cfg, ["--only", "a, b"], reproduce_parser("r"), _project(tmp_path), rows=("a", "b"))
    assert args.only == ["a", "b"]
    with pytest.raises(SystemExit):
        parse_reproduce(Cfg, ["--only", "zz"], reproduce_parser("r"), _project(tmp_path), rows=("a", "b"))
    assert "unknown row(s) ['zz']" in capsys.readouterr().err


def test_a_typo_in_a_missing_section_suggests_the_key_from_the_whole_config():
    assert "train.lr" in all_keys(Cfg)
    with pytest.raises(ConfigError, match=r"unknown config key `optim.lrr`; did you mean `train.lr`"):
        from_dict(Cfg, {"optim": {"lrr": 1.0}})
    with pytest.raises(ConfigError, match=r"`data.synthtic`; did you mean `data.synthetic`"):
        from_dict(Cfg, {"data": {"synthtic": True}})


def test_bare_off_is_the_literal_choice_not_a_boolean():
    from dataclasses import dataclass

    from common.runtime import RuntimeConfig

    @dataclass
    class Wrap:
        runtime: RuntimeConfig

    assert from_dict(Wrap, {"runtime": {"amp": False}}).runtime.amp == "off"
    with pytest.raises(ConfigError, match="not one of"):
        from_dict(Wrap, {"runtime": {"amp": True}})


def test_overrides_may_follow_options(tmp_path):
    cfg, _ = parse_train(Cfg, ["train.lr=0.5", "--data-root", str(tmp_path), "train.lr=0.25"], train_parser("t"),
                         _project(tmp_path))
    assert cfg.train.lr == 0.25 and cfg.data.synthetic is False
