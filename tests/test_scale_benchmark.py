"""`benchmarks/scale.py --quick` runs end to end (as CI runs it) and prints every figure it promises."""

from __future__ import annotations

import os
import re
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
    for stage in ("ingest", "preprocess", "score"):
        row = re.search(rf"^{stage}\s+(\d+)\s+(\d+)\s+([\d.]+)\s+(ok|OFF)\s+(\d+)\s+(\d+)$", out, re.M)
        assert row, f"no {stage} row in:\n{out}"
        assert int(row.group(1)) > 0 and int(row.group(2)) > 0
        assert int(row.group(6)) > int(row.group(5))  # the task graph grows with the data (chunks)
    for proc_name in ("scheduler", "driver", "worker 0", "worker 1"):
        row = re.search(rf"^{proc_name}\s+((?:\d+\s+){{6}})([\d.]+) (ok|OFF)$", out, re.M)
        assert row, f"no peak RSS row for {proc_name} in:\n{out}"
        assert all(float(v) > 50 for v in row.group(1).split())  # real processes, measured
    assert re.search(r"ingest plan time: small [\d.]+ s, large [\d.]+ s", out)
    files = re.search(r"raw store (\d+) \(small\) / (\d+) \(large\)", out)
    assert files and int(files.group(2)) > int(files.group(1)) > 0
    assert re.search(r"verdict: time per spectrum constant \(\+-20%\) in \d/3 stages; peak memory flat \(\+-20%\) "
                     r"in \d/4 processes", out)
    assert re.search(r"planning 10\^6 spectra in 5000 files: driver-side plan .* ([\d.]+) s \(489 chunk tasks", out)
