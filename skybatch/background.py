"""A background iterator: drains an iterator in its own daemon thread into a bounded queue.

Used where reading and preparing the next items should overlap the consumer's compute: the model
jobs' batch gathering (:mod:`skybatch.pipeline.batches`) and the training loop's device feed
(:class:`skybatch.models.train.device.DeviceFeed`). Standard library only, so that both the library's
centre and its edges can use it.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["BackgroundIterator"]

T = TypeVar("T")

_DONE = object()


class BackgroundIterator(Generic[T]):
    """Run ``make()`` (an iterator factory) in a daemon thread, keeping up to ``depth`` items queued.

    The consumer gets the items in order; an exception in the thread is re-raised by ``next``.
    ``close()`` stops the thread at its next item (and calls ``close`` on the iterator when it has one).
    """

    def __init__(self, make: Callable[[], Iterator[T]], depth: int = 2, name: str = "skybatch-gather"):
        if depth < 1:
            raise ValueError(f"queue depth must be >= 1, got {depth}")
        self._q: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._ended = False
        self._thread = threading.Thread(target=self._run, args=(make,), name=name, daemon=True)
        self._thread.start()

    def _put(self, value: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, make: Callable[[], Iterator[T]]) -> None:
        it = None
        try:
            it = make()
            for item in it:
                if not self._put(item):
                    break
            else:
                self._put(_DONE)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            self._put(_Raised(e))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()

    def __iter__(self) -> BackgroundIterator[T]:
        return self

    def __next__(self) -> T:
        if self._ended:
            raise StopIteration
        while True:
            try:
                item = self._q.get(timeout=0.5)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._q.empty():
                    self._ended = True
                    raise StopIteration from None
        if item is _DONE:
            self._ended = True
            raise StopIteration
        if isinstance(item, _Raised):
            self._ended = True
            raise item.error
        return item

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread and wait for it (at most ``timeout`` seconds)."""
        self._stop.set()
        self._ended = True
        try:
            while True:
                self._q.get_nowait()
        except queue.Empty:
            pass
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def __enter__(self) -> BackgroundIterator[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Raised:
    def __init__(self, error: BaseException):
        self.error = error
