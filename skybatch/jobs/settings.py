"""A job's settings as one dataclass: field names, types, defaults and help, read once for the CLI, the
Prefect flow parameters and the YAML keys; unknown keys are errors that name the nearest valid key.

Nothing here imports Dask, Prefect or the pipeline.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from collections.abc import Mapping
from typing import Any

__all__ = ["SettingsError", "Setting", "settings_of", "nearest", "check_keys", "config_from", "config_params"]


class SettingsError(ValueError):
    """A settings mapping that does not fit a job's config: names the key and the nearest valid one."""


@dataclasses.dataclass(frozen=True)
class Setting:
    """One setting of a job's config.

    name: the field name (the YAML key and flow parameter; the CLI flag is ``--name-with-dashes``).
    type: the field's annotation, as a type (``list[str]``, ``int | None``, ...).
    default: the default, or :data:`dataclasses.MISSING` for a required setting.
    help: one line of help: ``field(metadata={"help": ...})``, else the ``name: text`` entry of the
        class docstring, or of the docstring of the dataclass base that declares it (a shared section).
    """

    name: str
    type: Any
    default: Any
    help: str

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING


_DOC_ENTRY = re.compile(r"^\s{4}([a-z_][a-z0-9_]*(?:\s*/\s*[a-z_][a-z0-9_]*)*):\s(.*)$")


def _docstring_help(cls: type) -> dict[str, str]:
    """``{name: text}`` from the ``name: text`` (or ``a / b: text``) entries of a class docstring; an
    entry runs on over the more deeply indented lines below it."""
    out: dict[str, str] = {}
    names: list[str] = []
    for line in (cls.__doc__ or "").splitlines():
        m = _DOC_ENTRY.match(line)
        if m:
            names = [n.strip() for n in m.group(1).split("/")]
            for n in names:
                out[n] = m.group(2).strip()
        elif names and line.startswith("        ") and line.strip():
            for n in names:
                out[n] += " " + line.strip()
        else:
            names = []
    return out


def settings_of(cls: type) -> dict[str, Setting]:
    """The settings of a config dataclass, in field order (fields with ``init=False`` are not settings)."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - an annotation that does not resolve: keep the string
        hints = {}
    docs: dict[str, str] = {}
    for base in reversed(cls.__mro__):  # a base's entries (a shared settings section), then the class's own
        if dataclasses.is_dataclass(base):
            docs.update(_docstring_help(base))
    out: dict[str, Setting] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        out[f.name] = Setting(f.name, hints.get(f.name, f.type), default,
                              str(f.metadata.get("help") or docs.get(f.name, "")))
    return out


def nearest(key: str, valid: list[str] | set[str]) -> str | None:
    """The valid key closest to a misspelt one (``None`` when nothing is close)."""
    close = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
    return close[0] if close else None


def check_keys(keys: list[str] | set[str], valid: list[str] | set[str], where: str) -> None:
    """Raise :class:`SettingsError` for the first key not in ``valid``, naming the nearest valid key."""
    unknown = sorted(set(keys) - set(valid))
    if not unknown:
        return
    hints = []
    for k in unknown:
        n = nearest(k, valid)
        hints.append(f"{k!r}" + (f" (did you mean {n!r}?)" if n else ""))
    raise SettingsError(f"{where}: unknown setting(s) {', '.join(hints)}; valid settings are {sorted(valid)}")


def config_from(cls: type, value: Any, where: str = "settings") -> Any:
    """``value`` as a ``cls`` instance: the instance itself, or ``cls(**mapping)`` after checking the keys
    (``-`` in keys read as ``_``). Errors name the key (unknown, with the nearest valid one) or carry the
    config's own validation message."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise SettingsError(f"{where}: expected a {cls.__name__} or a mapping of its settings, got "
                            f"{type(value).__name__}")
    data = {str(k).replace("-", "_"): v for k, v in value.items()}
    valid = settings_of(cls)
    check_keys(set(data), set(valid), where)
    missing = [n for n, s in valid.items() if s.required and n not in data]
    if missing:
        raise SettingsError(f"{where}: missing required setting(s) {missing}")
    try:
        return cls(**data)
    except TypeError as e:
        raise SettingsError(f"{where}: {e}") from None


def config_params(config: Any) -> dict[str, Any]:
    """A config's settings as a plain mapping (top level only: nested dataclasses stay objects)."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.init}
