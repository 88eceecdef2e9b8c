"""Helpers shared by the flows: retry rules and quiet defaults (no logic of the jobs here)."""

from __future__ import annotations

import os

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


def is_transient(exc: BaseException | None) -> bool:
    """True for errors worth retrying: network trouble talking to S3 or the scheduler."""
    if exc is None:
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    name = type(exc).__name__
    if name in {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ServerDisconnectedError",
                "ClientConnectorError", "CommClosedError", "SlowDown", "ServiceUnavailable"}:
        return True
    return isinstance(exc, OSError) and not isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError))


def retry_on_transient(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: retry only transient failures."""
    try:
        state.result()
    except BaseException as e:  # noqa: BLE001 - inspecting the failure
        return is_transient(e)
    return False
