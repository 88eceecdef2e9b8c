"""One writer at a time: an exclusive lock beside a store (``URL.lock``).

The lock is a small JSON object: owner (user), host, pid (and the process's
start time, so a reused pid is not mistaken for the holder), the job, when it
was taken and a heartbeat refreshed every ``heartbeat_every`` seconds while the
job runs.

- Local disk: created with ``O_CREAT | O_EXCL`` (atomic on POSIX filesystems).
- S3: a conditional ``PutObject`` with ``If-None-Match: *`` (honoured by AWS S3
  since 2024 and by moto's server); heartbeats, take-overs and release are
  conditional on the object's ETag (``If-Match``), so a writer never removes a
  lock another writer holds.

A lock is stale when its holder ran on this host and that process is gone
(``kill -9``), or when its heartbeat is older than ``stale_after`` seconds
(another host). A stale lock is taken over with a warning. A live lock makes
:meth:`StoreLock.acquire` wait up to ``wait`` seconds (``--wait-lock``), then
raise :class:`LockHeldError` naming the holder.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from skybatch.store.fsutil import filesystem, is_remote, strip_protocol
from skybatch.store.identity import JobRefused

__all__ = ["StoreLock", "LockHeldError", "lock_url"]


#: Locks held by this process: (lock url, thread id) -> the holding StoreLock (re-entrant per thread).
_HELD: dict[tuple[str, int], StoreLock] = {}
_HELD_GUARD = threading.Lock()


class LockHeldError(JobRefused):
    """Another live writer holds the store's lock; the message names it."""


def lock_url(store_url: str) -> str:
    """Where the lock of the store at ``store_url`` lives."""
    return store_url.rstrip("/") + ".lock"


