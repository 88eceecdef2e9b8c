"""What the CLI prints after a job: how to open what it wrote (only what exists)."""

from __future__ import annotations


def store_exists(url: str, group: str | None = None) -> bool:
    """True when ``url`` (or its ``group``) holds Zarr metadata: a store the job created."""
    import fsspec

    base = url.rstrip("/") + (f"/{group}" if group else "")
    try:
        fs, path = fsspec.core.url_to_fs(base)
        return fs.exists(f"{path}/zarr.json")
    except Exception:  # noqa: BLE001 - unreachable: say nothing rather than something wrong
        return False


def open_hint(url: str, group: str | None = None) -> str:
    """``open it: ...`` for a store that exists, else a line saying that nothing was written."""
    if not store_exists(url, group):
        return f"no store was written at {url}"
    g = f", group={group!r}" if group else ""
    return f"open it: import skybatch; ds = skybatch.open_store({url!r}{g})" if not group else \
        f"open it: import xarray as xr; ds = xr.open_zarr({url!r}{g})"
