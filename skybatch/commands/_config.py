"""Merge a YAML config file with CLI flags into a typed config (one-to-one field mapping)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ConfigError", "UsageError", "load_config", "build_config", "flag_name", "s3_client_defaults",
           "with_s3_defaults"]


class ConfigError(ValueError):
    """A config file or flag that does not fit the job's settings; names the key (exit code 2)."""


class UsageError(ConfigError):
    """A required setting is missing: printed with the command's usage line (exit code 2)."""


#: Flags whose name differs from the setting's (``sources`` is given as repeated ``--source``).
_FLAG = {"sources": "--source", "bands": "--band"}


def flag_name(setting: str) -> str:
    """The command-line flag of a setting (``chunk_spectra`` -> ``--chunk-spectra``)."""
    return _FLAG.get(setting, "--" + setting.replace("_", "-"))


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

    Unknown keys raise ConfigError naming the key, the nearest valid one and listing the valid ones; a missing required
    setting raises UsageError naming its flag; invalid values raise ConfigError with the dataclass's
    own message.
    """
    from skybatch.jobs.settings import SettingsError, check_keys

    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    try:
        check_keys(set(file_settings), set(fields), where)
    except SettingsError as e:
        raise ConfigError(str(e)) from None
    merged = {**file_settings, **{k: v for k, v in flags.items() if v is not None and k in fields}}
    missing = [n for n, f in fields.items() if n not in merged
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise UsageError("missing " + ", ".join(f"{flag_name(n)} (or `{n}:` in --config)" for n in missing))
    try:
        return cls(**merged)
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from None


def s3_client_defaults() -> dict[str, Any]:
    """botocore settings that make an unreachable S3 endpoint an error within ~10 s.

    botocore's defaults (60 s connect timeout, retried) take minutes to give up on an endpoint
    that does not answer; 3 s per connection attempt and 2 attempts keep a typo'd
    ``--endpoint-url`` (or a firewalled one) to a few seconds, and reads of slow objects unaffected.
    """
    return {"config_kwargs": {"connect_timeout": 3, "read_timeout": 60,
                              "retries": {"max_attempts": 2, "mode": "standard"}}}


def with_s3_defaults(options: dict[str, Any] | None) -> dict[str, Any]:
    """``options`` with :func:`s3_client_defaults` filled in where the user set nothing."""
    out = dict(options or {})
    ck = {**s3_client_defaults()["config_kwargs"], **(out.get("config_kwargs") or {})}
    out["config_kwargs"] = ck
    return out
