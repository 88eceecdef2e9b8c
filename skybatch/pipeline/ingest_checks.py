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
  program) with another row, naming examples and their sources; it reads the keys in
  blocks as int64/int32 codes, in passes over TARGETID residues past 4M rows, so the
  driver's memory does not grow with the number of spectra.
"""

from __future__ import annotations

import hashlib
import traceback
from typing import Any

import numpy as np

from skybatch.sources.base import SourceError, SourceInfo
from skybatch.store.fsutil import filesystem
from skybatch.store.retry import RetriesExhausted, retry_call

__all__ = ["DUPLICATE_BLOCK_ROWS", "DUPLICATE_EXAMPLE_ROWS", "DUPLICATE_PASS_ROWS", "inspect_batch", "inspect_one", "duplicate_files",
           "duplicate_targets"]

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


#: Rows read per block by :func:`duplicate_targets` (TARGETID, survey, program of 16,384 spectra): survey and
#: program come back as Python strings (~60 bytes a row) before they are coded, so a block is what the
#: driver's peak grows by; 16,384 keeps it at ~4 MB (65,536 held ~15 MB: a store of 10^5 spectra then
#: peaked 20 % above one of 10^4; 8,192 took ~1.3x the time in per-block overhead).
DUPLICATE_BLOCK_ROWS = 1 << 14
#: Rows of one example key whose ``source`` is read (a key repeated N times would cost N chunk reads).
DUPLICATE_EXAMPLE_ROWS = 16
#: Rows of keys held at once by :func:`duplicate_targets` (24 bytes each); larger stores take passes.
DUPLICATE_PASS_ROWS = 1 << 22


class _Codes:
    """Strings -> int32 codes, in order of first appearance (a few survey/program names per store)."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}

    def encode(self, values: np.ndarray) -> np.ndarray:
        uniq, inv = np.unique(np.asarray(values), return_inverse=True)
        codes = np.array([self.index.setdefault(str(u), len(self.index)) for u in uniq], np.int32)
        return codes[inv.ravel()]

    def name(self, code: int) -> str:
        return next(k for k, v in self.index.items() if v == code)


def _key_blocks(targetid: Any, survey: Any, program: Any, block: int, sv: _Codes, pg: _Codes):
    """(start, targetid int64, survey code, program code) per block of ``block`` rows."""
    n = int(targetid.shape[0])
    for a in range(0, n, block):
        b = min(n, a + block)
        yield a, np.asarray(targetid[a:b], np.int64), sv.encode(survey[a:b]), pg.encode(program[a:b])


def _duplicates_in(rows: np.ndarray, t: np.ndarray, s: np.ndarray, p: np.ndarray, max_examples: int):
    """Rows (global indices, ascending) and keys of one pass: the number of rows whose key repeats, and for
    the first ``max_examples`` repeated keys (by first row) (first row, key, member rows)."""
    order = np.lexsort((p, s, t))
    ts, ss, ps = t[order], s[order], p[order]
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
    out = []
    for i in np.sort(first)[:max_examples]:  # rows ascend, so the earliest keys come first
        k = at[i]
        out.append((int(rows[k]), (int(t[k]), int(s[k]), int(p[k])), rows[group == group[k]]))
    return n, out


def duplicate_targets(targetid: Any, survey: Any, program: Any, source: Any, max_examples: int = 5,
                      block: int = DUPLICATE_BLOCK_ROWS, pass_rows: int = DUPLICATE_PASS_ROWS) -> tuple[int, list[str]]:
    """Rows (with TARGETID > 0) sharing (TARGETID, survey, program) with another row.

    ``targetid``, ``survey``, ``program`` and ``source`` (n,) are arrays or Zarr arrays; the first three
    are read ``block`` rows at a time, survey and program kept as int32 codes, so the keys take 16 bytes
    a row, never a Python string per row. A store of more than ``pass_rows`` rows is checked in passes,
    each keeping the rows of one TARGETID residue class (duplicates share a TARGETID): the memory held
    stays below ~``pass_rows`` x 24 bytes (100 MB) whatever the number of spectra. Vectorised (one sort
    per pass). Of ``source`` only the rows of the example targets are read, at most
    :data:`DUPLICATE_EXAMPLE_ROWS` per example (the sources of the first ones, then how many more rows).

    Returns (number of such rows, up to ``max_examples`` lines naming the key and its sources, in the
    order their first row appears in the store).
    """
    targetid, survey, program = (x if hasattr(x, "shape") else np.asarray(x) for x in (targetid, survey, program))
    n_rows = int(targetid.shape[0])
    if n_rows == 0:
        return 0, []
    n_pass = max(1, -(-n_rows // max(1, pass_rows)))
    sv, pg = _Codes(), _Codes()
    total, found = 0, []
    for part in range(n_pass):
        rows_l, t_l, s_l, p_l = [], [], [], []
        for a, t, s, p in _key_blocks(targetid, survey, program, block, sv, pg):
            keep = (t > 0) & (t % n_pass == part)
            idx = np.flatnonzero(keep)
            rows_l.append(idx + a)
            t_l.append(t[idx])
            s_l.append(s[idx])
            p_l.append(p[idx])
        rows = np.concatenate(rows_l)
        if rows.size:
            n, ex = _duplicates_in(rows, np.concatenate(t_l), np.concatenate(s_l), np.concatenate(p_l), max_examples)
            total += n
            found += ex
    examples: list[str] = []
    for _, (t0, s0, p0), members in sorted(found, key=lambda e: e[0])[:max_examples]:
        head = members[:DUPLICATE_EXAMPLE_ROWS]
        src = source.oindex[head] if hasattr(source, "oindex") else np.asarray(source)[head]
        where = sorted({str(x) for x in np.asarray(src).tolist()})
        more = f" (and {members.size - head.size} more rows)" if members.size > head.size else ""
        examples.append(f"TARGETID {t0} (survey {sv.name(s0)!r}, program {pg.name(p0)!r}) in {', '.join(where)}{more}")
    return total, examples
