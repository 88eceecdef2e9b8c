"""What every job module shares: running on the right client, and reports that wrap a job's dict result."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = ["run_job", "ResultReport"]

C = TypeVar("C")
R = TypeVar("R")


def run_job(run_with_client: Callable[[C, Any], R], config: C, client: Any = None) -> R:
    """``run_with_client(config, client)`` on ``client`` if given, else on the current Dask client
    (:func:`skybatch.cluster.current_client`), else on a cluster started from ``config.cluster`` (closed
    when the job ends)."""
    from skybatch.cluster import client_for

    with client_for(client, getattr(config, "cluster", "auto")) as c:
        return run_with_client(config, c)


@dataclass
class ResultReport:
    """The outcome of a job whose pipeline function returns a mapping.

    store: the store the job read or wrote (``None`` when it has none).
    model: the model directory it used or wrote (``None`` when it has none).
    exit_code: 0 done, 1 chunks failed (re-run to retry), 3 done with inputs set aside.
    failed_chunks: ``[{"chunk": ..., "error": ...}]`` of the chunks that failed.
    details: the rest of the pipeline's result, by the pipeline's own keys.
    """

    store: str | None = None
    model: str | None = None
    exit_code: int = 0
    failed_chunks: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_result(cls, result: dict[str, Any]) -> Any:
        """Wrap a pipeline result dict (its ``map_model`` report's failed chunks count as the job's)."""
        d = dict(result)
        failed = d.pop("failed_chunks", None)
        if failed is None:
            failed = list((d.get("map_model") or {}).get("failed_chunks") or [])
        return cls(store=d.pop("store", None), model=d.pop("model", d.get("model_dir")),
                   exit_code=int(d.pop("exit_code", 0)), failed_chunks=list(failed), details=d)

    def to_dict(self) -> dict[str, Any]:
        """The pipeline's result mapping again (what the flows return and publish)."""
        return {"store": self.store, "model": self.model, **self.details, "exit_code": self.exit_code,
                "failed_chunks": self.failed_chunks}

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_dict().get(key, default)
