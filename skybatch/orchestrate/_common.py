"""Helpers shared by the flows: retry rules, quiet defaults, configs from flow parameters, reports as
Prefect states and artifacts (no logic of the jobs here)."""

from __future__ import annotations

import os

from skybatch.store.retry import is_transient  # the one retry policy (network trouble, not facts)

#: Defaults that keep Prefect and distributed quiet and patient on a busy machine (stack-notes 2a).
DEFAULT_ENV = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DASK_LOGGING__DISTRIBUTED": "warning",
}


def set_default_env() -> None:
    """Apply :data:`DEFAULT_ENV` where the user has not set a value (call before importing prefect).

    Run from the CLI, this is also where the shared local Prefect server is found or started
    (:mod:`skybatch.commands.server`), once the command's settings have been checked.
    """
    for k, v in DEFAULT_ENV.items():
        os.environ.setdefault(k, v)
    from skybatch.commands.server import on_flow_import

    on_flow_import()


def retry_on_transient(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: retry only transient failures (:func:`skybatch.store.retry.is_transient`)."""
    try:
        state.result()
    except BaseException as e:  # noqa: BLE001 - inspecting the failure
        return is_transient(e)
    return False


#: The Prefect retry settings of every coarse job task (``@task(..., **TASK_RETRY)``): two more tries, 5 s
#: and 30 s later, after transient failures only. A retried job plans again and skips the chunks, pairs or
#: checkpoints the failed try finished (every job is resumable).
TASK_RETRY: dict = dict(retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=retry_on_transient)


def report_markdown(title: str, report: dict) -> str:
    """A job's report as a Markdown artifact: a table of its counts, then the sources set aside and the
    chunks that failed (credentials redacted)."""
    from skybatch.secrets import redact

    r = redact(report)
    rows = [(k, v) for k, v in r.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)]
    lines = [f"# {title}", "", "| | |", "|---|---|"]
    lines += [f"| {k.replace('_', ' ')} | {v:.1f} |" if isinstance(v, float) else f"| {k.replace('_', ' ')} | {v} |"
              for k, v in rows]
    for k, v in r.items():
        if isinstance(v, dict) and v and all(isinstance(x, (int, float)) for x in v.values()):
            lines.append(f"| {k.replace('_', ' ')} | " + ", ".join(f"{a}={b}" for a, b in v.items()) + " |")
    aside = r.get("set_aside") or []
    if aside:
        lines += ["", f"## Set aside ({len(aside)})", "", "| source | reason | message |", "|---|---|---|"]
        lines += [f"| `{a.get('url', a.get('source', ''))}` | {a.get('reason', '')} | "
                  f"{str(a.get('message', '')).replace('|', '/')} |" for a in aside]
    failed = r.get("failed_chunks") or []
    if failed:
        lines += ["", f"## Failed chunks ({len(failed)}): re-run to retry", "", "| chunk | error |", "|---|---|"]
        lines += [f"| {c.get('chunk')} | {str(c.get('error', '')).replace('|', '/')} |" for c in failed]
    pngs = [v for v in r.values() if isinstance(v, str) and v.endswith(".png")]
    if pngs:
        lines += ["", "## Plots", ""] + [f"- `{p}`" for p in pngs]
    return "\n".join(lines) + "\n"


def publish_report(key: str, title: str, report: dict) -> None:
    """Publish ``report`` as a Markdown artifact of the current flow run (never fails the run)."""
    try:
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(report_markdown(title, report), key=key, description=title)
    except Exception as e:  # noqa: BLE001 - artifacts are a courtesy
        from prefect import get_run_logger

        get_run_logger().warning(f"could not create the report artifact: {e}")


def final_state(result: dict, exit_code: int, what: str):
    """The flow run's final state, as a Prefect user sees it: Completed; Completed named "Completed with
    sources set aside" (exit code 3) with the counts in its message; or Failed (chunks failed, exit 1).
    The report dict is the state's data either way (``flow(..., return_state=True).result(raise_on_failure=False)``)."""
    from prefect.states import Completed, Failed

    aside = result.get("set_aside") or []
    failed = result.get("failed_chunks") or []
    if exit_code == 1 or failed:
        return Failed(message=f"{what}: {len(failed)} chunk(s) failed; re-run to retry", data=result)
    if exit_code == 3 or aside:
        reasons: dict[str, int] = {}
        for a in aside:
            reasons[a.get("reason", "?")] = reasons.get(a.get("reason", "?"), 0) + 1
        return Completed(name="Completed with sources set aside", data=result,
                         message=f"{what}: {len(aside)} source(s) set aside ("
                                 + ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items())) + ")")
    return Completed(data=result, message=f"{what}: done")


