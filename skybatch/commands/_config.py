"""Merge a YAML config file with CLI flags into a typed config (one-to-one field mapping)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ConfigError", "load_config", "build_config"]


class ConfigError(ValueError):
    """A config file or flag that does not fit the job's settings; names the key."""


def load_config(path: str | None) -> dict[str, Any]:
    """Read a YAML mapping of settings (``{}`` when ``path`` is None)."""
    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"--config {path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of settings, got {type(data).__name__}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def build_config(cls, file_settings: dict[str, Any], flags: dict[str, Any], where: str = "--config"):
    """``cls(**settings)`` where flags given on the command line override the file's values.

    Unknown keys raise ConfigError naming the key and listing the valid ones;
    invalid values raise it with the dataclass's own message.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(file_settings) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {unknown}; valid settings are {sorted(names)}")
    merged = {**file_settings, **{k: v for k, v in flags.items() if v is not None and k in names}}
    try:
        return cls(**merged)
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from None
