"""kill -9 of the driver at random moments, then a re-run: the store equals an uninterrupted run's.

Each trial runs the job in its own process (threads-only cluster inside it), kills it with
SIGKILL a random time after the job started, runs it again to the end and compares every
variable with a reference store written without interruption.
"""

from __future__ import annotations

import shutil

import pytest

from ._util import assert_same_store, kill_driver_at, make_survey, rng, run_driver, timed_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    d = tmp_path_factory.mktemp("kill-survey")
    return make_survey(d, n_healpix=2, per_file=30)


def _trials(kind: str, args_for, reference: str, n: int, seed: int, tmp_path, compare_skip=()):
    ref_proc, dur = timed_run(args_for(reference))
    assert ref_proc.returncode == 0, ref_proc.stdout + ref_proc.stderr
    print(f"{kind}: uninterrupted run took {dur:.1f} s after START")
    r = rng(seed)
    for i in range(n):
        target = str(tmp_path / f"{kind}-{i}.zarr")
        delay = r.uniform(0.05, max(0.1, 0.6 * dur))
        what = kill_driver_at(args_for(target), delay)
        again = run_driver(*args_for(target))
        print(f"{kind} trial {i}: {what}; re-run exit {again.returncode}: "
              + " | ".join(l for l in again.stdout.splitlines() if l.startswith("chunks")))
        assert again.returncode == 0, again.stdout + again.stderr
        assert_same_store(reference, target, skip=compare_skip)
    return dur


def test_kill9_driver_ingest_preprocess_map(survey, tmp_path):
    ref = str(tmp_path / "ref.zarr")
    _trials("ingest", lambda s: ["ingest", s, *survey], ref, 2, seed=1, tmp_path=tmp_path)
    ref_pp = str(tmp_path / "ref-pp.zarr")
    _trials("preprocess", lambda o: ["preprocess", ref, o], ref_pp, 2, seed=2, tmp_path=tmp_path)
    # the model job maps a copy of the reference store each time (it writes into its input)
    base = str(tmp_path / "base-map.zarr")
    shutil.copytree(ref, base)
    shutil.copytree(ref + ".manifest", base + ".manifest")
    ref_map = str(tmp_path / "ref-map.zarr")

    def map_args(s: str) -> list[str]:
        import os

        if not os.path.exists(s):
            shutil.copytree(base, s)
            shutil.copytree(base + ".manifest", s + ".manifest")
        return ["map", s]

    import os

    os.environ["DRIVER_NWAVE"] = "7781"
    try:
        _trials("map_model", map_args, ref_map, 1, seed=3, tmp_path=tmp_path)
    finally:
        os.environ.pop("DRIVER_NWAVE", None)
