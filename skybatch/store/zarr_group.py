"""Opening a store's root Zarr group and rewriting its consolidated metadata, local or remote.

Shared by the tile store and the difference store: ``storage_options`` apply to remote URLs
(``s3://``...) only; a local path (or ``file://``) is opened as is.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import zarr

__all__ = ["storage_kwargs", "zarr_store", "open_root_group", "consolidate"]


def storage_kwargs(url: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """``{"storage_options": ...}`` for a remote ``url`` (for ``zarr.open_group`` / ``xr.open_zarr``), else ``{}``."""
    return {"storage_options": storage_options or {}} if "://" in url and not url.startswith("file://") else {}


def zarr_store(url: str, storage_options: dict[str, Any] | None = None, read_only: bool = False) -> Any:
    """A zarr store object for ``url``: the path itself locally, an FsspecStore for remote URLs."""
    if not storage_kwargs(url, storage_options):
        return url
    return zarr.storage.FsspecStore.from_url(url, storage_options=dict(storage_options or {}), read_only=read_only)


def open_root_group(
    url: str, storage_options: dict[str, Any] | None = None, mode: str = "r+", *, consolidated: bool = False
) -> zarr.Group:
    """The store's root Zarr group. Writers leave ``consolidated`` False: a group opened from
    consolidated metadata does not see children created after the metadata was written."""
    kw: dict[str, Any] = {"mode": mode, **storage_kwargs(url, storage_options)}
    if not consolidated:
        kw["use_consolidated"] = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return zarr.open_group(url, **kw)


def holds_schema(open_group: Callable[..., Any], url: str, storage_options: dict[str, Any] | None,
                 schema: str) -> bool:
    """True when ``open_group(url, storage_options, mode="r")`` opens a group whose ``skybatch_schema`` attr
    is ``schema``; False when nothing is there, an array is, or a group of another kind."""
    try:
        g = open_group(url, storage_options, mode="r")
    except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError, zarr.errors.ContainsArrayError,
            zarr.errors.NodeTypeValidationError):
        return False
    return g.attrs.get("skybatch_schema") == schema


def consolidate(url: str, storage_options: dict[str, Any] | None = None) -> None:
    """Rewrite the consolidated metadata of the whole store (so ``xr.open_zarr`` opens it in one read)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(zarr_store(url, storage_options))
