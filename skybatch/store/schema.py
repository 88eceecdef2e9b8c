"""The data contracts in ``schemas/*.json``, loaded and checked in code."""

from __future__ import annotations

import functools
import importlib.resources
import json
from typing import Any

import numpy as np

__all__ = [
    "SCHEMA_NAME", "SCHEMA_VERSION", "StoreSchemaError", "load_schema", "check_spectra_store", "dataset_problems",
    "raise_problems",
]

SCHEMA_NAME = "skybatch.spectra"
SCHEMA_VERSION = 1


class StoreSchemaError(ValueError):
    """A store that does not follow its schema; the message lists every problem."""


@functools.cache
def load_schema(name: str = "spectra_store") -> dict[str, Any]:
    """The JSON schema ``schemas/<name>.json`` as a dict."""
    text = (importlib.resources.files("skybatch.schemas") / f"{name}.json").read_text()
    return json.loads(text)


def _dtype_ok(actual: np.dtype, expected: str) -> bool:
    if expected == "str":
        return actual.kind in ("O", "U", "T")
    return actual == np.dtype(expected)


def dataset_problems(ds: Any, schema: dict[str, Any], part: str | None = None) -> list[str]:
    """Every way an opened dataset differs from its contract, as readable lines (empty: it follows it).

    ds: an ``xarray.Dataset`` (one store, view or group). schema: a loaded contract
    (:func:`load_schema`); its ``schema`` / ``version`` are what the dataset's
    ``skybatch_schema`` / ``skybatch_schema_version`` attributes must say. part: the key of the
    contract section that describes this dataset (``"view"``, ``"pairs_group"``...); None when the
    contract's top level does. The section lists ``variables`` and ``coords`` (name -> ``dims``,
    ``dtype``; ``"str"`` for any string dtype) and ``attrs.required``.
    Checks: the schema name, a version not newer than this skybatch's, every variable and coordinate
    present with its dims and dtype, variables as data variables (not coordinates), every required
    attribute present.
    """
    spec = schema if part is None else schema[part]
    problems: list[str] = []
    if ds.attrs.get("skybatch_schema") != schema["schema"]:
        problems.append(f"attr skybatch_schema is {ds.attrs.get('skybatch_schema')!r}, expected {schema['schema']!r}")
    elif int(ds.attrs.get("skybatch_schema_version", -1)) > schema["version"]:
        problems.append(
            f"schema version {ds.attrs.get('skybatch_schema_version')} is newer than this skybatch understands "
            f"({schema['version']}); upgrade skybatch"
        )
    for kind in ("variables", "coords"):
        for name, s in spec[kind].items():
            if name not in ds.variables:
                problems.append(f"missing {kind[:-1]} {name!r}")
                continue
            var = ds.variables[name]
            if list(var.dims) != s["dims"]:
                problems.append(f"{name!r} has dims {list(var.dims)}, expected {s['dims']}")
            if not _dtype_ok(var.dtype, s["dtype"]):
                problems.append(f"{name!r} has dtype {var.dtype}, expected {s['dtype']}")
            if kind == "variables" and name not in ds.data_vars:
                problems.append(f"{name!r} should be a data variable, not a coordinate")
    for key in spec["attrs"]["required"]:
        if key not in ds.attrs:
            problems.append(f"missing attribute {key!r}")
    return problems


def raise_problems(problems: list[str], what: str) -> None:
    """Raise StoreSchemaError listing ``problems`` under ``what`` (``"<url> does not follow ..."``); none: return."""
    if problems:
        raise StoreSchemaError(f"{what}:\n  - " + "\n  - ".join(problems))


def check_spectra_store(ds: Any, where: str = "store") -> None:
    """Check an opened spectra store (an ``xarray.Dataset``) against ``spectra_store.json``.

    Raises StoreSchemaError listing every missing variable, wrong dims or dtype,
    and missing attribute, with the store's location.
    """
    raise_problems(dataset_problems(ds, load_schema()), f"{where} does not follow the spectra store schema")
