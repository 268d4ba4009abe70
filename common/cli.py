"""The command-line shape every project shares: ``train.py``, ``eval.py`` and ``reproduce.py``.

::

    python train.py     [--config FILE] [--data-root DIR] [--resume auto|PATH] [--init-weights PATH] key.sub=value ...
    python eval.py      [--config FILE] [--checkpoint auto|PATH] [--data-root DIR] [--predict DIR] [--out DIR] key=value
    python reproduce.py [--config FILE] [--data-root DIR] [--all] [--only ROW,ROW] [--out DIR] key=value ...

Every entry point also takes ``--print-config`` (print the resolved config and exit: nothing is read or written).
``--config`` is optional: training and reproduction default to the project's ``configs/default.yaml``; evaluation
rebuilds its config from the checkpoint (overrides still apply). ``--data-root DIR`` always means real data: it
sets ``data.root=DIR`` and ``data.synthetic=false``, so a synthetic generator can never write into it.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from common.config import ConfigError, load_config, load_from_checkpoint, print_config_and_exit
from common.rundir import newest_checkpoint, resolve_path

T = TypeVar("T")

__all__ = ["DEFAULT_CONFIG", "data_root_overrides", "train_parser", "eval_parser", "reproduce_parser",
           "parse_train", "parse_eval", "parse_reproduce", "EvalArgs"]

DEFAULT_CONFIG = "configs/default.yaml"


def data_root_overrides(data_root: str | Path | None) -> list[str]:
    """``--data-root DIR`` as config overrides: real data, never synthetic."""
    if data_root is None:
        return []
    return [f"data.root={Path(data_root).expanduser().resolve()}", "data.synthetic=false"]


def _base_parser(description: str, config_help: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=None, help=config_help)
    parser.add_argument("--data-root", default=None,
                        help="folder holding the real dataset in its published layout (sets data.synthetic=false)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="dotted config overrides")
    return parser


def train_parser(description: str) -> argparse.ArgumentParser:
    parser = _base_parser(description, f"YAML config (default {DEFAULT_CONFIG}; relative to cwd or the project)")
    parser.add_argument("--resume", default=None,
                        help="`auto` (newest last.pt of this experiment) or a checkpoint path: full training state")
    parser.add_argument("--init-weights", default=None, help="checkpoint whose model weights initialise the run")
    return parser


def eval_parser(description: str) -> argparse.ArgumentParser:
    parser = _base_parser(description, "YAML config (default: the config stored in the checkpoint)")
    parser.add_argument("--checkpoint", default="auto",
                        help="`auto` (best.pt, else last.pt, of the newest run of the experiment) or a path")
    parser.add_argument("--predict", default=None, metavar="DIR",
                        help="predict on the (unlabelled) images under DIR instead of evaluating a split")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="where tables, predictions and figures go (default: <run>/eval or <run>/predict)")
    return parser


def reproduce_parser(description: str) -> argparse.ArgumentParser:
    parser = _base_parser(description, f"YAML config of the main method (default {DEFAULT_CONFIG})")
    parser.add_argument("--all", action="store_true", help="every baseline, ablation and seed the project offers")
    parser.add_argument("--only", default=None, metavar="ROW,ROW", help="run only these comparison rows")
    parser.add_argument("--out", default=None, metavar="DIR", help="runs root of the sub-runs (default runs_root)")
    return parser


def _load(cls: type[T], parser: argparse.ArgumentParser, config: str | Path, overrides: Sequence[str],
          project_dir: str | Path) -> T:
    try:
        return load_config(cls, config, overrides, search_dirs=[project_dir])
    except ConfigError as exc:
        parser.error(str(exc))
        raise  # parser.error exits; this line keeps type checkers honest


def _overrides(args: argparse.Namespace) -> list[str]:
    return [*args.overrides, *data_root_overrides(args.data_root)]


def parse_train(cls: type[T], argv: Sequence[str] | None, parser: argparse.ArgumentParser,
                project_dir: str | Path) -> tuple[T, argparse.Namespace]:
    """Parse a training command line into a validated config (exit 2 with the key named on a config error)."""
    args = parser.parse_intermixed_args(argv)
    cfg = _load(cls, parser, args.config or DEFAULT_CONFIG, _overrides(args), project_dir)
    if args.print_config:
        print_config_and_exit(cfg)
    return cfg, args


def parse_reproduce(cls: type[T], argv: Sequence[str] | None, parser: argparse.ArgumentParser,
                    project_dir: str | Path, rows: Sequence[str] = ()) -> tuple[T, argparse.Namespace]:
    """Like :func:`parse_train`; ``args.only`` becomes a list, checked against ``rows`` when given."""
    cfg, args = parse_train(cls, argv, parser, project_dir)
    if args.only is not None:
        args.only = [r.strip() for r in args.only.split(",") if r.strip()]
        unknown = [r for r in args.only if rows and r not in rows]
        if unknown:
            parser.error(f"--only: unknown row(s) {unknown}; rows of this project: {', '.join(rows)}")
    return cfg, args


@dataclass(frozen=True)
class EvalArgs:
    """What ``eval.py`` was asked to do: the config, the checkpoint it came from and the CLI namespace."""

    config: Any
    checkpoint: Path | None
    args: argparse.Namespace


def parse_eval(cls: type[T], argv: Sequence[str] | None, parser: argparse.ArgumentParser, project: str,
               project_dir: str | Path, *, require_checkpoint: bool = True) -> EvalArgs:
    """Resolve ``--checkpoint`` and the config of an evaluation.

    - ``--checkpoint PATH``: the config stored in it (``--config`` replaces it when given), plus overrides;
    - ``--checkpoint auto``: the experiment named by ``--config`` (default ``configs/default.yaml``) and overrides,
      then its newest run's ``best.pt`` (else ``last.pt``), whose stored config is used unless ``--config`` was given.
    A missing checkpoint is a clean CLI error naming where it looked (unless ``require_checkpoint`` is false).
    """
    args = parser.parse_intermixed_args(argv)
    overrides = _overrides(args)
    checkpoint: Path | None
    require_checkpoint = require_checkpoint and not args.print_config
    if args.checkpoint != "auto":
        checkpoint = Path(args.checkpoint).expanduser()
        if not checkpoint.is_file():
            if require_checkpoint:
                parser.error(f"--checkpoint {checkpoint}: file not found")
            checkpoint = None
    else:
        named = _load(cls, parser, args.config or DEFAULT_CONFIG, overrides, project_dir)
        checkpoint = newest_checkpoint(project, named.experiment, named.runs_root)
        if checkpoint is None and require_checkpoint:
            where = resolve_path(named.runs_root) / project / named.experiment
            parser.error(f"--checkpoint auto: no checkpoints/best.pt or last.pt under {where}; train first "
                         f"(python train.py --config ...) or pass --checkpoint PATH")
    if args.config is not None or checkpoint is None:
        cfg = _load(cls, parser, args.config or DEFAULT_CONFIG, overrides, project_dir)
    else:
        try:
            cfg = load_from_checkpoint(cls, checkpoint, overrides)
        except ConfigError as exc:
            parser.error(str(exc))
    if args.print_config:
        print_config_and_exit(cfg)
    return EvalArgs(cfg, checkpoint, args)
