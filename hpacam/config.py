"""Typed configuration shared by every script: defaults < YAML file < `key.sub=value` overrides.

A config is a tree of dataclasses. Reading is strict on purpose: an unknown key or a value of the
wrong type is an error that names the key and the source (file or command line), because a typo
in a long training run's config should fail in the first second, not silently use a default.

A YAML file may start with `_base_: other.yaml` (a path relative to the file) so that recipes are
short diffs over a shared base, as in detectron2.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml

from hpacam.fileio import atomic_write_text

T = TypeVar("T")
BASE_KEY = "_base_"
MAX_DEPTH = 32  # sections and lists nest this deep at most; real configs use four or five levels


class ConfigError(ValueError):
    """A config file or override names an unknown key or gives a value of the wrong type."""


# ----------------------------------------------------------------------------- range checks

def check_unit_interval(**values: float) -> None:
    """Each value (a share, weight or floor) in [0, 1]; NaN fails too.

    Called from dataclass configs' `__post_init__`, so a bad value fails where the config is read
    (the error names the section and the key) rather than as NaN confidences at the end of a run.
    """
    for name, value in values.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")


def check_at_least(minimum: float, **values: float) -> None:
    """Each value finite and >= minimum: batch and chunk sizes, limits, weights."""
    for name, value in values.items():
        if not (math.isfinite(value) and value >= minimum):
            raise ValueError(f"{name} must be at least {minimum}, got {value}")


# ----------------------------------------------------------------------------- type checking


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`, converting only where it is lossless and expected."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a section (mapping) for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, tp, where)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or tp is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        key_tp, val_tp = args if args else (Any, Any)
        return {_coerce(k, key_tp, where): _coerce(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    return _coerce_scalar(value, tp, where)


def _coerce_union(value: Any, tp: Any, where: str) -> Any:
    """The first option of `Union[...]` that takes `value`; `Optional[X]` reports X's own reason."""
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    options = [a for a in args if a is not type(None)]
    if len(options) == 1:  # Optional[X]: X's own reason says more than "matches none"
        if options[0] is str and isinstance(value, (bool, int, float)):
            raise ConfigError(f"{where}: expected text or null, got the {_scalar_kind(value)} {value!r}; "
                              f"quote it to mean the text (key='\"{_yaml_text(value)}\"' on the command line)")
        return _coerce(value, options[0], where)
    for option in options:
        try:
            return _coerce(value, option, where)
        except ConfigError:
            continue
    raise ConfigError(f"{where}: {value!r} matches none of {_type_name(tp)}")


def _scalar_kind(value: Any) -> str:
    return "boolean" if isinstance(value, bool) else "number"


