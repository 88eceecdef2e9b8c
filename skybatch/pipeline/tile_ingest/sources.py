"""Listing tile sources, and inspecting them on the workers (headers only, transient storage
errors retried; unusable files come back as set-aside records).
"""

from __future__ import annotations

from typing import Any

from skybatch.sources.base import SourceError
from skybatch.sources.tiles import TILE_SUFFIXES, inspect_tile_source
from skybatch.store.fsutil import expand_sources, filesystem
from skybatch.store.retry import retry_call


def expand_tile_sources(sources: list[str] | str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Expand paths, globs, directories and ``s3://`` URLs/prefixes into tile files.

    Directories and prefixes are searched recursively for names ending in
    :data:`~skybatch.sources.tiles.TILE_SUFFIXES`. The result is sorted and free of
    duplicates; a source that matches nothing is returned as given, so that planning reports it.
    """
    return expand_sources(sources, storage_options, suffixes=tuple(TILE_SUFFIXES), exclude=())


def _inspect_one(url: str, instrument: str | None, tile_pattern: str | None, options: dict[str, Any]):
    """Inspect one source on a worker; errors come back as a set-aside record.

    Transient storage errors are retried (:func:`skybatch.store.retry.retry_call`); when they
    persist, or the file cannot be opened at all, the record's reason is ``unreachable``.
    """

    def look():
        fs = filesystem(url, options)
        if not fs.exists(url):
            return {"url": url, "reason": "not-found", "message": f"{url}: no such file; check the path or URL"}
        return inspect_tile_source(fs, url, instrument=instrument, tile_pattern=tile_pattern)

    try:
        return retry_call(look, what=f"inspect {url}", base_delay_s=0.5)
    except SourceError as e:
        return {"url": url, "reason": e.reason, "message": str(e)}
    except OSError as e:  # retries spent (RetriesExhausted), or no permission / no such bucket
        return {"url": url, "reason": "unreachable",
                "message": f"{url}: cannot be read ({type(e).__name__}: {e}); check the bucket name, endpoint "
                "(--endpoint-url) and credentials, then re-run"}
    except Exception as e:  # a reader bug or a file nothing can parse
        return {"url": url, "reason": "corrupt", "message": f"{url}: cannot be read ({type(e).__name__}: {e})"}


def _inspect_batch(urls: list[str], instrument: str | None, tile_pattern: str | None, options: dict[str, Any]) -> list:
    return [_inspect_one(u, instrument, tile_pattern, options) for u in urls]
