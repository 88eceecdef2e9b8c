"""The data contracts in ``schemas/*.json``, loaded and checked in code."""

from __future__ import annotations

import functools
import importlib.resources
import json
from typing import Any

import numpy as np

__all__ = ["SCHEMA_NAME", "SCHEMA_VERSION", "StoreSchemaError", "load_schema", "check_spectra_store"]

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


def check_spectra_store(ds, where: str = "store") -> None:
    """Check an opened spectra store (an ``xarray.Dataset``) against ``spectra_store.json``.

    Raises StoreSchemaError listing every missing variable, wrong dims or dtype,
    and missing attribute, with the store's location.
    """
    schema = load_schema()
    problems: list[str] = []
    if ds.attrs.get("skybatch_schema") != schema["schema"]:
        problems.append(f"attr skybatch_schema is {ds.attrs.get('skybatch_schema')!r}, expected {schema['schema']!r}")
    elif int(ds.attrs.get("skybatch_schema_version", -1)) > schema["version"]:
        problems.append(
            f"schema version {ds.attrs.get('skybatch_schema_version')} is newer than this skybatch understands "
            f"({schema['version']}); upgrade skybatch"
        )
    for group in ("variables", "coords"):
        for name, spec in schema[group].items():
            if name not in ds.variables:
                problems.append(f"missing {group[:-1]} {name!r}")
                continue
            v = ds.variables[name]
            if list(v.dims) != spec["dims"]:
                problems.append(f"{name!r} has dims {list(v.dims)}, expected {spec['dims']}")
            if not _dtype_ok(v.dtype, spec["dtype"]):
                problems.append(f"{name!r} has dtype {v.dtype}, expected {spec['dtype']}")
    for name in schema["variables"]:
        if name in ds.data_vars or name not in ds.variables:
            continue
        problems.append(f"{name!r} should be a data variable, not a coordinate")
    for key in schema["attrs"]["required"]:
        if key not in ds.attrs:
            problems.append(f"missing attribute {key!r}")
    if problems:
        raise StoreSchemaError(f"{where} does not follow the spectra store schema:\n  - " + "\n  - ".join(problems))