def _yaml_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _coerce_scalar(value: Any, tp: Any, where: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `1e-3` as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Path:
        if isinstance(value, str) and not value.strip():  # Path("") would silently be the current folder
            raise ConfigError(f"{where}: empty path; give a path (or null where the setting may be unset)")
        if isinstance(value, (str, Path)):
            return Path(value)
    else:
        raise ConfigError(f"{where}: unsupported annotation {_type_name(tp)}")
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")


# ----------------------------------------------------------------------------- dict <-> dataclass


def from_dict(cls: type[T], data: dict, where: str = "config") -> T:
    """Build dataclass `cls` from a (partial) mapping; missing keys keep their defaults."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys are {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        default = _default_of(cls, name)
        if dataclasses.is_dataclass(hints[name]) and isinstance(value, dict) and default is not None:
            kwargs[name] = from_dict(hints[name], {**to_dict(default), **value}, key)
        else:
            kwargs[name] = _coerce(value, hints[name], key)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _default_of(cls: type, name: str) -> Any:
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def to_dict(cfg: Any) -> Any:
    """Dataclass tree -> plain YAML-safe data (tuples become lists, paths strings)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


# ----------------------------------------------------------------------------- YAML and overrides


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without aliases: a few hundred bytes of nested `*alias` references expand to gigabytes.

    Configs are short hand-written trees; no recipe needs an alias, so refusing them is the
    simple bound on what a config file can make the reader build.
    """

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in configs", mark)
        return super().compose_node(parent, index)


def load_yaml_text(text: str, where: str) -> Any:
    """Parse config YAML (no aliases, bounded nesting); ConfigError names `where`."""
    try:
        data = yaml.load(text, Loader=_NoAliasLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML ({_yaml_problem(exc)})") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested more than {MAX_DEPTH} levels deep") from None
    if _depth(data) > MAX_DEPTH:
        raise ConfigError(f"{where}: nested more than {MAX_DEPTH} levels deep")
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's several-line message as one line: the problem and where it is."""
    mark = getattr(exc, "problem_mark", None)
    problem = " ".join(filter(None, [getattr(exc, "context", None), getattr(exc, "problem", None)])) or str(exc)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else " ".join(problem.split())


def _depth(data: Any) -> int:
    if isinstance(data, dict):
        return 1 + max((_depth(v) for v in data.values()), default=0)
    if isinstance(data, list):
        return 1 + max((_depth(v) for v in data), default=0)
    return 0


def read_yaml(path: str | Path, _seen: tuple = ()) -> dict:
    """Read a YAML config, resolving `_base_` chains (relative to each file)."""
    path = Path(path)
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: `_base_` cycle through {[str(p) for p in _seen]}")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    data = load_yaml_text(text, str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{path}: {BASE_KEY} must be the path of another config file, got {base!r}")
    base_data = read_yaml(path.parent / base, _seen + (path.resolve(),))
    return merge(base_data, data)


def merge(base: dict, update: dict) -> dict:
    """Recursive dict merge: sections merge key by key, everything else is replaced."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> dict:
    """`a.b.c=value` -> {'a': {'b': {'c': value}}}, the value read as YAML (so `[1, 2]`, `true`, `null`)."""
    if "=" not in text:
        raise ConfigError(f"command line: override {text!r} is not of the form key.sub=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"command line: override {text!r} has an empty key")
    try:
        value = yaml.load(raw, Loader=_NoAliasLoader) if raw.strip() else ""
    except yaml.composer.ComposerError as exc:  # an alias: refused, not taken as text
        raise ConfigError(f"command line: override {text!r}: {exc.problem}") from None
    except (yaml.YAMLError, RecursionError):
        value = raw
    if _depth(value) > MAX_DEPTH:
        raise ConfigError(f"command line: override {text!r} is nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, (int, float, bool)) or value is None:
        value = _RawScalar(raw, value)
    nested: dict = {}
    node = nested
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


class _RawScalar:
    """An override value that YAML read as a scalar; kept with its text for `str` fields (e.g. `name=123`)."""

    def __init__(self, raw: str, value: Any):
        self.raw, self.value = raw, value


def _resolve_raw(data: Any, cls: Any) -> Any:
    """Replace `_RawScalar` by the YAML value, or by the raw text where the field is a plain `str`."""
    if not isinstance(data, dict) or not dataclasses.is_dataclass(cls):
        return data
    hints = typing.get_type_hints(cls)
    out = {}
    for key, value in data.items():
        tp = hints.get(key)
        if isinstance(value, _RawScalar):
            out[key] = value.raw if tp in (str, Path) else value.value
        else:
            out[key] = _resolve_raw(value, tp)
    return out


def load_config(cls: type[T], yaml_path: str | Path | None = None, overrides: Sequence[str] = (),
                check: bool = True) -> T:
    """Defaults of `cls` < the YAML file < the overrides, checked strictly against the types.

    With `check`, the config's own cross-field checks (`check_config_fields`) run on the result.
    """
    data: dict = {}
    where = "defaults"
    if yaml_path is not None:
        data = read_yaml(yaml_path)
        where = str(yaml_path)
        from_dict(cls, data, where)  # errors here name the file, not the command line
    for text in overrides:
        override = _resolve_raw(parse_override(text), cls)
        data = merge(data, override)
        try:
            from_dict(cls, data, where)
        except ConfigError as exc:
            raise ConfigError(f"command line override {text!r}: {exc}") from None
    cfg = from_dict(cls, data, where)
    if check:
        check_config_fields(cfg, where if not overrides else f"{where} + command line")
    return cfg


class ConfigCheckError(ConfigError):
    """Every key is known and typed right, but the values do not go together (or are out of range)."""


def check_config_fields(cfg: Any, where: str | None = None) -> None:
    """Run the config's `check()` method, when its class has one: the checks that span several keys.

    They run on the finished config, not in `__post_init__`: overrides apply one at a time, and a
    valid result may pass through an invalid mix (`loss.num_pieces=9 data.image_size=480`). Run
    where the config is read, they fail before a script imports torch or TensorFlow.
    """
    check = getattr(cfg, "check", None)
    if not callable(check):
        return
    try:
        check()
    except ValueError as exc:
        raise ConfigCheckError(f"{where}: {exc}" if where else str(exc)) from None


def dump_config(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config (atomically) so a run can be reproduced from its folder alone."""
    return atomic_write_text(path, dump_config(cfg))


