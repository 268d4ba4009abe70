"""Typed experiment configuration: YAML files -> nested dataclasses declared by each project.

A project declares its configuration as plain dataclasses (fields with defaults are optional, fields without
defaults are required)::

    @dataclass
    class OptimConfig:
        lr: float = 1e-3
        weight_decay: float = 0.1

    @dataclass
    class Config:
        experiment: str
        optim: OptimConfig = field(default_factory=OptimConfig)

and loads it with ``load_config(Config, "configs/isic2018.yaml", ["optim.lr=1e-4"])``.

Rules (the repository's CONVENTIONS):
- ``base:`` at the top of a YAML file names one or more YAML files (relative to that file) that are merged first,
  the later file winning key by key (mappings merge recursively, everything else is replaced).
- Dotted overrides ``a.b.c=value`` are applied last; the value is parsed as YAML (``1e-4``, ``[1, 2]``, ``null``).
- Every key is validated before any work starts: an unknown key, a value of the wrong type or a missing required
  value raises :class:`ConfigError` naming the dotted key and, for unknown keys, the closest valid key.
- Values are coerced where that is lossless and unsurprising: int -> float, str -> Path, list -> tuple,
  ``"1e-4"`` -> float (YAML 1.1 reads ``1e-4`` as a string), and a bare ``off`` / ``on`` (which YAML 1.1 reads as
  a boolean) -> ``"off"`` / ``"on"`` where the key's ``Literal`` has that choice (``runtime.amp=off``).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")

__all__ = [
    "ConfigError",
    "load_config",
    "load_yaml_with_bases",
    "apply_overrides",
    "from_dict",
    "to_dict",
    "dump_config",
    "build_arg_parser",
    "parse_cli",
    "resolve_config_path",
    "all_keys",
    "load_from_checkpoint",
    "print_config_and_exit",
]


class ConfigError(ValueError):
    """A configuration problem detected before any work started. The message names the key and the fix."""


# --------------------------------------------------------------------------------------------- YAML + bases
def _deep_merge(base: dict, update: Mapping) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def load_yaml_with_bases(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """Read a YAML mapping, resolving ``base:`` (a path or list of paths relative to the file) recursively."""
    path = Path(path).resolve()
    if path in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, path))
        raise ConfigError(f"circular `base:` chain in config files: {chain}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file {path} must hold a mapping at the top level, found {type(data).__name__}")
    bases = data.pop("base", None)
    if bases is None:
        return dict(data)
    if isinstance(bases, str):
        bases = [bases]
    merged: dict = {}
    for base in bases:
        merged = _deep_merge(merged, load_yaml_with_bases(path.parent / base, (*_seen, path)))
    return _deep_merge(merged, data)


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """Apply ``a.b=value`` overrides to a nested dict (values parsed as YAML). Returns a new dict."""
    out = dict(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.subkey=value (e.g. optim.lr=1e-4)")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} has an empty key component")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            child = dict(child) if isinstance(child, Mapping) else {}
            node[part] = child
            node = child
        node[parts[-1]] = value
    return out


# --------------------------------------------------------------------------------------------- dict -> dataclass
def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _closest(key: str, candidates: Sequence[str], prefix: str = "") -> str:
    match = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    if match:
        return f"; did you mean `{prefix}{match[0]}`?"
    return f"; valid keys under `{prefix.rstrip('.') or '(top level)'}`: {', '.join(sorted(candidates))}"


def _coerce_union(value: Any, tp: Any, key: str) -> Any:
    args = get_args(tp)
    if value is None and type(None) in args:
        return None
    for arg in (a for a in args if a is not type(None)):
        try:
            return _coerce(value, arg, key)
        except ConfigError:
            continue
    raise ConfigError(f"`{key}` = {value!r} does not match {_type_name(tp)}")


def _coerce_container(value: Any, tp: Any, key: str) -> Any:
    """Lists, tuples (fixed length or ``tuple[T, ...]``) and dicts, item by item."""
    origin = get_origin(tp) or tp
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"`{key}` must be a mapping, got {type(value).__name__}")
        k_tp, v_tp = get_args(tp) or (Any, Any)
        return {_coerce(k, k_tp, key): _coerce(v, v_tp, f"{key}.{k}") for k, v in value.items()}
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"`{key}` must be a list, got {type(value).__name__} {value!r}")
    args = get_args(tp)
    if origin is not tuple:
        (item_tp,) = args or (Any,)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
    if args and len(args) != len(value):
        raise ConfigError(f"`{key}` must have {len(args)} items, got {len(value)}")
    return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args or [Any] * len(value))))


def _coerce_scalar(value: Any, tp: Any, key: str) -> Any:
    """bool, int, float, str and Path, with the lossless coercions of the module docstring."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is bool and isinstance(value, bool):
        return value
    if tp is int:
        if is_number and float(value).is_integer():
            return int(value)
        raise ConfigError(f"`{key}` must be an integer, got {value!r}")
    if tp is float:
        if is_number:
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"`{key}` must be a number, got {value!r}")
    if tp is str and (isinstance(value, str) or is_number):
        return str(value)
    if tp is Path and isinstance(value, (str, Path)):
        return Path(value)
    names = {bool: "true or false", str: "a string", Path: "a path"}
    if tp in names:
        raise ConfigError(f"`{key}` must be {names[tp]}, got {value!r}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"`{key}` = {value!r} has unsupported type for annotation {_type_name(tp)}")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Coerce ``value`` to the annotated type ``tp`` or raise ConfigError naming ``key``."""
    if tp is Any:
        return value
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return _coerce_union(value, tp, key)
    if origin is Literal:
        if isinstance(value, bool) and ("off" if not value else "on") in get_args(tp):
            return "off" if not value else "on"  # YAML 1.1 reads a bare off / on as a boolean
        if value in get_args(tp) and not (isinstance(value, bool) and bool not in map(type, get_args(tp))):
            return value
        raise ConfigError(f"`{key}` = {value!r} is not one of {list(get_args(tp))}")
    if value is None:
        raise ConfigError(f"`{key}` is required (expected {_type_name(tp)}), got null")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"`{key}` must be a mapping of {tp.__name__} fields, got {type(value).__name__}")
        return from_dict(tp, value, prefix=f"{key}.")
    if origin in (Sequence, typing.Sequence):
        tp = list[get_args(tp)[0]] if get_args(tp) else list
    if get_origin(tp) in (list, tuple, dict) or tp in (list, tuple, dict):
        return _coerce_container(value, tp, key)
    return _coerce_scalar(value, tp, key)


