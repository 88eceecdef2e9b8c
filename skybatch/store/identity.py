"""Store identity: which store a job may write into, and which manifest it may trust.

Every store skybatch creates carries, in its root attrs, ``skybatch_store``:
``{"uuid": ..., "kind": "spectra" | "tiles" | ..., "created": ISO time}``. Its
manifest (``URL.manifest/identity.json``) records the same uuid. A manifest
whose uuid is not the store's (the store was deleted and made again, or the
manifest was copied from elsewhere) is never trusted.

A target that exists and is not a skybatch store of the expected kind is
refused with :class:`ForeignTargetError`, whose message says what is there.
"""

from __future__ import annotations

import json
import time
import uuid
import warnings
from typing import Any

from skybatch.store.fsutil import filesystem, join, strip_protocol

__all__ = [
    "IDENTITY_ATTR",
    "JobRefused",
    "ForeignTargetError",
    "new_identity",
    "store_identity",
    "describe_target",
    "check_target",
]

#: Root attribute holding a store's identity.
IDENTITY_ATTR = "skybatch_store"


class JobRefused(ValueError):
    """A job that must not start (foreign target, lock held...); the CLI exits with code 2."""

    exit_code = 2


class ForeignTargetError(JobRefused):
    """The target path holds something this job did not create; nothing was written."""


def new_identity(kind: str) -> dict[str, Any]:
    """A fresh identity for a store of ``kind`` (a random uuid4)."""
    return {"uuid": uuid.uuid4().hex, "kind": kind, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _root_attrs(url: str, storage_options: dict[str, Any] | None) -> dict[str, Any] | None:
    """Root attrs of a Zarr group at ``url``; None if there is no Zarr group there."""
    import zarr

    from skybatch.store.spectra_store import zarr_store

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g = zarr.open_group(zarr_store(url, storage_options, read_only=True), mode="r")
            return dict(g.attrs)
    except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError):
        return None
    except Exception:  # noqa: BLE001 - an unreadable zarr.json: treated as "not a group"
        return None


def store_identity(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The identity of the skybatch store at ``url``, or None (nothing there, or not ours)."""
    attrs = _root_attrs(url, storage_options)
    if attrs is None:
        return None
    ident = attrs.get(IDENTITY_ATTR)
    return dict(ident) if isinstance(ident, dict) and ident.get("uuid") else None


def describe_target(url: str, storage_options: dict[str, Any] | None = None) -> str | None:
    """What is at ``url``, in words; None when nothing is there."""
    fs = filesystem(url, storage_options)
    path = url if "://" in url else strip_protocol(url)
    try:
        if not fs.exists(path):
            return None
        if fs.isfile(path):
            return f"a file of {fs.size(path)} bytes"
        names = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))
    except FileNotFoundError:
        return None
    attrs = _root_attrs(url, storage_options)
    if attrs is None:
        if not names:
            return None  # an empty directory (or prefix) holds nothing to lose
        shown = ", ".join(names[:8]) + (" ..." if len(names) > 8 else "")
        return f"a folder that is not a Zarr store ({len(names)} entries: {shown})"
    ident = attrs.get(IDENTITY_ATTR)
    arrays = [n for n in names if n not in ("zarr.json", ".zattrs", ".zgroup", "_skybatch")]
    shown = ", ".join(arrays[:8]) + (" ..." if len(arrays) > 8 else "")
    if isinstance(ident, dict) and ident.get("uuid"):
        return f"a skybatch {ident.get('kind')} store (uuid {ident.get('uuid')}) holding {shown}"
    if attrs.get("skybatch_schema"):
        return f"a skybatch store written before store identities ({attrs.get('skybatch_schema')}) holding {shown}"
    return f"a Zarr store that skybatch did not create, holding {shown or 'no arrays'}"


def check_target(url: str, kind: str, storage_options: dict[str, Any] | None = None,
                 *, adopt_schema: str | None = None) -> dict[str, Any] | None:
    """The identity of the store at ``url`` if a job of ``kind`` may write into it.

    Returns None when nothing is there (the job creates the store with mode ``w-``).
    adopt_schema: a store with this ``skybatch_schema`` attr but no identity (written by
        an older skybatch) is given one now; its manifest is not trusted.
    Raises ForeignTargetError naming what is there otherwise.
    """
    what = describe_target(url, storage_options)
    if what is None:
        return None
    ident = store_identity(url, storage_options)
    if ident is not None:
        if ident.get("kind") != kind:
            raise ForeignTargetError(
                f"{url} holds {what}, not a {kind} store; choose another output path"
            )
        return ident
    attrs = _root_attrs(url, storage_options)
    if adopt_schema and attrs is not None and attrs.get("skybatch_schema") == adopt_schema:
        import zarr

        from skybatch.store.spectra_store import zarr_store

        ident = new_identity(kind)
        if attrs.get("store_uuid"):  # tile stores carried a uuid before identities: keep it
            ident["uuid"] = str(attrs["store_uuid"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g = zarr.open_group(zarr_store(url, storage_options), mode="r+")
            g.attrs[IDENTITY_ATTR] = ident
        return ident
    raise ForeignTargetError(
        f"{url} already holds {what}; skybatch writes only into stores it created. Choose a new path "
        "for the output (nothing was written or deleted)"
    )


def manifest_identity_path(manifest_url: str) -> str:
    return join(manifest_url, "identity.json")


def read_manifest_identity(fs, manifest_url: str) -> dict[str, Any] | None:
    """The identity record of a manifest folder (None if it has none)."""
    p = manifest_identity_path(manifest_url)
    try:
        with fs.open(p, "rb") as f:
            return json.loads(f.read().decode())
    except (FileNotFoundError, ValueError):
        return None
