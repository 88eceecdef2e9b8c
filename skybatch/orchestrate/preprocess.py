"""Prefect flow: preprocess a spectra store into a model-ready store (over :mod:`skybatch.jobs.preprocess`).

Coarse tasks only (preprocess, report; :mod:`._job_flow`)."""

from __future__ import annotations

from skybatch.orchestrate._common import set_default_env

set_default_env()

from typing import Any  # noqa: E402

from prefect import flow  # noqa: E402

from skybatch.jobs.preprocess import Config, run_with_client  # noqa: E402
from skybatch.orchestrate._job_flow import JobFlow  # noqa: E402
from skybatch.spectra import PreprocessRecipe  # noqa: E402


def _recipe(value: Any) -> Any:
    """A mapping's ``recipe`` mapping as a :class:`~skybatch.spectra.PreprocessRecipe`."""
    if isinstance(value, dict) and isinstance(value.get("recipe"), dict):
        return {**value, "recipe": PreprocessRecipe.from_dict(value["recipe"])}
    return value


_JOB = JobFlow(Config, run_with_client, task_name="preprocess", what="preprocess", report_key="preprocess-report",
               title=lambda r: f"skybatch preprocess {r.store} -> {r.out}",
               paths=lambda c: dict(store=c.store, out=c.out), where="preprocess_flow(config)", coerce=_recipe)


@flow(name="skybatch-preprocess", log_prints=True, validate_parameters=False)
def preprocess_flow(config: Config) -> dict:
    """Mask, shift to the rest frame, resample and normalise every spectrum of a store into a new store.

    ``config``: a :class:`skybatch.jobs.preprocess.Config` or a mapping of its settings (``recipe``: a
    :class:`~skybatch.spectra.PreprocessRecipe` or a mapping of its settings)."""
    return _JOB(config)
