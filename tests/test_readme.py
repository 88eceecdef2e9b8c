"""The README as a new user follows it: every ```bash and ```python block runs as printed, in order, each in
a fresh process, in an empty directory (blocks that create the venv or install are left out: the test runs
in the installed venv, whose bin/ is put first on PATH as `source .venv/bin/activate` does)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "README.md"
_BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```", re.DOTALL | re.MULTILINE)


def readme_blocks() -> list[tuple[str, str]]:
    """(language, code) of the README's runnable blocks, installation blocks left out."""
    return [(lang, code) for lang, code in _BLOCK.findall(README.read_text())
            if "pip install" not in code and "-m venv" not in code]


def test_readme_has_runnable_blocks():
    blocks = readme_blocks()
    text = "\n".join(c for _, c in blocks)
    assert "skybatch run quickstart" in text and "skybatch run ingest" in text and "skybatch run score" in text
    # what it tells a new user to install runs the tests: pytest is in the dev extra, with the venv active
    assert 'pip install -e ".[dev]" && python -m pytest' in README.read_text()
    assert "source .venv/bin/activate" in README.read_text()


def _run(cmd: list[str], cwd, env, timeout: float) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group; on a timeout (or the test being stopped) the whole group is
    killed, so no skybatch run or cluster outlives the test."""
    import signal

    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except BaseException:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        raise
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


@pytest.mark.slow
@pytest.mark.prefect
@pytest.mark.timeout(2400)
def test_readme_blocks_run_as_printed(prefect_server, tmp_path):
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
           "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}
    outputs = []
    for i, (lang, code) in enumerate(readme_blocks()):
        cmd = ["bash", "-euo", "pipefail", "-c", code] if lang == "bash" else [sys.executable, "-c", code]
        t0 = time.monotonic()
        r = _run(cmd, tmp_path, env, timeout=1200)
        print(f"README block {i} ({lang}, {code.strip().splitlines()[0][:60]!r}): {time.monotonic() - t0:.1f} s")
        assert r.returncode == 0, f"README block failed ({r.returncode}):\n{code}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
        assert "Traceback" not in r.stderr, r.stderr
        outputs.append(r.stdout)
    quick = next(o for o in outputs if "injected anomalies" in o)
    check_anomaly_ranks(quick)


def check_anomaly_ranks(out: str) -> None:
    """The quick start's injected anomalies are in the top 1 % of its ranking (or the top n_anomalies when
    they are more than 1 % of the spectra)."""
    m = re.search(r"injected anomalies \((\d+)\) ranked among (\d+) spectra", out)
    assert m, out
    n_anom, n = int(m[1]), int(m[2])
    ranks = [int(r) for r in re.findall(r"^\s+rank\s+(\d+)", out, re.MULTILINE)]
    assert len(ranks) == n_anom > 0
    k = max(round(0.01 * n), n_anom)
    assert all(r <= k for r in ranks), f"ranks {ranks} of {n}: not all in the top {k}"
