"""Filesystem plumbing: local paths and ``s3://`` URLs through fsspec.

S3 access follows the usual AWS rules (environment, ``~/.aws``); with no
credentials configured, access is anonymous (public buckets such as DESI's
``s3://desidata``). ``AWS_ENDPOINT_URL`` (or ``--endpoint-url``) selects
another S3 server. Credentials never appear in logs, attrs or manifests:
:func:`public_options` strips them.
"""

from __future__ import annotations

import functools
import glob as _glob
import os
import uuid
from dataclasses import dataclass, field
from typing import Any

import fsspec

__all__ = [
    "s3_options",
    "filesystem",
    "is_remote",
    "join",
    "atomic_write_bytes",
    "expand_sources",
    "public_options",
    "strip_protocol",
    "StorageSettings",
]

_SECRET_KEYS = {"key", "secret", "token", "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "password"}


@functools.lru_cache(maxsize=1)
def _have_aws_credentials() -> bool:
    """Whether AWS credentials are configured (looked up once per process: a botocore session is slow)."""
    if os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_PROFILE"):
        return True
    try:
        import botocore.session

        return botocore.session.get_session().get_credentials() is not None
    except Exception:
        return False


def s3_options(endpoint_url: str | None = None, anon: bool | None = None, **extra: Any) -> dict[str, Any]:
    """fsspec ``storage_options`` for S3.

    endpoint_url: an S3-compatible server (default: ``$AWS_ENDPOINT_URL`` or AWS).
    anon: ``None`` means anonymous exactly when no AWS credentials are configured.
    """
    opts: dict[str, Any] = dict(extra)
    endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint_url:
        opts["endpoint_url"] = endpoint_url
    opts["anon"] = (not _have_aws_credentials()) if anon is None else bool(anon)
    return opts


def is_remote(url: str) -> bool:
    """True for URLs with a non-local protocol (``s3://``, ``gs://``, ``http(s)://``...)."""
    return "://" in url and not url.startswith("file://")


def strip_protocol(url: str) -> str:
    return url.split("://", 1)[1] if "://" in url else url


def filesystem(url: str, storage_options: dict[str, Any] | None = None):
    """The fsspec filesystem for ``url`` (``storage_options`` only used for remote URLs)."""
    if is_remote(url):
        proto = url.split("://", 1)[0]
        opts = dict(storage_options or {})
        if proto == "s3" and "anon" not in opts:
            opts = {**s3_options(), **opts}
        return fsspec.filesystem(proto, **opts)
    return fsspec.filesystem("file")


def join(base: str, *parts: str) -> str:
    """Join URL or path components with '/'."""
    out = base.rstrip("/")
    for p in parts:
        out = f"{out}/{p.strip('/')}"
    return out


def atomic_write_bytes(fs, path: str, data: bytes) -> None:
    """Write ``data`` so that readers see either the old or the new file, never half.

    Local files: write a temporary sibling and ``os.replace`` it. Object stores
    (S3) replace objects atomically on PUT.
    """
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if "file" in protocols or "local" in protocols:
        path = strip_protocol(path)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    else:
        fs.pipe_file(path, data)


def public_options(storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """``storage_options`` with credentials removed at the top level and redacted at any depth
    (``client_kwargs``, ``config_kwargs`` ...; :func:`skybatch.secrets.redact`): safe for attrs and logs."""
    from skybatch.secrets import redact

    return redact({k: v for k, v in (storage_options or {}).items() if k.lower() not in _SECRET_KEYS})


def expand_sources(
    sources: list[str] | str,
    storage_options: dict[str, Any] | None = None,
    suffixes: tuple[str, ...] = (".fits", ".fits.gz"),
    exclude: tuple[str, ...] = ("redrock-",),
) -> list[str]:
    """Expand local paths, directories, globs and ``s3://`` URLs/prefixes into data files.

    Directories and prefixes are searched recursively for names ending in
    ``suffixes`` (case-insensitive); files whose names start with one of
    ``exclude`` (companions such as ``redrock-*.fits``, found by readers next to
    their coadd) are left out. The result is sorted and free of duplicates;
    a source that matches nothing is returned as given so that planning can
    report it (rather than silently dropping it).
    """
    if isinstance(sources, str):
        sources = [sources]
    out: list[str] = []
    for src in sources:
        found: list[str] = []
        if is_remote(src):
            fs = filesystem(src, storage_options)
            proto = src.split("://", 1)[0]
            if any(c in src for c in "*?["):
                found = [f"{proto}://{p}" for p in fs.glob(src)]
            else:
                try:
                    isdir = fs.isdir(src)
                except Exception:
                    isdir = False
                if isdir:
                    found = [f"{proto}://{p}" for p in fs.find(src) if p.lower().endswith(suffixes)]
                else:
                    found = [src]
        else:
            path = os.path.expanduser(src)
            if any(c in path for c in "*?["):
                found = sorted(_glob.glob(path, recursive=True))
            elif os.path.isdir(path):
                for root, _dirs, files in os.walk(path):
                    found += [os.path.join(root, f) for f in files if f.lower().endswith(suffixes)]
            else:
                found = [path]
            found = [os.path.abspath(p) for p in found]
        for f in found:
            name = f.rsplit("/", 1)[-1]
            if any(name.startswith(x) for x in exclude):
                continue
            out.append(f)
        if not found:
            out.append(src)
    return sorted(dict.fromkeys(out))


@dataclass(kw_only=True)
class StorageSettings:
    """Base of the job configs that read sources and write a store: where the fsspec options for the job's
    inputs and its output store come from (S3 defaults worked out once). Keyword-only settings.

    endpoint_url: an S3-compatible endpoint for sources and store (default: AWS, or ``$AWS_ENDPOINT_URL``).
    anon: anonymous S3 access; ``None`` = anonymous when no credentials are configured.
    source_options / store_options: extra fsspec options for sources / store.
    """

    endpoint_url: str | None = None
    anon: bool | None = None
    source_options: dict[str, Any] = field(default_factory=dict)
    store_options: dict[str, Any] = field(default_factory=dict)

    def _s3(self) -> dict[str, Any]:
        return s3_options(self.endpoint_url, self.anon)

    def source_storage_options(self) -> dict[str, Any]:
        """fsspec options for reading the sources."""
        return {**self._s3(), **self.source_options}

    def store_storage_options(self) -> dict[str, Any]:
        """fsspec options for the output store."""
        return {**self._s3(), **self.store_options}
