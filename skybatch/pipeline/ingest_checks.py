"""Ingest's checks of its inputs: inspection with verified checksums, duplicate files, duplicate targets.

- :func:`inspect_batch` runs on the workers. Each source is inspected by its
  reader, and its FITS ``CHECKSUM``/``DATASUM`` keywords are verified: by the DESI
  reader on the bytes it reads anyway (the small HDUs here, the flux images in the
  chunk read; RESOLUTION, never read, is never verified), by the other readers in
  one pass over the (small) file; a known decoding failure
  (:class:`~skybatch.sources.base.SourceError`: truncated, corrupt, missing HDU,
  off-grid, checksum...) comes back as a set-aside record, network trouble is
  retried and then reported ``unreachable``, and anything else (a reader bug)
  comes back as a failure with its traceback, never as "corrupt".
- :func:`duplicate_files` finds one file reached under two names (same bytes);
  the copy is read once and the others are set aside as ``duplicate``.
- :func:`duplicate_targets` counts rows of a store sharing (TARGETID, survey,
  program) with another row, naming examples and their sources.
"""

from __future__ import annotations

import hashlib
import traceback
from typing import Any

import numpy as np

from skybatch.sources.base import SourceError, SourceInfo
from skybatch.store.fsutil import filesystem
from skybatch.store.retry import RetriesExhausted, retry_call

__all__ = ["inspect_batch", "inspect_one", "duplicate_files", "duplicate_targets"]

def _reader_for(fs, url: str, fmt: str, verify_checksums: bool = False):
    """The reader of ``url`` (format detected from its headers when ``auto``).

    A reader that verifies checksums on the bytes it reads (``checksums_in_read``) comes back
    as its own copy with ``verify_checksums`` set.
    """
    import copy

    from skybatch.sources import detect_format, get_reader

    if fmt == "auto":
        fmt = detect_format(fs, url)
    reader = get_reader(fmt)
    if getattr(reader, "checksums_in_read", False):
        reader = copy.copy(reader)
        reader.verify_checksums = bool(verify_checksums)  # type: ignore[attr-defined]
    return reader


def _verify(fs, info: SourceInfo) -> None:
    from skybatch.sources import _fits
    from skybatch.sources import _fitssum

    with _fits.open_source(fs, info.url, info.size) as f:
        lay = _fits.scan_fits(f, info.url, info.size)
        _fitssum.verify_checksums(f, lay, info.url)


def inspect_one(url: str, fmt: str, keep_nonscience: bool, options: dict[str, Any],
                verify_checksums: bool = True) -> SourceInfo | dict[str, Any]:
    """Inspect one source (worker side): a SourceInfo, a set-aside record, or a failure record.

    Transient storage errors are retried (:func:`skybatch.store.retry.retry_call`); when they persist,
    or the file cannot be opened at all, the record's reason is ``unreachable``."""

    def look() -> SourceInfo | dict[str, Any]:
        fs = filesystem(url, options)
        if not fs.exists(url):
            return {"url": url, "reason": "not-found", "message": f"{url}: no such file; check the path or URL"}
        reader = _reader_for(fs, url, fmt, verify_checksums)
        info = reader.inspect(fs, url, keep_nonscience=keep_nonscience)
        if verify_checksums and not getattr(reader, "checksums_in_read", False):
            _verify(fs, info)  # formats without in-read checks (small files): one pass over the file
        return info

    try:
        return retry_call(look, what=f"inspect {url}", base_delay_s=0.5)
    except SourceError as e:
        return {"url": url, "reason": e.reason, "message": str(e)}
    except OSError as e:  # retries spent (RetriesExhausted), or no such bucket / no permission
        cause: BaseException = e.last if isinstance(e, RetriesExhausted) else e
        return {
            "url": url, "reason": "unreachable",
            "message": f"{url}: cannot be read ({type(cause).__name__}: {cause}); check the bucket name, "
            "endpoint (--endpoint-url) and credentials, then re-run",
        }
    except Exception as e:  # noqa: BLE001 - a bug, not bad input: reported as a failure with its traceback
        return {"url": url, "failed": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}


def inspect_batch(urls: list[str], fmt: str, keep_nonscience: bool, options: dict[str, Any],
                  verify_checksums: bool = True) -> list:
    return [inspect_one(u, fmt, keep_nonscience, options, verify_checksums) for u in urls]


def _content_hash(url: str, options: dict[str, Any], block: int = 1 << 22) -> str:
    fs = filesystem(url, options)
    h = hashlib.sha256()
    with fs.open(url, "rb") as f:
        while True:
            b = f.read(block)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def _fits_identity(checksum: str | None) -> str | None:
    """The content identity of a file whose HDUs all carry FITS CHECKSUM/DATASUM (``fits:...``), else None."""
    c = str(checksum or "")
    return c if c.startswith("fits:") else None


