"""The one schema check (``dataset_problems``) against the three contracts it serves."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from skybatch.store.schema import StoreSchemaError, dataset_problems, load_schema, raise_problems


def _tile_view(schema: dict) -> xr.Dataset:
    spec = schema["view"]
    shape = {"tile": 2, "band": 3, "y": 4, "x": 5}
    data = {
        name: (s["dims"], np.zeros([shape[d] for d in s["dims"]], dtype=s["dtype"]))
        for name, s in spec["variables"].items()
    }
    coords = {
        name: (s["dims"], np.zeros([shape[d] for d in s["dims"]], dtype=object if s["dtype"] == "str" else s["dtype"]))
        for name, s in spec["coords"].items()
    }
    attrs = {k: 0 for k in spec["attrs"]["required"]}
    attrs.update(skybatch_schema=schema["schema"], skybatch_schema_version=schema["version"])
    return xr.Dataset(data, coords=coords, attrs=attrs)


def test_a_view_that_follows_the_contract_has_no_problems():
    schema = load_schema("tile_store")
    assert dataset_problems(_tile_view(schema), schema, "view") == []


def test_every_kind_of_problem_is_listed():
    schema = load_schema("tile_store")
    ds = _tile_view(schema)
    ds = ds.drop_vars("noise")  # missing variable
    ds["mask"] = ds["mask"].astype(np.float32)  # wrong dtype
    ds = ds.set_coords("image")  # a variable as a coordinate
    ds = ds.assign_coords(present=(("band", "tile"), np.zeros((3, 2), bool)))  # wrong dims
    del ds.attrs["view"]
    ds.attrs["skybatch_schema_version"] = schema["version"] + 1
    problems = dataset_problems(ds, schema, "view")
    assert "missing variable 'noise'" in problems
    assert "'mask' has dtype float32, expected uint32" in problems
    assert "'image' should be a data variable, not a coordinate" in problems
    assert "'present' has dims ['band', 'tile'], expected ['tile', 'band']" in problems
    assert "missing attribute 'view'" in problems
    assert any("newer than this skybatch understands" in p for p in problems)
    with pytest.raises(StoreSchemaError, match=r"my view does not follow(.|\n)*missing variable 'noise'"):
        raise_problems(problems, "my view does not follow the tile store schema")


def test_another_schema_name_is_a_problem():
    schema = load_schema("tile_store")
    ds = _tile_view(schema)
    ds.attrs["skybatch_schema"] = "skybatch.spectra"
    assert dataset_problems(ds, schema, "view") == [
        "attr skybatch_schema is 'skybatch.spectra', expected 'skybatch.tiles'"
    ]


def test_the_top_level_contract_is_used_without_a_part():
    schema = load_schema("spectra_store")
    problems = dataset_problems(xr.Dataset(), schema)
    assert f"missing variable {next(iter(schema['variables']))!r}" in problems
    assert problems[0].startswith("attr skybatch_schema is None")