def _dataclass_of(tp: Any) -> type | None:
    if dataclasses.is_dataclass(tp):
        return tp
    if get_origin(tp) in (Union, types.UnionType):
        for arg in get_args(tp):
            if dataclasses.is_dataclass(arg):
                return arg
    return None


def all_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted leaf key of a (nested) config dataclass: ``["optim.lr", "runtime.device", ...]``."""
    keys: list[str] = []
    for name, tp in get_type_hints(cls).items():
        if name not in {f.name for f in dataclasses.fields(cls) if f.init}:
            continue
        sub = _dataclass_of(tp)
        keys += all_keys(sub, f"{prefix}{name}.") if sub is not None else [f"{prefix}{name}"]
    return keys


def _leaves(key: str, value: Any) -> list[str]:
    if isinstance(value, Mapping) and value:
        return [leaf for k, v in value.items() for leaf in _leaves(f"{key}.{k}", v)]
    return [key]


def _closest_anywhere(unknown: str, root: type) -> str | None:
    """The valid dotted key most like ``unknown`` in the whole config (``optim.lrr`` -> ``train.lr``)."""
    candidates = all_keys(root)
    leaf = unknown.rsplit(".", 1)[-1]
    by_leaf = {c: c.rsplit(".", 1)[-1] for c in candidates}
    same_leaf = [c for c, name in by_leaf.items() if difflib.SequenceMatcher(None, leaf, name).ratio() >= 0.75]
    pool = same_leaf or candidates
    match = difflib.get_close_matches(unknown, pool, n=1, cutoff=0.0 if same_leaf else 0.6)
    return match[0] if match else None


_ROOT: list[type] = []  # the root config class of the from_dict call in progress (for "did you mean")


def from_dict(cls: type[T], data: Mapping, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a nested mapping, validating every key (see module docstring)."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if not prefix:
        _ROOT.append(cls)
        try:
            return _from_dict(cls, data, prefix)
        finally:
            _ROOT.pop()
    return _from_dict(cls, data, prefix)


def _from_dict(cls: type[T], data: Mapping, prefix: str) -> T:
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            unknown = _leaves(f"{prefix}{key}", data[key])[0]
            anywhere = _closest_anywhere(unknown, _ROOT[-1]) if _ROOT else None
            hint = f"; did you mean `{anywhere}`?" if anywhere else _closest(str(key), list(fields), prefix)
            raise ConfigError(f"unknown config key `{unknown}`{hint}")
    kwargs = {}
    for name, fld in fields.items():
        full = f"{prefix}{name}"
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], full)
        elif fld.default is dataclasses.MISSING and fld.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required config value `{full}` ({_type_name(hints[name])}); "
                              f"set it in the YAML file or on the command line as {full}=...")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:  # __post_init__ validation of a project
        raise ConfigError(f"invalid config `{prefix.rstrip('.') or cls.__name__}`: {exc}") from exc


def to_dict(cfg: Any) -> Any:
    """Dataclass (nested) -> plain dict of builtins (Paths become strings, tuples lists); safe for YAML/torch.save."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, Mapping):
        return {str(k): to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def dump_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML (loadable again with :func:`load_config`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path


def resolve_config_path(path: str | Path, search_dirs: Sequence[str | Path] = ()) -> Path:
    """Find a config file: as given (relative to the working directory), else relative to each search dir."""
    candidate = Path(path)
    if candidate.is_file():
        return candidate.resolve()
    for folder in search_dirs:
        alt = Path(folder) / path
        if alt.is_file():
            return alt.resolve()
    looked = [str(candidate.resolve())] + [str((Path(d) / path).resolve()) for d in search_dirs]
    raise ConfigError(f"config file {path} not found (looked in: {', '.join(looked)})")


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = (),
                search_dirs: Sequence[str | Path] = ()) -> T:
    """YAML file (with ``base:`` chain) + dotted overrides -> validated dataclass ``cls``."""
    data = load_yaml_with_bases(resolve_config_path(path, search_dirs)) if path is not None else {}
    return from_dict(cls, apply_overrides(data, overrides))


# --------------------------------------------------------------------------------------------- CLI
def build_arg_parser(description: str, *, training: bool = True) -> argparse.ArgumentParser:
    """The shared CLI shape: ``--config FILE [--resume auto|PATH] [--init-weights PATH] key=value ...``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help="YAML config (relative to cwd or to the project folder)")
    if training:
        parser.add_argument("--resume", default=None,
                            help="`auto` (newest last.pt of this experiment) or a checkpoint path: full state")
        parser.add_argument("--init-weights", default=None, help="checkpoint whose model weights initialise the run")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="dotted config overrides")
    return parser


def parse_cli(cls: type[T], argv: Sequence[str] | None, parser: argparse.ArgumentParser,
              search_dirs: Sequence[str | Path] = ()) -> tuple[T, argparse.Namespace]:
    """Parse argv with ``parser`` and load the config it names. ConfigError becomes a clean CLI error (exit 2)."""
    args = parser.parse_args(argv)
    try:
        cfg = load_config(cls, args.config, args.overrides, search_dirs=search_dirs)
    except ConfigError as exc:
        parser.error(str(exc))
    return cfg, args


def load_from_checkpoint(cls: type[T], checkpoint: str | Path, overrides: Sequence[str] = ()) -> T:
    """The config a checkpoint was trained with (its stored plain dict), plus dotted overrides, validated.

    ``eval.py --checkpoint PATH`` rebuilds its model from this, so evaluating never depends on a YAML file that
    may have changed since training.
    """
    from common.checkpoint import load_checkpoint

    stored = load_checkpoint(checkpoint).get("config")
    if not isinstance(stored, Mapping):
        raise ConfigError(f"checkpoint {checkpoint} holds no config dict; pass --config FILE as well")
    return from_dict(cls, apply_overrides(dict(stored), overrides))


def print_config_and_exit(cfg: Any) -> None:
    """``--print-config``: the resolved config as YAML on stdout, then exit 0 without doing any work."""
    print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
    raise SystemExit(0)