def duplicate_files(new: list[SourceInfo], planned: list[dict[str, Any]], options: dict[str, Any],
                    client=None) -> dict[str, str]:
    """New sources whose bytes equal another source's: {duplicate url: the url that is read}.

    Files of equal size, format and row count whose identities come from their FITS
    ``CHECKSUM``/``DATASUM`` keywords (``SourceInfo.checksum`` = ``fits:...``, learnt from the
    headers) are the same when those agree: nothing is read (the data checksums are verified
    when the file is read). Only same-size files without FITS checksums are hashed (read whole),
    on the cluster's workers when ``client`` is given (else here), so the usual case costs
    nothing. ``planned`` rows (url, size, format, n_rows, checksum) were planned by earlier runs
    and always win.
    """
    groups: dict[tuple, list[tuple[str, bool, str | None]]] = {}
    for r in planned:
        groups.setdefault((int(r["size"]), r["format"], int(r["n_rows"])), []).append(
            (r["url"], True, _fits_identity(r.get("checksum"))))
    for i in new:
        groups.setdefault((int(i.size), i.format, int(i.n_rows)), []).append((i.url, False, _fits_identity(i.checksum)))
    candidates = [m for m in groups.values() if len(m) > 1 and not all(old for _, old, _ in m)]
    to_hash = sorted({url for m in candidates for url, _, ident in m if ident is None})
    hashes: dict[str, str | None] = {}
    if to_hash and client is not None:
        futures = client.map(_hash_or_none, to_hash, options=options, pure=False)
        hashes = dict(zip(to_hash, client.gather(futures)))
    else:
        hashes = {u: _hash_or_none(u, options) for u in to_hash}
    out: dict[str, str] = {}
    for members in candidates:
        seen: dict[str, str] = {}
        for url, _old, ident in sorted(members, key=lambda m: (not m[1], m[0])):  # planned first, then by name
            h = ident if ident is not None else hashes.get(url)
            if h is None:
                continue
            if h in seen:
                out[url] = seen[h]
            else:
                seen[h] = url
    return out


def _hash_or_none(url: str, options: dict[str, Any]) -> str | None:
    """sha256 of the file's bytes (worker side), None when it cannot be read."""
    try:
        return _content_hash(url, options)
    except OSError:
        return None


def duplicate_targets(targetid: np.ndarray, survey: np.ndarray, program: np.ndarray, source: Any,
                      max_examples: int = 5) -> tuple[int, list[str]]:
    """Rows (with TARGETID > 0) sharing (TARGETID, survey, program) with another row.

    Vectorised (one sort of the n rows, no per-row Python): the end-of-ingest check of a DR1-size
    store stays a fraction of the ingest. ``source`` (n,) may be an array or a Zarr array; of a
    Zarr array only the rows of the example targets are read.

    Returns (number of such rows, up to ``max_examples`` lines naming the key and its sources, in the
    order their first row appears in the store).
    """
    tid = np.asarray(targetid, np.int64)
    rows = np.flatnonzero(tid > 0)
    if rows.size == 0:
        return 0, []
    surveys, sv = np.unique(np.asarray(survey)[rows], return_inverse=True)
    programs, pg = np.unique(np.asarray(program)[rows], return_inverse=True)
    t, sv, pg = tid[rows], sv.ravel(), pg.ravel()
    order = np.lexsort((pg, sv, t))
    ts, ss, ps = t[order], sv[order], pg[order]
    same = (ts[1:] == ts[:-1]) & (ss[1:] == ss[:-1]) & (ps[1:] == ps[:-1])  # row i+1 repeats row i's key
    dup_sorted = np.zeros(order.size, bool)
    dup_sorted[1:] |= same
    dup_sorted[:-1] |= same
    n = int(dup_sorted.sum())
    if not n:
        return 0, []
    group = np.empty(order.size, np.int64)
    group[order] = np.cumsum(np.concatenate([[True], ~same])) - 1  # one id per distinct key
    dup = np.empty(order.size, bool)
    dup[order] = dup_sorted
    at = np.flatnonzero(dup)
    _, first = np.unique(group[at], return_index=True)
    examples: list[str] = []
    for i in np.sort(first)[:max_examples]:
        k = at[i]
        members = rows[group == group[k]]
        src = source.oindex[members] if hasattr(source, "oindex") else np.asarray(source)[members]
        where = sorted({str(s) for s in np.asarray(src).tolist()})
        examples.append(f"TARGETID {int(t[k])} (survey {str(surveys[sv[k]])!r}, program {str(programs[pg[k]])!r}) "
                        f"in {', '.join(where)}")
    return n, examples
