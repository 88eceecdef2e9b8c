"""`benchmarks/scale.py --quick` runs end to end (as CI runs it) and prints every figure it promises."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_scale_benchmark_quick_prints_side_by_side_figures():
    script = Path(__file__).parents[1] / "benchmarks" / "scale.py"
    proc = subprocess.run([sys.executable, str(script), "--quick"], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr[-3000:]
    m = re.search(r"scale benchmark: (\d+) and (\d+) spectra \(10x\)", out)
    assert m and int(m.group(2)) == 10 * int(m.group(1)), out
    num = r"([\d.]+)"
    for stage in ("ingest", "preprocess", "score"):
        row = re.search(rf"^{stage}\s+(\d+)\s+(\d+)\s+{num}\s+(ok|OFF)\s+{num}\s+{num}\s+{num}\s+(ok|OFF)"
                        rf"\s+(\d+)\s+(\d+)\s+{num}\s+{num}$", out, re.M)
        assert row, f"no {stage} row in:\n{out}"
        assert int(row.group(1)) > 0 and int(row.group(2)) > 0  # spectra/s
        assert float(row.group(5)) > 0 and float(row.group(6)) > 0  # CPU ms per spectrum, measured
        assert int(row.group(10)) > int(row.group(9))  # the task graph grows with the data (chunks)
        assert float(row.group(11)) >= 0 and float(row.group(12)) >= 0  # load averages
    # fixed cost and marginal time per spectrum: (T - T_fixed) / (n - n_fixed) at both sizes, beside the raw ratio
    tiny = re.search(r"^fixed cost and marginal cost per spectrum: fixed = the stage on (\d+) spectra", out, re.M)
    assert tiny and 0 < int(tiny.group(1)) < int(m.group(1)), out
    sig = r"(-?[\d.]+|nan)"
    raws = {}
    for stage in ("ingest", "preprocess", "score"):
        raws[stage] = re.search(rf"^{stage}\s+(\d+)\s+(\d+)\s+{num}\s", out, re.M)
        row = re.search(rf"^{stage}\s+{num}\s+{num}\s+{sig}\s+{sig}\s+{sig}\s+(ok|OFF)\s+{num}\s+{num}\s+{sig}\s+"
                        rf"{sig}\s+{sig}\s+(ok|OFF)$", out, re.M)
        assert row, f"no {stage} marginal row in:\n{out}"
        assert float(row.group(1)) > 0 and float(row.group(2)) > 0  # fixed seconds, measured on each cluster
        assert float(row.group(7)) == float(raws[stage].group(3))  # the raw wall ratio, printed beside the marginal
    assert re.search(r"^CPU seconds, small / large .*ingest driver [\d.]+ / [\d.]+ .*score driver", out, re.M), out
    # what each stage wrote into the page cache, and the machine's peak of unwritten pages against the threshold
    dirty = re.search(r"^page cache writes, MB dirtied small / large .*: ingest (\d+) / (\d+) \(peak (\d+) / (\d+) of "
                      r"(\d+)\); preprocess (\d+) / (\d+) ", out, re.M)
    assert dirty, out
    # machine-wide counters (other processes write too): read from /proc/vmstat, the threshold is the kernel's
    assert int(dirty.group(5)) > 0
    assert re.search(r"stores in the work directory \(\w+\)", out), out
    res = re.search(r"^input in the page cache at the stage's start, % of its bytes, small / large .*: ingest (\d+|nan) / "
                    r"(\d+|nan); preprocess (\d+|nan) / (\d+|nan); score (\d+|nan) / (\d+|nan)$", out, re.M)
    assert res, out
    if shutil.which("fincore"):  # the raw store was just written: some of it is still in memory
        assert 0 < float(res.group(4)) <= 100, out
    for proc_name in ("scheduler", "driver", "worker 0", "worker 1"):
        row = re.search(rf"^{proc_name}\s+((?:\d+\s+\d+\s+[\d.]+\s+(?:ok|OFF)\s*){{3}})$", out, re.M)
        assert row, f"no peak RSS row for {proc_name} in:\n{out}"
        cells = row.group(1).split()
        peaks = [float(cells[k]) for k in range(0, 12, 4)] + [float(cells[k]) for k in range(1, 12, 4)]
        assert all(v > 50 for v in peaks)  # real processes, measured
        for k in range(0, 12, 4):  # the ratio printed is the ratio of the peaks printed, to the printed precision
            small, large = float(cells[k]), float(cells[k + 1])  # MB, printed as integers (±0.5)
            rounding = 0.005 + 0.5 / small + 0.5 * large / small**2  # ratio to 2 decimals, peaks to 1 MB
            assert abs(float(cells[k + 2]) - large / small) <= rounding
    assert re.search(r"ingest plan time: small [\d.]+ s, large [\d.]+ s", out)
    objs = re.search(r"objects per variable, raw store: max (\d+) \(small\) / (\d+) \(large\); flux (\d+) / (\d+)", out)
    assert objs and int(objs.group(2)) > int(objs.group(1)) > 0 and int(objs.group(4)) > int(objs.group(3)) > 0
    assert re.search(r"objects per variable, preprocessed store: max \d+ \(small\)", out)
    assert re.search(r"verdict: wall time per spectrum constant \(\+-20%\) in \d/3 stages, CPU time per spectrum "
                     r"in \d/3; marginal wall time per spectrum in \d/3; peak memory flat \(\+-20%\) in \d+/12 process-stages", out)
    assert re.search(r"planning 10\^6 spectra in 5000 files: driver-side plan .* ([\d.]+) s \(489 chunk tasks", out)
    assert re.search(r"scheduler peak RSS in the large ingest \d+ MB", out)
