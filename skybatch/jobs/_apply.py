"""Settings shared by the jobs that map a saved model over a store (score, classify, embed)."""

from __future__ import annotations

from dataclasses import dataclass

from skybatch.pipeline.run_settings import StoreRunSettings

__all__ = ["ApplyConfig"]


@dataclass
class ApplyConfig(StoreRunSettings):
    """Settings of a job that maps a saved model over a store.

    store: the store to write into (preprocessed spectra; a tile store for a tile encoder; a difference
        store for a real/bogus model).
    model: a model directory from `skybatch run train`.
    batch_size: spectra per model call.
    cluster, progress, storage_options: see :class:`~skybatch.pipeline.run_settings.StoreRunSettings`.
    """

    store: str
    model: str
    batch_size: int = 1024

    def __post_init__(self) -> None:
        for name in ("store", "model"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name}: give a path or URL, got {getattr(self, name)!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size: must be a positive integer, got {self.batch_size!r}")
