"""The one retry policy (skybatch.store.retry): what is retried, how often, how long it waits."""

from __future__ import annotations

import errno
import time

import pytest

from skybatch.sources.base import SourceError
from skybatch.store.retry import RetriesExhausted, is_transient, retry_call


@pytest.mark.parametrize("exc", [
    ConnectionResetError("reset by peer"), TimeoutError("read timed out"),  # socket.timeout is TimeoutError
    OSError(errno.ECONNREFUSED, "refused"), OSError("S3 said SlowDown"), BrokenPipeError(),
])
def test_network_trouble_is_transient(exc):
    assert is_transient(exc)


def test_library_errors_that_are_not_oserrors_are_known_by_name():
    class EndpointConnectionError(Exception):  # botocore's is not an OSError
        pass

    class CommClosedError(Exception):  # distributed's
        pass

    assert is_transient(EndpointConnectionError("could not connect to http://127.0.0.1:9"))
    assert is_transient(CommClosedError("in <TCP (closed)>"))
    assert not is_transient(None)


@pytest.mark.parametrize("exc", [
    FileNotFoundError("gone"), PermissionError("no"), IsADirectoryError("dir"), OSError(errno.ENOSPC, "disk full"),
    OSError(errno.ENOENT, "no such file"), ValueError("bad data"), SourceError("s3://b/x.fits", "corrupt", "bad"),
    KeyError("x"), RetriesExhausted("read x", 3, ConnectionError("down")),
])
def test_facts_about_the_data_are_not_transient(exc):
    assert not is_transient(exc)


class Flaky:
    """Fails ``n_fail`` times with ``exc``, then returns its arguments."""

    def __init__(self, n_fail: int, exc: Exception):
        self.n_fail, self.exc, self.calls = n_fail, exc, []

    def __call__(self, *args, **kw):
        self.calls.append(time.monotonic())
        if len(self.calls) <= self.n_fail:
            raise self.exc
        return args, kw


def test_transient_errors_are_retried_until_success():
    f = Flaky(2, ConnectionResetError("reset"))
    assert retry_call(f, 1, 2, what="read a", base_delay_s=0.0, key="v") == ((1, 2), {"key": "v"})
    assert len(f.calls) == 3


def test_the_final_error_names_what_was_done_and_keeps_the_cause():
    f = Flaky(5, TimeoutError("read timed out"))
    with pytest.raises(RetriesExhausted, match=r"^inspect s3://bucket/t\.fits: still failing after 3 attempts "
                                               r"\(TimeoutError: read timed out\)") as ei:
        retry_call(f, what="inspect s3://bucket/t.fits", base_delay_s=0.0)
    assert len(f.calls) == 3
    assert ei.value.attempts == 3 and ei.value.what == "inspect s3://bucket/t.fits"
    assert isinstance(ei.value.__cause__, TimeoutError) and ei.value.last is ei.value.__cause__


def test_other_errors_propagate_at_once_unchanged():
    err = FileNotFoundError("s3://bucket/missing.fits")
    f = Flaky(5, err)
    with pytest.raises(FileNotFoundError) as ei:
        retry_call(f, what="read", base_delay_s=0.0)
    assert ei.value is err and len(f.calls) == 1


def test_waits_double_with_jitter():
    f = Flaky(3, ConnectionError("down"))
    retry_call(f, what="read", attempts=4, base_delay_s=0.05)
    waits = [b - a for a, b in zip(f.calls, f.calls[1:])]
    for k, w in enumerate(waits):  # 0.05 * 2**k * [0.5, 1.5), plus scheduling slack on a loaded machine
        assert 0.05 * 2**k * 0.5 <= w < 0.05 * 2**k * 1.5 + 0.25, (k, waits)


@pytest.mark.parametrize("kw", [{"attempts": 0}, {"base_delay_s": -1.0}])
def test_bad_settings_are_refused(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        retry_call(lambda: 1, what="x", **kw)
