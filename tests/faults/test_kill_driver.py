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
              + " | ".join(ln for ln in again.stdout.splitlines() if ln.startswith("chunks")))
        assert again.returncode == 0, again.stdout + again.stderr
        assert_same_store(reference, target, skip=compare_skip)
    return dur


def test_kill9_driver_ingest_preprocess_score(survey, tmp_path, dask_client):
    import os

    ref = str(tmp_path / "ref.zarr")
    _trials("ingest", lambda s: ["ingest", s, *survey], ref, 2, seed=1, tmp_path=tmp_path)
    ref_pp = str(tmp_path / "ref-pp.zarr")
    _trials("preprocess", lambda o: ["preprocess", ref, o], ref_pp, 2, seed=2, tmp_path=tmp_path)
    # score: a tiny VAE trained once; each trial scores a fresh copy of the preprocessed store
    from skybatch.pipeline.modeling import TrainJobConfig, train

    train(TrainJobConfig(store=ref_pp, model="vae", out=str(tmp_path / "vae"), steps=10, batch_size=16,
                         latent_dim=2, width=16, depth=1, split_nside=256, val_fraction=0.3, progress=False),
          dask_client)
    base_pp = str(tmp_path / "base-score.zarr")
    shutil.copytree(ref_pp, base_pp)
    shutil.copytree(ref_pp + ".manifest", base_pp + ".manifest")

    def score_args(s: str) -> list[str]:
        if not os.path.exists(s):
            shutil.copytree(base_pp, s)
            shutil.copytree(base_pp + ".manifest", s + ".manifest")
        return ["score", s, str(tmp_path / "vae")]

    _trials("score", score_args, str(tmp_path / "ref-score.zarr"), 1, seed=4, tmp_path=tmp_path)
