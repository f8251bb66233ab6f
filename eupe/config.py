"""Typed configuration: dataclasses are the schema, YAML files hold values.

Loading follows the dinov3 convention: a YAML file is merged *strictly* over the
dataclass defaults (an unknown key is an error naming the key and the valid ones),
then ``key=value`` overrides are applied with dotted paths (``model.depth=2``), and the
resolved config is written next to every output so a run can be reproduced.

OmegaConf's structured configs do the merging and type checking; this module only
puts a small, documented face on them and turns their errors into ``ConfigError``.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Iterable, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from eupe.fileio import write_text_atomic

T = TypeVar("T")

RESOLVED_CONFIG_NAME = "config.yaml"


class ConfigError(ValueError):
    """A config file or override does not fit the schema."""


def _check_keys(schema: type, values: Any, where: str) -> None:
    """Raise ConfigError for unknown keys, naming them and the valid ones (recursively)."""
    if not isinstance(values, dict) or not dataclasses.is_dataclass(schema):
        return
    valid = {f.name: f for f in dataclasses.fields(schema)}
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {unknown} in {where or schema.__name__}; valid keys: {sorted(valid)}"
        )
    hints = typing.get_type_hints(schema)
    for key, value in values.items():
        child = hints.get(key)
        if dataclasses.is_dataclass(child):
            _check_keys(child, value, f"{where}.{key}" if where else key)


def build(schema: type[T], values: dict | None = None, overrides: Iterable[str] = ()) -> T:
    """Build a ``schema`` instance from defaults, ``values`` (strict) and ``key=value`` overrides."""
    values = values or {}
    _check_keys(schema, values, "")
    override_list = list(overrides)
    for item in override_list:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), values)
        for item in override_list:  # dotted keys; list items by index (teachers.0.weights=...)
            key, _, text = item.partition("=")
            OmegaConf.update(merged, key.strip(), _parse_value(text), merge=True)
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        raise ConfigError(_clean_message(err)) from None


_YAML11_WORDS = {"yes", "no", "on", "off", "y", "n"}  # YAML 1.1 booleans: keep them as words


def _parse_value(text: str) -> Any:
    """A YAML scalar or list (``1e-3``, ``[64, 96]``, ``null``, ``true``), else the text itself."""
    if text.strip().lower() in _YAML11_WORDS:
        return text.strip()
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _clean_message(err: OmegaConfBaseException) -> str:
    """OmegaConf messages carry a multi-line trace of keys; keep the informative part."""
    lines = [" ".join(line.split()) for line in str(err).splitlines() if line.strip()]
    return "; ".join(lines[:3])


def read_yaml(path: str | Path) -> dict:
    """A YAML file's top-level mapping; a missing, unreadable or malformed file is a ConfigError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        loaded = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} is not valid YAML: {' '.join(str(err).split())}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping at top level")
    return loaded or {}


def load_with_values(schema: type[T], path: str | Path | None = None,
                     overrides: Iterable[str] = ()) -> tuple[T, dict]:
    """The config and the file's own values. An error names the file, or the override, at fault."""
    values = read_yaml(path) if path is not None else {}
    try:
        build(schema, values)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    overrides = list(overrides)
    for i, item in enumerate(overrides):
        try:
            build(schema, values, overrides[: i + 1])
        except ConfigError as err:
            raise ConfigError(f"override {item!r}: {err}") from None
    return build(schema, values, overrides), values


def load(schema: type[T], path: str | Path | None = None, overrides: Iterable[str] = ()) -> T:
    """Load a YAML file (optional) strictly over the schema's defaults, then apply overrides."""
    return load_with_values(schema, path, overrides)[0]


def to_dict(config: Any) -> dict:
    """Plain-Python dict of a config dataclass (tuples become lists, as in YAML)."""
    return OmegaConf.to_container(OmegaConf.structured(config), resolve=True)  # type: ignore[return-value]


def dump(config: Any) -> str:
    """YAML text of a config dataclass."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def save_resolved(config: Any, out_dir: str | Path, name: str = RESOLVED_CONFIG_NAME) -> Path:
    """Write the resolved config next to an output; returns the file written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(out_dir / name, dump(config))
