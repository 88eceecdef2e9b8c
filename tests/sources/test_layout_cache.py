"""The readers' per-process plan cache: a plan is made once per (url, size, checksum, key), and a file
whose identity differs from the one it was planned with is refused, not read."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from skybatch.sources._common import LayoutCache
from skybatch.sources.base import SourceError


def test_plan_for_makes_once_and_refuses_a_changed_file():
    cache = LayoutCache(maxsize=2)
    made: list[str] = []

    def make(checksum: str):
        def plan():
            made.append(checksum)
            return {"checksum": checksum}
        return plan

    info = SimpleNamespace(url="a.fits", size=10, checksum="x1")
    p1 = cache.plan_for(info, make("x1"), lambda p: p["checksum"])
    p2 = cache.plan_for(info, make("x1"), lambda p: p["checksum"])
    assert p1 is p2 and made == ["x1"]
    # the extra key parts are part of the key (e.g. the DESI reader's redshift setting)
    cache.plan_for(info, make("x1"), lambda p: p["checksum"], "with-redshifts")
    assert made == ["x1", "x1"]
    # planned as x1, the file now says x2: refused, and nothing cached for it
    moved = SimpleNamespace(url="b.fits", size=10, checksum="x1")
    with pytest.raises(SourceError, match="changed since it was planned") as e:
        cache.plan_for(moved, make("x2"), lambda p: p["checksum"])
    assert e.value.reason == "changed" and e.value.source == "b.fits"
    assert cache.get(("b.fits", 10, "x1")) is None
    # no recorded checksum (planned without one): the plan is taken as it is
    loose = SimpleNamespace(url="c.fits", size=10, checksum="")
    assert cache.plan_for(loose, make("x3"), lambda p: p["checksum"]) == {"checksum": "x3"}