def _in_deployment() -> bool:
    """True inside a flow run started from a deployment (by a worker or ``serve``)."""
    try:
        from prefect.runtime import deployment

        return bool(deployment.id)
    except Exception:  # noqa: BLE001 - outside a flow run
        return False


def check_deployment_paths(**paths) -> None:
    """Refuse relative local paths when the flow runs as a deployment.

    A worker runs each flow run in its own working directory (a temporary folder, or ``flows/`` with the
    ``set_working_directory`` pull step), so ``data/x.fits`` there is not the user's ``data/x.fits``: the
    run would end Completed with nothing read, or write a store into the source tree. From the CLI or
    Python, relative paths mean the caller's working directory and are fine.
    """
    try:
        from prefect.runtime import deployment

        in_deployment = bool(deployment.id)
    except Exception:  # noqa: BLE001 - outside a flow run: nothing to check
        return
    if not in_deployment:
        return
    bad = []
    for name, value in paths.items():
        for v in [value] if isinstance(value, str) else list(value or []):
            if v and "://" not in v and not os.path.isabs(os.path.expanduser(v)):
                bad.append(f"{name}={v!r}")
    if bad:
        raise ValueError(f"deployment parameters must be absolute paths or s3:// URLs (the worker runs in "
                         f"{os.getcwd()}): " + ", ".join(bad))


#: Config fields that may hold credentials: the CLI hands them over by reference (:func:`skybatch.secrets.stash`).
OPTION_FIELDS = ("source_options", "store_options", "storage_options")


#: Config fields that hold local paths or URLs the Dask workers open (a store, an output, the inputs).
PATH_FIELDS = ("store", "out", "sources", "science", "reference")


def _absolute(value: str) -> str:
    if not value or "://" in value:
        return value
    return os.path.abspath(os.path.expanduser(value))


def absolute_paths(params: dict) -> dict:
    """``params`` with the relative local paths of :data:`PATH_FIELDS` made absolute (this process's cwd).

    The workers of a cluster started elsewhere (``dask worker`` in another terminal, a SLURM job) have
    their own working directory: ``--store s.zarr`` must mean the caller's ``s.zarr`` there too, not a
    path relative to wherever each worker was started. URLs (``s3://...``) are left as they are.
    """
    out = dict(params)
    for k in PATH_FIELDS:
        v = out.get(k)
        if isinstance(v, str):
            out[k] = _absolute(v)
        elif isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v):
            out[k] = type(v)(_absolute(x) for x in v)
    return out


def flow_params(config) -> dict:
    """A job config as a flow's ``config`` parameter: its settings, with storage options that hold
    credentials replaced by a reference to this process's memory, so that Prefect never records them."""
    from skybatch.commands._opts import storage_options_param
    from skybatch.jobs.settings import config_params

    params = absolute_paths(config_params(config))
    urls = [u for k in ("sources", "science", "reference") for u in (params.get(k) or [])]
    urls += [params[k] for k in ("store", "out") if isinstance(params.get(k), str)]
    for k in OPTION_FIELDS:
        if params.get(k):
            params[k] = storage_options_param(params[k], urls)
    return params


def job_config(cls, value, where: str):
    """The flow parameter ``value`` (a config, or a mapping of its settings) as a ``cls`` instance:
    unknown keys are errors naming the nearest valid one; option references are resolved."""
    from dataclasses import fields, replace

    from skybatch.jobs.settings import config_from
    from skybatch.secrets import unstash

    if isinstance(value, dict):
        value = {k: (unstash(v) or {}) if k in OPTION_FIELDS else v for k, v in value.items()}
        if "progress" not in value and _in_deployment() and "progress" in {f.name for f in fields(cls)}:
            value["progress"] = False  # a worker's log is no terminal for progress bars
    config = config_from(cls, value, where)
    names = {f.name for f in fields(config)}
    refs = {k: unstash(getattr(config, k)) or {} for k in OPTION_FIELDS if k in names
            and isinstance(getattr(config, k), str)}
    return replace(config, **refs) if refs else config
