"""The settings section shared by the configs of the jobs that run chunk tasks over one store (train, apply
a saved model, generate): where the tasks run, a progress bar, and the store's fsspec options.

Pure Python: no Dask, Prefect or array import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["StoreRunSettings"]


@dataclass(kw_only=True)
class StoreRunSettings:
    """Base of the configs of the jobs that run chunk tasks over one store. Keyword-only settings.

    cluster: a cluster profile name, a YAML path, or a scheduler address (used when no Dask client
        is given and none is current).
    progress: show a progress bar on the terminal.
    storage_options: fsspec options of the store (credentials, endpoint).
    """

    cluster: str = "auto"
    progress: bool = True
    storage_options: dict[str, Any] = field(default_factory=dict)