def parse_args(cls: type[T], argv: Sequence[str] | None = None, description: str = "",
               parser: argparse.ArgumentParser | None = None, check: bool = True) -> tuple[T, argparse.Namespace]:
    """Command line of every script: `[--config FILE] [named flags] [key.sub=value ...]`.

    Returns the resolved config and the parsed named flags (scripts add their own to `parser`).
    `--help` lists every key of `cls` with its default. A script that reports bad values itself
    (status 1, before its heavy imports) passes `check=False` and calls `check_config_fields`.
    """
    parser = parser or argparse.ArgumentParser(description=description)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the key list's lines
    parser.epilog = keys_help(cls)
    parser.add_argument("--config", type=Path, help="YAML file in configs/ (over the defaults)")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value",
                        help="overrides applied last; the keys and their defaults are listed below")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(cls, args.config, args.overrides, check=check)
    except ConfigError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    return cfg, args


# ----------------------------------------------------------------------------- the keys, for --help


def config_keys(cls: type) -> list[tuple[str, str, str]]:
    """(key, type, default) of every setting of dataclass `cls`, sections joined with dots.

    The defaults are those of `cls()` (a section's factory may differ from its class's defaults);
    a list of sections adds its items' keys as `key[i].sub`. Generated, so `--help` cannot name a
    key that does not exist.
    """
    return list(_leaf_keys(cls(), cls, ""))


def _leaf_keys(value: Any, tp: Any, key: str):
    if dataclasses.is_dataclass(value):
        hints = typing.get_type_hints(type(value))
        for f in dataclasses.fields(value):
            if f.init:
                yield from _leaf_keys(getattr(value, f.name), hints[f.name], f"{key}.{f.name}" if key else f.name)
        return
    yield key, _type_text(tp), _default_text(to_dict(value))
    args = typing.get_args(tp)
    if typing.get_origin(tp) is list and args and dataclasses.is_dataclass(args[0]):
        yield from _leaf_keys(args[0](), args[0], f"{key}[i]")


def _type_text(tp: Any) -> str:
    text = _type_name(tp) if not typing.get_args(tp) else str(tp)
    return re.sub(r"\b(?:\w+\.)+(\w+)", r"\1", text).replace("NoneType", "None")  # Optional[Path], not typing.*


def _default_text(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("...").strip()


def keys_help(cls: type) -> str:
    """The `--help` epilog: every key with its type and default, one a line."""
    rows = config_keys(cls)
    width = max(len(key) for key, _, _ in rows)
    lines = [f"  {key:<{width}} = {default}  ({tp})" for key, tp, default in rows]
    return ("config keys (key = default (type)); set them in --config YAML or as key.sub=value\n"
            "(key[i].sub: the keys of each item of the list `key`, which is set as a whole):\n" + "\n".join(lines))
