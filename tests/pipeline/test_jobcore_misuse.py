"""StoreJob used outside its ``with`` block: a clear error, not an AttributeError on None."""

import pytest

from skybatch.pipeline.jobcore import StoreJob


@pytest.mark.parametrize("call", ["todo", "created"])
def test_storejob_outside_with_names_the_store(tmp_path, call):
    job = StoreJob(str(tmp_path / "out.zarr"), None, kind="spectra", stage="ingest")
    with pytest.raises(RuntimeError, match=r"out\.zarr.*outside its `with StoreJob"):
        if call == "todo":
            job.todo([])
        else:
            job.created({"uuid": "x"})
    assert not (tmp_path / "out.zarr").exists()
