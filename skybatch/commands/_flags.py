"""Command-line flags derived from a job's config class (:func:`skybatch.jobs.settings.settings_of`).

A command declares by hand only the flags whose spelling or form is part of the CLI's contract
(``--source`` repeated, ``--no-progress``, choices); :func:`add_config_flags` adds one flag for every other
setting of the config — name, type, help and default from the config — so a setting added to a config
is a flag, a YAML key and a flow parameter at once. Settings holding mappings (fsspec options) are
YAML-only.
"""

from __future__ import annotations

import argparse
import types
import typing
from typing import Any

from skybatch.jobs.settings import settings_of

__all__ = ["add_config_flags", "flag_values"]


def _dests(p: argparse.ArgumentParser) -> set[str]:
    return {a.dest for a in p._actions}


def _plain(tp: Any) -> tuple[Any, bool]:
    """(the type without ``None``, whether ``None`` was allowed)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return (args[0] if len(args) == 1 else tp), len(args) < len(typing.get_args(tp))
    return tp, False


def add_config_flags(p: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> list[str]:
    """Add a flag for each setting of ``cls`` that ``p`` has no flag for yet; returns their names.

    Flags default to ``None`` (so that a ``--config`` file's value stands unless the flag is given); the
    help ends with the config's default.
    """
    have = _dests(p)
    added = []
    for name, s in settings_of(cls).items():
        if name in have or name in skip:
            continue
        tp, _ = _plain(s.type)
        origin = typing.get_origin(tp) or tp
        flag = "--" + name.replace("_", "-")
        default = "" if s.required or s.default in (None, (), []) else f" (default: {s.default})"
        helptext = (s.help or name.replace("_", " ")) + default
        if tp is bool:
            if s.default is True:
                p.add_argument("--no-" + name.replace("_", "-"), dest=name, action="store_false", default=None,
                               help=helptext)
            else:
                p.add_argument(flag, dest=name, action="store_true", default=None, help=helptext)
        elif tp in (int, float, str):
            p.add_argument(flag, dest=name, type=tp, default=None, help=helptext)
        elif origin in (list, tuple) and typing.get_args(tp) and typing.get_args(tp)[0] in (int, float, str):
            p.add_argument(flag, dest=name, type=typing.get_args(tp)[0], action="append", default=None,
                           help=helptext + " (repeat for more)")
        else:  # mappings, nested configs: YAML only
            continue
        added.append(name)
    return added


def flag_values(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The value of every setting of ``cls`` given on the command line (``None``: not given)."""
    return {name: getattr(args, name, None) for name in settings_of(cls)}
