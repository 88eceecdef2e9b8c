"""The training loop's device feed (a BackgroundIterator): batches arrive in order on the device, a bad
batch raises at its own step after the good ones, and closing the feed closes the host iterator."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from skybatch.models.train.device import DeviceFeed, _Placement


def _one_device() -> _Placement:
    return _Placement([jax.local_devices()[0]], None, None)


def test_batches_in_order_then_a_bad_one_raises_at_its_step():
    def host():
        for i in range(3):
            yield {"x": np.full((4, 2), i, np.float64)}
        yield {"x": np.zeros((3, 2), np.float32)}  # wrong batch size

    feed = DeviceFeed(host(), _one_device(), batch_size=4, start_step=10, depth=2)
    got = [next(feed) for _ in range(3)]
    assert [float(b["x"][0, 0]) for b in got] == [0.0, 1.0, 2.0]
    assert all(isinstance(b["x"], jax.Array) and b["x"].dtype == np.float32 for b in got)
    with pytest.raises(ValueError, match="batch of step 13"):
        next(feed)
    with pytest.raises(StopIteration):
        next(feed)
    feed.close()


def test_close_stops_the_thread_and_closes_the_host_iterator():
    closed = []

    def endless():
        try:
            i = 0
            while True:
                yield {"x": np.full((2, 1), i, np.float32)}
                i += 1
        finally:
            closed.append(True)

    feed = DeviceFeed(endless(), _one_device(), batch_size=2, start_step=0, depth=1)
    assert float(next(feed)["x"][0, 0]) == 0.0
    feed.close(timeout=10)
    assert not feed._thread.is_alive() and closed == [True]
    with pytest.raises(StopIteration):
        next(feed)
