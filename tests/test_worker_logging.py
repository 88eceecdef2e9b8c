"""The closed scheduler's last heartbeat failure stays out of the terminal; other worker records stay."""
from __future__ import annotations

import logging

import pytest
from distributed.comm.core import CommClosedError

from skybatch.cluster import cluster_client
from skybatch.worker_logging import ClosedSchedulerHeartbeatFilter


def _record(msg: str, exc: BaseException | None) -> logging.LogRecord:
    exc_info = (type(exc), exc, None) if exc is not None else None
    return logging.LogRecord("distributed.worker", logging.ERROR, __file__, 1, msg, None, exc_info)


def _closed_comm() -> CommClosedError:
    try:
        try:
            raise OSError("Stream is closed")
        except OSError as inner:
            raise CommClosedError("in <TCP (closed) ConnectionPool.heartbeat_worker>") from inner
    except CommClosedError as e:
        return e


def test_filter_drops_only_the_closed_connection_heartbeat():
    f = ClosedSchedulerHeartbeatFilter()
    assert not f.filter(_record("Failed to communicate with scheduler during heartbeat.", _closed_comm()))
    # a heartbeat failing for another reason, and any other record, are kept
    assert f.filter(_record("Failed to communicate with scheduler during heartbeat.", ValueError("bad reply")))
    assert f.filter(_record("Compute Failed", _closed_comm()))
    assert f.filter(_record("Unexpected exception during heartbeat. Closing worker.", _closed_comm()))


@pytest.mark.timeout(180)
def test_started_cluster_workers_carry_the_filter():
    def has_filter() -> bool:
        from skybatch.worker_logging import ClosedSchedulerHeartbeatFilter as F
        return any(isinstance(x, F) for x in logging.getLogger("distributed.worker").filters)

    with cluster_client("local", quiet=True, n_workers=1, threads_per_worker=1) as client:
        assert all(client.run(has_filter).values())
