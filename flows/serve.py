"""Serve skybatch's Prefect flows from this process (no work pool needed): ``python flows/serve.py``.

The flows live in the installed package (:mod:`skybatch.orchestrate`); ``prefect.yaml`` beside this file
declares the same flows as deployments of a process work pool. Each flow takes one parameter,
``config``: a mapping of the job's settings (``skybatch run JOB --help`` lists them; unknown keys are
errors), e.g. ``prefect deployment run 'skybatch-ingest/ingest' -p config='{"sources": ["/abs/*.fits"],
"store": "/abs/out.zarr", "progress": false}'``.
"""

from __future__ import annotations


def main() -> None:
    from prefect import serve

    from skybatch.orchestrate import FLOWS, flow_for

    serve(*(flow_for(job).to_deployment(name=job.replace("_", "-")) for job in FLOWS))


if __name__ == "__main__":
    main()
