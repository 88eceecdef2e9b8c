"""Prefect as its users see a run: the final state names what happened, the report is a Markdown artifact."""

from __future__ import annotations

import pytest


def test_report_markdown_table_redacts():
    from skybatch.orchestrate._common import report_markdown

    md = report_markdown("skybatch ingest", {
        "store": "/abs/s.zarr", "n_spectra": 10, "seconds": 1.5, "flag_counts": {"NORM_FAILED": 2},
        "set_aside": [{"url": "s3://u:pw@host/b/x.fits", "reason": "checksum", "message": "DATASUM | mismatch"}],
        "failed_chunks": [{"chunk": 3, "error": "boom"}], "top_png": "/abs/top.png",
        "store_options": {"secret": "hush"}})
    assert "| n spectra | 10 |" in md and "| seconds | 1.5 |" in md
    assert "NORM_FAILED=2" in md
    assert "## Set aside (1)" in md and "checksum" in md and "DATASUM / mismatch" in md
    assert "pw@" not in md and "hush" not in md
    assert "## Failed chunks (1)" in md and "`/abs/top.png`" in md


@pytest.mark.prefect
def test_ingest_with_sources_set_aside_ends_in_a_named_state(prefect_server, tmp_path, dask_client):
    from prefect.client.orchestration import get_client

    from skybatch.orchestrate.ingest import ingest_flow

    state = ingest_flow({"sources": [str(tmp_path / "nothing-here" / "*.fits")], "store": str(tmp_path / "s.zarr"),
                         "cluster": dask_client.scheduler.address, "progress": False}, return_state=True)
    assert state.is_completed() and state.name == "Completed with sources set aside"
    assert "1 source(s) set aside (not-found: 1)" in state.message
    report = state.result()
    assert report["set_aside"][0]["reason"] == "not-found"
    with get_client(sync_client=True) as c:
        arts = c.read_artifacts()
    assert any(a.key == "ingest-report" and "## Set aside (1)" in (a.data or "") for a in arts)


@pytest.mark.prefect
def test_model_flows_run_their_job_in_the_named_retried_task(prefect_server, tmp_path, dask_client):
    """The model flows (one task function over every job) run each job's ``run_with_client`` in the task
    named for it; a job's own error (no such store) fails the task and the flow, without retries."""
    from prefect.client.orchestration import get_client

    from skybatch.orchestrate.models import embed_flow, tile_train_flow

    where = {"cluster": dask_client.scheduler.address, "progress": False}
    missing = str(tmp_path / "missing.zarr")
    embed = embed_flow({"store": missing, "model": str(tmp_path / "no-model"), **where}, return_state=True)
    train = tile_train_flow({"store": missing, "out": str(tmp_path / "enc"), **where}, return_state=True)
    assert embed.is_failed() and train.is_failed()
    with get_client(sync_client=True) as c:
        runs = c.read_task_runs()
    failed = {r.name.rsplit("-", 1)[0] for r in runs if r.state and r.state.is_failed()}
    assert {"map-model", "train-tile-encoder"} <= failed, failed
    assert all(r.run_count == 1 for r in runs if r.name.rsplit("-", 1)[0] in failed)
