"""Two writers at once, and a worker killed mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import numpy as np
import pytest
import xarray as xr

from skybatch.pipeline.ingest import ingest

from ._util import DRIVER, PY, make_survey


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    return make_survey(tmp_path_factory.mktemp("cc-survey"), n_healpix=4, per_file=20, seed=13)


def _start(store: str, files: list[str], wait: float) -> subprocess.Popen:
    env = {**os.environ, "DRIVER_WAIT_LOCK": str(wait), "DRIVER_CHUNK": "8"}
    return subprocess.Popen([PY, DRIVER, "ingest", store, *files], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def _truth_targetids(files: list[str]) -> list[int]:
    from skybatch.sources import get_reader
    from skybatch.store.fsutil import filesystem

    r = get_reader("desi")
    out: list[int] = []
    for f in files:
        info = r.inspect(filesystem(f), f)
        out += r.read(filesystem(f), info, 0, info.n_rows).meta["targetid"].tolist()
    return out


@pytest.mark.slow
def test_two_concurrent_writers_each_spectrum_once_or_refused(survey, tmp_path):
    a_files, b_files = survey[:2], survey[2:]
    # 1. both wait for the lock: both finish, every spectrum exactly once
    store = str(tmp_path / "both.zarr")
    pa, pb = _start(store, a_files, 300), _start(store, b_files, 300)
    outs = [p.communicate(timeout=600) for p in (pa, pb)]
    print("waiting writers exit codes:", pa.returncode, pb.returncode)
    assert pa.returncode == 0 and pb.returncode == 0, outs
    tid = xr.open_zarr(store).targetid.values.tolist()
    assert sorted(tid) == sorted(_truth_targetids(a_files + b_files))
    assert len(tid) == len(set(tid))
    print(f"  store holds {len(tid)} spectra, each once")
    # 2. without waiting: one of them is refused with a message naming the holder, the other is complete
    store = str(tmp_path / "refuse.zarr")
    pa = _start(store, a_files, 0)
    time.sleep(0.3)
    pb = _start(store, b_files, 0)
    (_, ea), (_, eb) = pa.communicate(timeout=600), pb.communicate(timeout=600)
    codes = sorted([pa.returncode, pb.returncode])
    refused = ea if pa.returncode else eb
    print("non-waiting writers exit codes:", pa.returncode, pb.returncode, "|", refused.strip().splitlines()[-1][:160])
    if codes == [0, 0]:  # the first finished before the second started: both ran in turn
        tid = xr.open_zarr(store).targetid.values.tolist()
        assert sorted(tid) == sorted(_truth_targetids(a_files + b_files))
    else:
        assert codes[0] == 0 and "is being written by ingest" in refused and "--wait-lock" in refused
        done_files = a_files if pa.returncode == 0 else b_files
        tid = xr.open_zarr(store).targetid.values.tolist()
        assert sorted(tid) == sorted(_truth_targetids(done_files))
    assert not os.path.exists(store + ".lock")


def test_lock_refuses_second_writer_in_process_and_takes_over_dead_one(survey, tmp_path, capfd):
    from skybatch.store.lock import LockHeldError, StoreLock

    store = str(tmp_path / "l.zarr")
    held = threading.Event()
    release = threading.Event()

    def holder():
        with StoreLock(store, job="ingest"):
            held.set()
            release.wait(30)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(30)
    with pytest.raises(LockHeldError, match="is being written by ingest"):
        StoreLock(store, job="preprocess", wait=0.5).acquire()
    release.set()
    t.join()
    # a lock left by a process killed with SIGKILL is taken over with a warning
    p = subprocess.Popen([PY, "-c", f"from skybatch.store.lock import StoreLock; import time; "
                                    f"StoreLock({store!r}, job='victim').acquire(); print('held', flush=True); "
                                    "time.sleep(600)"], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().startswith("held")
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    with StoreLock(store, job="next"):
        pass
    err = capfd.readouterr().err
    print(err.strip())
    assert "taking over the stale lock" in err and "is gone" in err


def test_worker_killed_mid_run_completes(dask_client, survey, tmp_path):
    store = str(tmp_path / "w.zarr")
    pids = list(dask_client.run(os.getpid).values())
    stop = threading.Event()

    def killer():
        # kill one worker process as soon as the first ingest chunk has started
        while not stop.is_set():
            tasks = dask_client.processing()
            if any(any(str(k).startswith("('ingest-chunk") or "ingest-chunk" in str(k) for k in v)
                   for v in tasks.values()):
                time.sleep(0.2)
                os.kill(pids[0], signal.SIGKILL)
                print(f"killed worker pid {pids[0]} mid-run")
                return
            time.sleep(0.05)

    th = threading.Thread(target=killer)
    th.start()
    rep = ingest(survey, store, chunk_spectra=8, client=dask_client, progress=False)
    stop.set()
    th.join()
    print(rep.summary().splitlines()[2])
    assert rep.exit_code == 0, rep.summary()
    tid = xr.open_zarr(store).targetid.values
    assert sorted(tid.tolist()) == sorted(_truth_targetids(survey)) and len(set(tid.tolist())) == len(tid)
    assert np.isfinite(xr.open_zarr(store).flux.values).all()
    dask_client.wait_for_workers(2, timeout=120)


@pytest.mark.s3
def test_s3_lock_is_a_conditional_put_moto_honours(s3_endpoint):
    """moto's server honours If-None-Match: * (the lock's create) and If-Match (its release)."""
    from skybatch.store.fsutil import filesystem
    from skybatch.store.lock import LockHeldError, StoreLock

    opts = {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing", "anon": False}
    fs = filesystem("s3://locks", opts)
    if not fs.exists("locks"):
        fs.mkdir("locks")
    fs.call_s3("put_object", Bucket="locks", Key="raw", Body=b"1", IfNoneMatch="*")
    with pytest.raises(Exception) as e:
        fs.call_s3("put_object", Bucket="locks", Key="raw", Body=b"2", IfNoneMatch="*")
    print("second conditional put:", type(e.value).__name__, str(e.value)[:80])
    assert fs.cat_file("locks/raw") == b"1"
    a = StoreLock("s3://locks/s.zarr", opts, job="ingest").acquire()
    err = {}

    def second():  # another thread: the lock is re-entrant only within one thread
        try:
            StoreLock("s3://locks/s.zarr", opts, job="other", wait=0.5).acquire()
        except LockHeldError as e:
            err["e"] = e

    th = threading.Thread(target=second)
    th.start()
    th.join(60)
    print("second S3 writer:", str(err.get("e"))[:120])
    assert "is being written by ingest" in str(err.get("e"))
    a.release()
    assert not fs.exists("locks/s.zarr.lock")
    # a lock whose heartbeat stopped (another host) is taken over after stale_after
    b = StoreLock("s3://locks/s.zarr", opts, job="ingest").acquire()
    b._stop.set()
    b._thread.join()
    c = StoreLock("s3://locks/s.zarr", opts, job="next", stale_after=0.5, wait=5)
    rec = c._read()[0]
    rec_host = rec["host"]
    import json
    import time

    rec["host"] = "elsewhere"  # looks like another machine: only the heartbeat age counts
    fs.pipe_file("locks/s.zarr.lock", json.dumps(rec).encode())
    time.sleep(1.0)
    done = {}
    t = threading.Thread(target=lambda: done.setdefault("lock", c.acquire()))  # another thread: not re-entrant
    t.start()
    t.join(30)
    assert done.get("lock") is c and c._read()[0]["token"] == c.token and rec_host
    c.release()
