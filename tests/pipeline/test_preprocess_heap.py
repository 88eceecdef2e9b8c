"""Chunk tasks on Dask workers: large NumPy temporaries come from the heap again (keep_arrays_on_heap)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CODE = """
import resource, sys
import numpy as np
from skybatch.pipeline.chunkrun import keep_arrays_on_heap
if sys.argv[1] == "1":
    assert keep_arrays_on_heap()
import threading

def task():  # in a thread, as on a Dask worker
    x = np.ones((1024, 2048))  # 16 MiB, like a chunk task's temporaries
    (x * 2.0).sum()
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        y = x * 2.0
        del y
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)

t = threading.Thread(target=task)
t.start()
t.join()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_heap_setting_undoes_the_page_faults_of_dask_worker_malloc_settings():
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536"}  # what Dask's nanny gives every worker

    def faults(apply: str) -> int:
        out = subprocess.run([sys.executable, "-c", CODE, apply], env=env, capture_output=True, text=True,
                             check=True)
        return int(out.stdout.strip().splitlines()[-1])

    plain, fixed = faults("0"), faults("1")
    assert plain > 2000, plain  # every 16 MiB temporary faults its pages in again
    assert fixed * 5 < plain, (fixed, plain)


TOP = """
import resource, sys, threading
import numpy as np
from skybatch.pipeline.chunkrun import keep_arrays_on_heap, keep_heap_top
assert keep_arrays_on_heap()
if sys.argv[1] == "1":
    assert keep_heap_top()

def task():  # temporaries freed at the top of the heap after every call, as XLA's are
    x = np.ones((1024, 2048))
    (x * 2.0).sum()
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        y = x * 2.0
        z = y + 1.0
        del y, z
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)

t = threading.Thread(target=task)
t.start()
t.join()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_heap_top_setting_keeps_freed_temporaries_from_faulting_in_again():
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536"}

    def faults(apply: str) -> int:
        out = subprocess.run([sys.executable, "-c", TOP, apply], env=env, capture_output=True, text=True,
                             check=True)
        return int(out.stdout.strip().splitlines()[-1])

    plain, kept = faults("0"), faults("1")
    assert plain > 2000, plain  # each freed top-of-heap temporary is trimmed and faulted in again
    assert kept * 5 < plain, (kept, plain)
