"""What the CLI commands of the store-writing jobs share: the job's config class, and running the job
through its Prefect flow from the command's flags and ``--config`` file."""

from __future__ import annotations

import argparse
import importlib
from typing import Any


def config_class(job: str) -> type:
    """The config class of ``job`` (a module of :mod:`skybatch.jobs`, e.g. ``"tile_ingest"``)."""
    return importlib.import_module(f"skybatch.jobs.{job}").Config


def run_job(args: argparse.Namespace, job: str) -> tuple[Any, Any]:
    """Run ``job`` (a key of :data:`skybatch.orchestrate.FLOWS` and a module of :mod:`skybatch.jobs`)
    through its flow with the settings of ``--config`` and the flags, and print its report's summary.

    Returns ``(config, report)``: the job's config and its report (a failed run's report too)."""
    from skybatch.commands._config import build_config, load_config
    from skybatch.commands._flags import flag_values

    mod = importlib.import_module(f"skybatch.jobs.{job}")
    flags = flag_values(args, mod.Config)
    config = build_config(mod.Config, load_config(getattr(args, "config", None)), flags)
    from skybatch.orchestrate import flow_for, run_flow
    from skybatch.orchestrate._common import flow_params

    report = mod.Report(**run_flow(flow_for(job), flow_params(config)))
    print(report.summary())
    return config, report
