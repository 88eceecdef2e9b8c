"""A store's attrs stay small however many files an ingest names: its provenance keeps the first few
sources and their number, the manifest's sources table (Parquet) lists every file."""

from __future__ import annotations

import glob
import json
import os

import pytest

from skybatch.pipeline.difference.config import DifferenceConfig
from skybatch.pipeline.ingest import ingest
from skybatch.pipeline.sourcejob import SOURCE_EXAMPLES
from skybatch.store.manifest import Manifest


@pytest.fixture(scope="module")
def small_files(tmp_path_factory) -> list[str]:
    from skybatch.sample.survey import generate_sample_survey

    out = tmp_path_factory.mktemp("many")
    generate_sample_survey(str(out), n_healpix=1, spectra_per_file=4, n_sdss=80, seed=5)
    return sorted(glob.glob(str(out / "sdss" / "**" / "spec-*.fits"), recursive=True))


def _attrs_bytes(store: str) -> int:
    with open(os.path.join(store, "zarr.json")) as f:
        return len(json.dumps(json.load(f)["attributes"]))


def test_attrs_do_not_grow_with_the_number_of_files(dask_client, small_files, tmp_path):
    assert len(small_files) == 80
    sizes = {}
    for n in (8, 80):
        store = str(tmp_path / f"s{n}.zarr")
        rep = ingest(small_files[:n], store, format="sdss", chunk_spectra=16, client=dask_client, progress=False)
        assert rep.exit_code == 0, rep.summary()
        with open(os.path.join(store, "zarr.json")) as f:
            prov = json.load(f)["attributes"]["provenance"]
        assert prov["n_sources"] == n and prov["settings"]["n_sources_given"] == n
        assert prov["settings"]["sources"] == small_files[:SOURCE_EXAMPLES]
        assert prov["source_examples"] == small_files[:SOURCE_EXAMPLES]
        assert Manifest(store).read_sources()["url"].tolist() == small_files[:n]  # the full list
        sizes[n] = _attrs_bytes(store)
    # 72 more paths of ~100 bytes each would add ~7 kB; only digits of counts and times may differ
    assert abs(sizes[80] - sizes[8]) < 64, sizes
    assert sizes[80] < 16_000, sizes


def test_difference_settings_keep_the_first_images(tmp_path):
    sci = [f"/data/sci/tile_{i:05d}.fits" for i in range(1000)]
    ref = [f"/data/ref/tile_{i:05d}.fits" for i in range(1000)]
    d = DifferenceConfig(science=sci, reference=ref, out=str(tmp_path / "d.zarr")).public_dict()
    assert d["science"] == sci[:SOURCE_EXAMPLES] and d["n_science_given"] == 1000
    assert d["reference"] == ref[:SOURCE_EXAMPLES] and d["n_reference_given"] == 1000
    assert len(json.dumps(d)) < 4000