def _proc_start(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    now = _proc_start(pid)
    return start is None or now is None or now == start


@dataclass
class StoreLock:
    """The exclusive writer lock of one store (use as a context manager).

    store_url: the store (the lock is ``store_url + ".lock"``).
    job: what the holder does (``ingest``, ``preprocess``...), for messages.
    wait: seconds to wait for a live holder before giving up (0 = fail at once; None =
        ``$SKYBATCH_WAIT_LOCK``, which ``--wait-lock`` sets, else 0).
    stale_after: a heartbeat older than this (seconds) marks the lock stale.
    heartbeat_every: seconds between heartbeats while held.
    """

    store_url: str
    storage_options: dict[str, Any] | None = None
    job: str = ""
    wait: float | None = None
    stale_after: float = 120.0
    heartbeat_every: float = 10.0
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    _etag: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _outer: StoreLock | None = None
    lost: bool = False

    @property
    def url(self) -> str:
        return lock_url(self.store_url)

    @property
    def held(self) -> bool:
        """True while this object holds the lock (acquired, not released, not taken over)."""
        if self._outer is not None:
            return self._outer.held
        return self._thread is not None and not self.lost

    # -- record ---------------------------------------------------------------------------
    def _record(self, started: str | None = None) -> bytes:
        pid = os.getpid()
        return json.dumps({
            "token": self.token, "owner": getpass.getuser(), "host": socket.gethostname(), "pid": pid,
            "pid_start": _proc_start(pid), "job": self.job,
            "started": started or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "heartbeat": time.time(),
        }).encode()

    def _stale(self, rec: dict[str, Any] | None, age_hint: float) -> str | None:
        """Why the lock held by ``rec`` is stale, or None if it looks alive."""
        if rec is None:
            return "unreadable lock record" if age_hint > 10 else None
        if rec.get("host") == socket.gethostname() and not _pid_alive(int(rec.get("pid", -1)), rec.get("pid_start")):
            return f"process {rec.get('pid')} on {rec.get('host')} is gone"
        age = time.time() - float(rec.get("heartbeat", 0))
        if age > self.stale_after:
            return f"no heartbeat for {age:.0f} s"
        return None

    @staticmethod
    def _describe(rec: dict[str, Any] | None) -> str:
        if rec is None:
            return "an unknown writer"
        age = time.time() - float(rec.get("heartbeat", 0))
        return (f"{rec.get('job') or 'a job'} of {rec.get('owner')} on {rec.get('host')} (pid {rec.get('pid')}, "
                f"since {rec.get('started')}, heartbeat {age:.0f} s ago)")

    # -- backends ---------------------------------------------------------------------------
    def _s3(self):
        fs = filesystem(self.url, self.storage_options)
        bucket, key = strip_protocol(self.url).split("/", 1)
        return fs, bucket, key

    def _try_create(self) -> bool:
        data = self._record()
        if not is_remote(self.url):
            path = strip_protocol(self.url)
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            return True
        fs, bucket, key = self._s3()
        try:
            out = fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
        except Exception as e:  # noqa: BLE001 - s3fs wraps botocore errors differently across versions
            if _precondition_failed(e):
                return False
            raise
        self._etag = out.get("ETag")
        return True

    def _read(self) -> tuple[dict[str, Any] | None, float, str | None, bool]:
        """(record, age of the object in s, etag, exists)."""
        if not is_remote(self.url):
            path = strip_protocol(self.url)
            try:
                with open(path, "rb") as f:
                    raw = f.read()
                age = time.time() - os.path.getmtime(path)
            except FileNotFoundError:
                return None, 0.0, None, False
            try:
                return json.loads(raw.decode()), age, None, True
            except ValueError:
                return None, age, None, True
        fs, bucket, key = self._s3()
        try:
            head = fs.call_s3("head_object", Bucket=bucket, Key=key)
            raw = fs.cat_file(f"{bucket}/{key}")
        except FileNotFoundError:
            return None, 0.0, None, False
        except Exception as e:  # noqa: BLE001
            if "NoSuchKey" in str(e) or "404" in str(e) or "Not Found" in str(e):
                return None, 0.0, None, False
            raise
        lm = head.get("LastModified")
        age = time.time() - lm.timestamp() if lm is not None else 0.0
        try:
            return json.loads(raw.decode()), age, head.get("ETag"), True
        except ValueError:
            return None, age, head.get("ETag"), True

    def _remove_stale(self, rec: dict[str, Any] | None, etag: str | None) -> None:
        if not is_remote(self.url):
            path = strip_protocol(self.url)
            aside = f"{path}.stale-{self.token}"
            try:
                os.rename(path, aside)
            except FileNotFoundError:
                return
            try:  # another taker may have replaced it between our read and our rename: put theirs back
                with open(aside, "rb") as f:
                    now = json.loads(f.read().decode() or "null")
            except ValueError:
                now = None
            if rec is not None and (now or {}).get("token") != rec.get("token"):
                os.rename(aside, path)
                return
            os.remove(aside)
            return
        fs, bucket, key = self._s3()
        try:
            fs.call_s3("delete_object", Bucket=bucket, Key=key, **({"IfMatch": etag} if etag else {}))
        except Exception as e:  # noqa: BLE001
            if not _precondition_failed(e):
                raise

    # -- public -----------------------------------------------------------------------------
    def acquire(self) -> StoreLock:
        """Take the lock (waiting up to ``wait`` s for a live holder, taking over a stale one)."""
        key = (self.url, threading.get_ident())
        with _HELD_GUARD:
            outer = _HELD.get(key)
        if outer is not None and outer.held:  # the same thread already holds it (a job inside a job)
            self._outer = outer
            return self
        if self.wait is None:
            try:
                self.wait = float(os.environ.get("SKYBATCH_WAIT_LOCK", "0") or 0)
            except ValueError:
                self.wait = 0.0
        deadline = time.monotonic() + max(0.0, float(self.wait))
        told = False
        while True:
            if self._try_create():
                break
            rec, age, etag, exists = self._read()
            if not exists:
                continue
            if rec is not None and rec.get("token") == self.token:  # our own put, whose reply was lost and retried
                self._etag = etag
                break
            why = self._stale(rec, age)
            if why is not None:
                print(f"warning: taking over the stale lock {self.url} held by {self._describe(rec)}: {why}",
                      file=sys.stderr)
                self._remove_stale(rec, etag)
                continue
            if time.monotonic() >= deadline:
                raise LockHeldError(
                    f"{self.store_url} is being written by {self._describe(rec)}; one writer at a time. Wait for it "
                    f"to finish (or pass --wait-lock SECONDS to wait), or write to another store. If that job is "
                    f"really gone, its lock {self.url} expires {self.stale_after:.0f} s after its last heartbeat"
                )
            if not told:
                print(f"waiting up to {self.wait:g} s for the lock of {self.store_url}, held by {self._describe(rec)}",
                      file=sys.stderr)
                told = True
            time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="skybatch-lock-heartbeat", daemon=True)
        self._thread.start()
        with _HELD_GUARD:
            _HELD[key] = self
        return self

    def _beat(self) -> None:
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        while not self._stop.wait(self.heartbeat_every):
            try:
                rec, _age, etag, _exists = self._read()
                if rec is None or rec.get("token") != self.token:
                    self.lost = True
                    print(f"warning: lost the lock {self.url} (taken over by {self._describe(rec)})", file=sys.stderr)
                    return
                data = self._record(rec.get("started", started))
                if not is_remote(self.url):
                    path = strip_protocol(self.url)
                    tmp = f"{path}.hb-{self.token}"
                    with open(tmp, "wb") as f:
                        f.write(data)
                    os.replace(tmp, path)
                else:
                    fs, bucket, key = self._s3()
                    out = fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, IfMatch=etag)
                    self._etag = out.get("ETag")
            except Exception:  # noqa: BLE001 - a missed heartbeat is retried at the next beat
                continue

    def release(self) -> None:
        """Stop the heartbeat and remove the lock if it is still ours."""
        if self._outer is not None:
            self._outer = None
            return
        with _HELD_GUARD:
            for k in [k for k, v in _HELD.items() if v is self]:
                del _HELD[k]
        if self._thread is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        try:
            rec, _age, etag, exists = self._read()
        except Exception:  # noqa: BLE001 - the lock will go stale on its own
            return
        if not exists or rec is None or rec.get("token") != self.token:
            return
        if not is_remote(self.url):
            try:
                os.remove(strip_protocol(self.url))
            except FileNotFoundError:
                pass
            return
        fs, bucket, key = self._s3()
        try:
            fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=etag)
        except Exception:  # noqa: BLE001
            pass

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _precondition_failed(e: Exception) -> bool:
    s = f"{type(e).__name__} {e}"
    return "PreconditionFailed" in s or "412" in s or "precondition" in s.lower() or isinstance(e, FileExistsError)
