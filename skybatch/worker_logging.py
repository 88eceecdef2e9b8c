"""Quiet shutdown of the workers of a cluster skybatch started.

When a job ends, skybatch retires its workers and closes the scheduler. On a loaded machine a worker
can still send one last heartbeat into the closed scheduler port; ``distributed`` then logs "Failed to
communicate with scheduler during heartbeat" with a full traceback to the user's terminal, after a run
that succeeded. :class:`QuietHeartbeatPlugin` installs, in each worker process, a logging filter that
drops exactly that record when its cause is a closed connection. Every other worker log record (task
errors, memory warnings, an unexpected heartbeat error) is kept.
"""
from __future__ import annotations

import logging
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

__all__ = ["ClosedSchedulerHeartbeatFilter", "QuietHeartbeatPlugin"]

_HEARTBEAT_MESSAGE = "Failed to communicate with scheduler during heartbeat"


def _is_closed_connection(exc: BaseException | None) -> bool:
    """True when ``exc`` (or an exception in its cause chain) says the connection was closed."""
    seen = 0
    while exc is not None and seen < 10:
        name = type(exc).__name__
        if name in ("CommClosedError", "StreamClosedError", "ConnectionResetError", "BrokenPipeError",
                    "ConnectionRefusedError"):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


class ClosedSchedulerHeartbeatFilter(logging.Filter):
    """Drops the worker's heartbeat-failure record when the scheduler's connection is closed."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(_HEARTBEAT_MESSAGE):
            return True
        exc = record.exc_info[1] if record.exc_info else None
        return not _is_closed_connection(exc)


class QuietHeartbeatPlugin(WorkerPlugin):
    """A ``distributed`` worker plugin adding :class:`ClosedSchedulerHeartbeatFilter` to the worker's logger.

    Registered by :func:`skybatch.cluster.cluster_client` on clusters it starts (their workers run
    skybatch's own environment).
    """

    name = "skybatch-quiet-heartbeat"

    def setup(self, worker: Any) -> None:
        logger = logging.getLogger("distributed.worker")
        if not any(isinstance(f, ClosedSchedulerHeartbeatFilter) for f in logger.filters):
            logger.addFilter(ClosedSchedulerHeartbeatFilter())

    def teardown(self, worker: Any) -> None:  # the filter stays until the process ends: shutdown is when it counts
        pass
