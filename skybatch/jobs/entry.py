"""skybatch's top-level Python entry points (``skybatch.map_model``, ``skybatch.ingest``, ...) with Dask's
client convention: a ``client=`` argument wins; without one, the current Dask client
(``with Client(...):``, or the default client) is used; only when there is neither does the pipeline
start a cluster from its ``cluster`` setting.

Each function is the pipeline's own (same signature and documentation), called with that client.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from skybatch.pipeline.difference import difference as _difference
from skybatch.pipeline.ingest import ingest as _ingest
from skybatch.pipeline.map_model import map_model as _map_model
from skybatch.pipeline.preprocess import preprocess as _preprocess
from skybatch.pipeline.tile_ingest import ingest_tiles as _ingest_tiles

__all__ = ["map_model", "ingest", "preprocess", "ingest_tiles", "difference", "with_current_client"]

F = TypeVar("F", bound=Callable[..., Any])


def with_current_client(fn: F) -> F:
    """``fn`` with ``client=`` defaulting to :func:`skybatch.cluster.current_client` (``fn`` must take a
    ``client`` keyword; ``None`` there still means: start a cluster)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("client") is None and not _client_positional(fn, args):
            from skybatch.cluster import current_client

            kwargs["client"] = current_client()
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _client_positional(fn: Callable[..., Any], args: tuple[Any, ...]) -> bool:
    """True when ``client`` was given positionally (and is not None)."""
    import inspect

    names = list(inspect.signature(fn).parameters)
    i = names.index("client") if "client" in names else -1
    return 0 <= i < len(args) and args[i] is not None


map_model = with_current_client(_map_model)
ingest = with_current_client(_ingest)
preprocess = with_current_client(_preprocess)
ingest_tiles = with_current_client(_ingest_tiles)
difference = with_current_client(_difference)
