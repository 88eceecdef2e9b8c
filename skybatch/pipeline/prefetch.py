"""Work ahead of the consumer: ordered thread-pool prefetch, a background iterator, a buffer pool.

The model jobs (streaming training, map_model) spend their time in JAX; reading a store chunk
(I/O + Blosc decompression, both outside the GIL) and gathering rows into batches can run beside
it in threads. These three pieces hold no store or model logic:

- :class:`Prefetcher`: ``fn(item)`` for the items of an iterator on a thread pool, ``depth`` items
  in flight, results handed out in the items' order;
- :class:`BackgroundIterator`: drains an iterator in its own thread into a bounded queue;
- :class:`BufferPool`: a fixed set of reusable buffers (acquire blocks until one is released), so
  the memory held is bounded and no buffer is allocated per chunk.

Exceptions raised in a worker thread are re-raised in the consumer, at the item where they
happened. ``close()`` (or leaving a ``with`` block) stops the threads; it is safe to call twice.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

__all__ = ["BackgroundIterator", "BufferPool", "Prefetcher"]

T = TypeVar("T")
R = TypeVar("R")


class Prefetcher(Generic[T, R]):
    """Iterate ``fn(item)`` over ``items`` with ``depth`` calls running ahead on ``workers`` threads.

    items: any iterable (may be endless); fn: the work per item (e.g. read one store chunk).
    depth: results computed ahead of the one being consumed (>= 1); workers: threads (default depth).
    """

    def __init__(self, fn: Callable[[T], R], items: Iterable[T], depth: int = 2, workers: int | None = None):
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self._fn = fn
        self._items = iter(items)
        self._depth = depth
        self._pool = ThreadPoolExecutor(max(1, workers or depth), thread_name_prefix="skybatch-prefetch")
        self._pending: deque[Future[R]] = deque()
        self._exhausted = False
        self._closed = False

    def _fill(self) -> None:
        while not self._exhausted and len(self._pending) < self._depth:
            try:
                item = next(self._items)
            except StopIteration:
                self._exhausted = True
                return
            self._pending.append(self._pool.submit(self._fn, item))

    def __iter__(self) -> Prefetcher[T, R]:
        return self

    def __next__(self) -> R:
        if self._closed:
            raise StopIteration
        self._fill()
        if not self._pending:
            raise StopIteration
        fut = self._pending.popleft()
        self._fill()  # keep `depth` calls in flight while the consumer works on this one
        return fut.result()

    def close(self) -> None:
        """Cancel what has not started; wait for running calls to end."""
        self._closed = True
        for f in self._pending:
            f.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Prefetcher[T, R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


class BufferPool(Generic[T]):
    """``n`` reusable buffers made by ``make()`` on first use; :meth:`acquire` blocks until one is free."""

    def __init__(self, make: Callable[[], T], n: int):
        if n < 1:
            raise ValueError(f"a buffer pool needs at least 1 buffer, got {n}")
        self._make = make
        self._free: queue.LifoQueue[T] = queue.LifoQueue()
        self._made = 0
        self._n = n
        self._lock = threading.Lock()

    def acquire(self, timeout: float | None = None) -> T:
        """A free buffer (made on demand up to ``n``; then wait for a :meth:`release`)."""
        try:
            return self._free.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if self._made < self._n:
                self._made += 1
                return self._make()
        return self._free.get(timeout=timeout)

    def release(self, buf: T) -> None:
        """Give ``buf`` back for reuse."""
        self._free.put(buf)
