"""One retry policy for storage and network reads: which errors are worth another try, and how
long to wait between tries.

:func:`is_transient` says whether an exception is passing network trouble (a dropped connection,
a timeout, an S3 hiccup surfacing as ``OSError``) rather than a fact about the data (no such file,
no permission, a disk that is full). :func:`retry_call` calls a function again on transient errors
only, waiting ``base_delay_s * 2**k`` seconds (k = 0, 1, ...) times a random factor in [0.5, 1.5)
between tries, so that many workers that failed together do not retry together. When the tries
run out it raises :class:`RetriesExhausted`, which names what was being done and keeps the last
error as its ``__cause__``. Any other error propagates at once, unchanged.

Dask task retries (``client.submit(..., retries=n)``) are a second, coarser layer: they rerun a
whole task after any error; this module is for one read inside a task.
"""

from __future__ import annotations

import errno
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["RetriesExhausted", "is_transient", "retry_call"]

T = TypeVar("T")

#: OSError numbers that describe the data or the machine, not a passing failure: never retried.
_PERMANENT_ERRNOS = frozenset({
    errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR, errno.EEXIST, errno.ENOSPC,
    errno.EROFS, errno.EINVAL, errno.ENAMETOOLONG,
})  # fmt: skip
#: OSError subclasses that are facts about a path, whatever their errno.
_PERMANENT_TYPES = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)
#: Exceptions of botocore, aiohttp, distributed and S3 that are network trouble but not OSErrors,
#: matched by class name so that this module imports none of those libraries.
_TRANSIENT_NAMES = frozenset({
    "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ServerDisconnectedError",
    "ClientConnectorError", "CommClosedError", "SlowDown", "ServiceUnavailable",
})  # fmt: skip


class RetriesExhausted(OSError):
    """A call that kept failing with transient errors. ``what``: the action (names the file or
    URL); ``attempts``: how many tries were made; ``last``: the last error (also ``__cause__``)."""

    def __init__(self, what: str, attempts: int, last: BaseException):
        super().__init__(
            f"{what}: still failing after {attempts} attempt{'s' if attempts != 1 else ''} "
            f"({type(last).__name__}: {last}); check the network, endpoint and credentials, then re-run"
        )
        self.what = what
        self.attempts = attempts
        self.last = last


def is_transient(exc: BaseException | None) -> bool:
    """True when ``exc`` is network or storage trouble that another try may not meet.

    Transient: ``ConnectionError`` and ``TimeoutError`` (and their subclasses), and any other
    ``OSError`` (fsspec/s3fs report dropped connections and S3 throttling as ``OSError``)
    except those about the path or the machine: ``FileNotFoundError``, ``PermissionError``,
    ``IsADirectoryError``, ``NotADirectoryError``, ``FileExistsError``, and errnos such as
    ENOENT, EACCES, ENOSPC, EROFS; and, by class name, the connection and throttling errors of
    botocore, aiohttp and distributed (``EndpointConnectionError``, ``ReadTimeoutError``,
    ``CommClosedError``, ``SlowDown``...). A :class:`RetriesExhausted` is not transient (its
    retries are spent), nor is None or any other exception (bad data, a bug).
    """
    if exc is None or isinstance(exc, RetriesExhausted):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)) or type(exc).__name__ in _TRANSIENT_NAMES:
        return True
    if isinstance(exc, OSError):
        return not isinstance(exc, _PERMANENT_TYPES) and exc.errno not in _PERMANENT_ERRNOS
    return False


def retry_call(
    fn: Callable[..., T],
    *args: Any,
    what: str,
    attempts: int = 3,
    base_delay_s: float = 0.2,
    **kw: Any,
) -> T:
    """``fn(*args, **kw)``, tried up to ``attempts`` times while it fails with a transient error.

    what: the action, naming its file or URL (``"inspect s3://bucket/t.fits"``); it starts the
    final error's message. attempts: total tries, >= 1. base_delay_s: seconds before the second
    try; each later wait doubles, and every wait is multiplied by a random factor in [0.5, 1.5).
    Returns what ``fn`` returns. Raises :class:`RetriesExhausted` (from the last error) when every
    try failed transiently; any error that :func:`is_transient` rejects propagates at once.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts!r}")
    if base_delay_s < 0:
        raise ValueError(f"base_delay_s must be >= 0 seconds, got {base_delay_s!r}")
    for k in range(attempts):
        try:
            return fn(*args, **kw)
        except Exception as e:
            if not is_transient(e):
                raise
            if k == attempts - 1:
                raise RetriesExhausted(what, attempts, e) from e
            time.sleep(base_delay_s * 2**k * random.uniform(0.5, 1.5))
    raise AssertionError("unreachable")
