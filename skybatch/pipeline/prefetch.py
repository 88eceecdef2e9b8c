"""Work ahead of the consumer: ordered thread-pool prefetch, a background iterator, a buffer pool.

The model jobs (streaming training, map_model) spend their time in JAX; reading a store chunk
(I/O + Blosc decompression, both outside the GIL) and gathering rows into batches can run beside
it in threads. These three pieces hold no store or model logic:

- :class:`Prefetcher`: ``fn(item)`` for the items of an iterator on a thread pool, ``depth`` items
  in flight, results handed out in the items' order;
- :class:`BackgroundIterator` (from :mod:`skybatch.background`): drains an iterator in its own thread into a
  bounded queue;
- :class:`BufferPool`: a fixed set of reusable buffers (acquire blocks until one is released), so
  the memory held is bounded and no buffer is allocated per chunk.

Exceptions raised in a worker thread are re-raised in the consumer, at the item where they
happened. ``close()`` (or leaving a ``with`` block) stops the threads; it is safe to call twice.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

from skybatch.background import BackgroundIterator

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
