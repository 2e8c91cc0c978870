"""Typed configuration from YAML: nested dataclasses, strict keys, `--set a.b=value` overrides.

Every hyper-parameter is an explicit dataclass field, so a typo or a value of the wrong type
is rejected with its full key path before any work starts, instead of being silently ignored
(peers' users lose points to hyper-parameters that silently differ from the reference).
"""

import dataclasses
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

# Scientific notation without a dot or an exponent sign, which YAML 1.1 leaves a string.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value or key is wrong; the message names the key path."""


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, kind: Any, path: str) -> Any:
    """Check `value` against the annotation `kind` (int, float, bool, str, X | None,
    Literal[...], nested dataclass); ints are accepted where floats are expected."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _coerce(value, option, path)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0])
    if origin is typing.Literal:
        allowed = typing.get_args(kind)
        if value not in allowed:
            raise ConfigError(f"{path}: {value!r} is not one of {list(allowed)}")
        return value
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping of settings, got {value!r}")
        return from_dict(kind, value, path)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str) and _EXPONENT_FLOAT.match(value):
        # YAML 1.1 (PyYAML) reads 1e-6 and 1e5 as strings; JSON writes small floats that way.
        return float(value)
    if kind in (int, float, str, bool) and (
        type(value) is not kind or (kind is int and isinstance(value, bool))
    ):
        raise ConfigError(f"{path}: expected {kind.__name__}, got {value!r}")
    return value


def _default_of(cls, name: str) -> Any:
    spec = next(f for f in dataclasses.fields(cls) if f.name == name)
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return spec.default


def _merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            value = _merge(merged[key], value)
        merged[key] = value
    return merged


def from_dict(cls: type[T], data: dict, path: str = "") -> T:
    """Build dataclass `cls` from `data`, rejecting unknown keys and wrong types. A partial
    section keeps the defaults of its field (finetune.optimizer keeps the fine-tuning
    recipe's values for the keys it does not set)."""
    kinds = _field_types(cls)
    values = {}
    for key, value in data.items():
        key_path = f"{path}.{key}" if path else str(key)
        if key not in kinds:
            close = difflib.get_close_matches(str(key), kinds, n=1)
            hint = f" (did you mean {path + '.' if path else ''}{close[0]}?)" if close else ""
            raise ConfigError(
                f"unknown setting {key_path}{hint}; settings here: {', '.join(sorted(kinds))}"
            )
        default = _default_of(cls, key)
        if isinstance(value, dict) and dataclasses.is_dataclass(default):
            value = _merge(dataclasses.asdict(default), value)
        values[key] = _coerce(value, kinds[key], key_path)
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        raise ConfigError(_located(str(error), path)) from error


def _located(message: str, path: str) -> str:
    """The message with the full key path: a section's check knows only its own name
    ("optimizer.base_learning_rate ..." becomes "pretrain.optimizer.base_learning_rate ...")."""
    if not path or message.startswith(path):
        return message
    leaf = path.rsplit(".", 1)[-1]
    if message.startswith(leaf + "."):
        return path + message[len(leaf) :]
    return f"{path}: {message}"


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """`section.key=value` strings onto a nested dict; values are parsed as YAML scalars
    (so 3 is an int, 0.1 a float, true a bool, null None)."""
    data = yaml.safe_load(yaml.safe_dump(data))  # deep copy of plain data
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {override!r} must look like section.key=value")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {override!r}: {part} is not a section")
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def load_config_text(cls: type[T], text: str, overrides=()) -> T:
    """Like load_config, from YAML text (pipeline parameters carry the config as text)."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"the run config is not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise ConfigError("the run config must hold a mapping of sections")
    return from_dict(cls, apply_overrides(data, list(overrides)))


def load_config(cls: type[T], path: str | Path | None = None, overrides=()) -> T:
    """Defaults of `cls`, then the YAML file at `path` (if any), then the overrides."""
    data: dict = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError as error:
            raise ConfigError(f"config file {path} does not exist") from error
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {path} is not valid YAML: {error}") from error
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections")
    return from_dict(cls, apply_overrides(data, list(overrides)))


def dump_config(config: Any) -> str:
    """The effective configuration as YAML (saved next to every output)."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)
