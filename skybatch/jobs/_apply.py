"""Settings shared by the jobs that map a saved model over a store (score, classify, embed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ApplyConfig"]


@dataclass
class ApplyConfig:
    """Settings of a job that maps a saved model over a store.

    store: the store to write into (preprocessed spectra; a tile store for a tile encoder; a difference
        store for a real/bogus model).
    model: a model directory from `skybatch run train`.
    batch_size: spectra per model call.
    cluster: a cluster profile name, a YAML path, or a scheduler address.
    progress: show a progress bar on the terminal.
    storage_options: fsspec options of the store (credentials, endpoint).
    """

    store: str
    model: str
    batch_size: int = 1024
    cluster: str = "auto"
    progress: bool = True
    storage_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("store", "model"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name}: give a path or URL, got {getattr(self, name)!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size: must be a positive integer, got {self.batch_size!r}")
