"""Prefect flows over the jobs of :mod:`skybatch.jobs`: each flow takes the job's config object as its one
parameter (a mapping of its settings from a deployment; unknown keys are errors), runs
``run_with_client(config, client)`` on a cluster from ``config.cluster`` inside coarse Prefect tasks, and
ends in a state that says what happened (Completed, "Completed with sources set aside", Failed).

The CLI calls the same flows through :func:`run_flow`. :mod:`skybatch.pipeline` and :mod:`skybatch.jobs`
never import Prefect; importing this package does not either (each flow module does).
"""

from __future__ import annotations

from typing import Any

__all__ = ["FLOWS", "run_flow", "flow_for"]

#: job -> "module:flow" of its Prefect flow (the entry points of flows/prefect.yaml)
FLOWS = {
    "ingest": "skybatch.orchestrate.ingest:ingest_flow",
    "tile_ingest": "skybatch.orchestrate.tile_ingest:tile_ingest_flow",
    "preprocess": "skybatch.orchestrate.preprocess:preprocess_flow",
    "difference": "skybatch.orchestrate.difference:difference_flow",
    "train": "skybatch.orchestrate.models:train_flow",
    "tile_train": "skybatch.orchestrate.models:tile_train_flow",
    "score": "skybatch.orchestrate.models:score_flow",
    "classify": "skybatch.orchestrate.models:classify_flow",
    "embed": "skybatch.orchestrate.models:embed_flow",
    "quickstart": "skybatch.orchestrate.quickstart:quickstart_flow",
}


def flow_for(job: str) -> Any:
    """The Prefect flow of ``job`` (a key of :data:`FLOWS`); imports Prefect."""
    import importlib

    mod, name = FLOWS[job].split(":")
    return getattr(importlib.import_module(mod), name)


def run_flow(flow: Any, *args: Any, **params: Any) -> Any:
    """``flow(...)``'s report: the data of its final state, also when that state is Failed (chunks
    that failed are in the report); an exception raised inside the flow is raised again here."""
    state = flow(*args, **params, return_state=True)
    data = state.result(raise_on_failure=False)
    if isinstance(data, BaseException):
        raise data
    return data
