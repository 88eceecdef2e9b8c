"""The streaming trainer: resume after a stop or a SIGKILL, data parallelism, one compilation, errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import equinox as eqx
import jax
import numpy as np
import pytest

from skybatch.models import (
    TrainConfig,
    VAEObjective,
    find_checkpoint,
    fit,
    load,
    reconstruct_batch,
)
from skybatch.models.train import step as train_mod
from tests.models.models_synth import VAE_KW, VAE_TRAIN_KW, batch_stream, smooth_family

REPO = Path(__file__).resolve().parents[2]
OBJECTIVE = VAEObjective(**VAE_KW)
NWAVE = VAE_KW["nwave"]


def _cfg(steps: int, **kw) -> TrainConfig:
    settings = {"checkpoint_every": 10, "log_every": 5, **VAE_TRAIN_KW, **kw}
    return TrainConfig(steps=steps, **settings)


def _stream():
    return batch_stream("smooth", VAE_TRAIN_KW["batch_size"], NWAVE)


def _assert_same_run(history: dict, reference: dict, *, rtol: float, steps: slice = slice(None)) -> None:
    got = history["train"]
    want = {k: np.asarray(v)[steps] for k, v in reference["train"].items()}
    np.testing.assert_array_equal(np.asarray(got["step"])[steps], want["step"])
    np.testing.assert_allclose(np.asarray(got["loss"])[steps], want["loss"], rtol=rtol, atol=0)


_VAL = smooth_family(np.random.default_rng(77), 64, NWAVE)
_VAL.pop("truth")


def _val_batches():
    return [_VAL]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 60-step run (checkpoints at 10, 20, ...; the newest two are kept;
    validation every 20 steps), with the number of compilations it caused."""
    out = tmp_path_factory.mktemp("reference")
    sizes = lambda: (train_mod._train_step._cached._cache_size(), train_mod._eval_step._cached._cache_size())  # noqa: E731
    before = sizes()
    res = fit(OBJECTIVE, _stream(), _cfg(60, validate_every=20), out, val_batches=_val_batches)
    after = sizes()
    res.compiles = {"train": after[0] - before[0], "eval": after[1] - before[1]}
    return res


def test_reference_run_outputs(reference):
    r = reference
    assert r.step == 60 and r.start_step == 0 and r.n_devices == 1
    assert r.history["train"]["step"] == list(range(1, 61))
    assert r.history["train"]["loss"][-1] < 0.2 * r.history["train"]["loss"][0]
    assert sorted(p.name for p in (r.out_dir / "checkpoints").iterdir()) == ["step_000000050", "step_000000060"]
    assert r.loss_curve.read_bytes()[:4] == b"\x89PNG"
    # The saved model reproduces the trained one, and its card carries the training record.
    model, card = load(r.model_dir)
    b = smooth_family(np.random.default_rng(5), 4, NWAVE)
    np.testing.assert_array_equal(
        np.asarray(reconstruct_batch(model, b["flux"], b["ivar"])["recon"]),
        np.asarray(reconstruct_batch(r.model, b["flux"], b["ivar"])["recon"]),
    )
    assert card["training"]["config"]["steps"] == 60 and card["training"]["objective"] == "spectrum_vae"
    assert card["training"]["objective_settings"]["lam"] == OBJECTIVE.lam
    assert len(card["training"]["loss_curve"]["train"]["loss"]) == 60
    assert card["metrics"]["train_loss"] == pytest.approx(np.mean(r.history["train"]["loss"][-10:]))


def test_stop_at_30_then_resume_to_60_matches_uninterrupted(reference, tmp_path):
    first = fit(OBJECTIVE, _stream(), _cfg(30), tmp_path)
    assert first.step == 30 and find_checkpoint(tmp_path)[0] == 30
    second = fit(OBJECTIVE, _stream(), _cfg(60), tmp_path)
    assert second.start_step == 30 and second.step == 60
    _assert_same_run(second.history, reference.history, rtol=1e-6)
    leaves = lambda m: jax.tree_util.tree_leaves(eqx.filter(m, eqx.is_array))  # noqa: E731
    for a, b in zip(leaves(second.model), leaves(reference.model), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    # Calling fit again on a finished run trains nothing and returns the same model.
    again = fit(OBJECTIVE, _stream(), _cfg(60), tmp_path)
    assert again.start_step == 60 and again.step == 60
    assert again.history["train"]["loss"] == second.history["train"]["loss"]


# One subprocess serves two checks (each costs a JAX start-up and compilation): the multi-device
# path, on two forced host devices, and a real SIGKILL in the middle of that run.
_TWO_DEVICE_KILLABLE = textwrap.dedent(
    """
    import json, sys, time
    sys.path.insert(0, {repo!r})
    import jax
    from skybatch.models import TrainConfig, VAEObjective, fit
    from skybatch.models.train.device import _Placement
    from tests.models.models_synth import VAE_KW, VAE_TRAIN_KW, batch_stream

    cfg = TrainConfig(steps=60, checkpoint_every=10, log_every=1, **VAE_TRAIN_KW)
    stream = batch_stream("smooth", VAE_TRAIN_KW["batch_size"], VAE_KW["nwave"])
    batch = _Placement.build(cfg).put_batch(next(stream(0)))
    print(json.dumps({{
        "devices": len(jax.devices()),
        "flux_shards": sorted({{tuple(s.data.shape) for s in batch["flux"].addressable_shards}}),
        "flux_devices": len(batch["flux"].sharding.device_set),
    }}), flush=True)

    def on_step(step, metrics):
        time.sleep(0.1)  # slow enough for the parent to kill us mid-run

    res = fit(VAEObjective(**VAE_KW), stream, cfg, sys.argv[1], on_step=on_step)
    leaf = res.model.decoder.layers[-1].weight
    print(json.dumps({{"finished": True, "weight_devices": len(leaf.sharding.device_set)}}), flush=True)
    """
)


@pytest.mark.slow
def test_two_device_run_killed_mid_way_resumes_on_one_device(reference, tmp_path):
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
    env["JAX_PLATFORMS"] = "cpu"
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c", _TWO_DEVICE_KILLABLE.format(repo=str(REPO)), str(out)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        target = out / "checkpoints" / "step_000000020"
        deadline = time.time() + 240
        while not target.exists():
            assert proc.poll() is None, proc.communicate()[1].decode()[-3000:]
            assert time.time() < deadline, "the training subprocess never reached step 20"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        stdout, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert proc.returncode == -signal.SIGKILL  # really killed, not finished
    lines = [json.loads(x) for x in stdout.decode().splitlines() if x.startswith("{")]
    assert not any(x.get("finished") for x in lines)
    info = lines[0]
    assert info["devices"] == 2 and info["flux_devices"] == 2
    assert info["flux_shards"] == [[16, NWAVE]]  # each device holds half of the 32-row batch

    killed_at, ckpt = find_checkpoint(out)
    assert 20 <= killed_at < 60
    meta = json.loads((ckpt / "meta.json").read_text())
    assert meta["n_devices"] == 2
    # The data-parallel steps reproduce the single-device run up to the reduction order ...
    # (bit-close for the first steps; Adam then amplifies the 1e-7 differences, more so through the
    # robust loss's batch-median weights, to ~1e-3 by step 20).
    resumed = fit(OBJECTIVE, _stream(), _cfg(60), out)
    got, want = resumed.history["train"]["loss"][:killed_at], reference.history["train"]["loss"][:killed_at]
    np.testing.assert_allclose(got[:10], want[:10], rtol=1e-4)
    np.testing.assert_allclose(got, want, rtol=1e-2)
    # ... and the run resumes on this one-device process from its last checkpoint.
    assert resumed.start_step == killed_at and resumed.step == 60 and resumed.n_devices == 1
    assert resumed.history["train"]["step"] == list(range(1, 61))
    # Adam at this learning rate amplifies the 1e-7 reduction-order differences over the
    # remaining steps, so the end point is compared at the level of the loss, not bit for bit.
    final, want = np.mean(resumed.history["train"]["loss"][-10:]), np.mean(reference.history["train"]["loss"][-10:])
    assert final == pytest.approx(want, rel=0.05)


def test_step_is_compiled_once_and_reused(reference, tmp_path):
    # The reference run compiled the step and the validation step at most once each (none if an
    # earlier test in this process already used the same objective and optimiser settings).
    assert reference.compiles["train"] <= 1 and reference.compiles["eval"] <= 1
    assert reference.history["val"]["step"] == [20, 40, 60]
    # Another run with equal settings (other steps, intervals, out_dir) compiles nothing new,
    # and neither does resuming it.
    sizes = lambda: (train_mod._train_step._cached._cache_size(), train_mod._eval_step._cached._cache_size())  # noqa: E731
    before = sizes()
    fit(OBJECTIVE, _stream(), _cfg(12, checkpoint_every=4, validate_every=4, log_every=3), tmp_path,
        val_batches=_val_batches)
    res = fit(OBJECTIVE, _stream(), _cfg(20, checkpoint_every=4, validate_every=4, log_every=3), tmp_path,
              val_batches=_val_batches)
    assert res.start_step == 12 and res.history["val"]["step"] == [4, 8, 12, 16, 20]
    assert sizes() == before


def test_corrupt_newest_checkpoint_falls_back_to_previous(reference, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(reference.out_dir, out)
    state = out / "checkpoints" / "step_000000060" / "state.eqx"
    state.write_bytes(state.read_bytes()[:-100])  # truncated by a crash or disk problem
    with pytest.warns(UserWarning, match="step_000000060"):
        res = fit(OBJECTIVE, _stream(), _cfg(60), out)
    assert res.start_step == 50 and res.step == 60
    _assert_same_run(res.history, reference.history, rtol=1e-6)


def test_resume_refuses_incompatible_settings(reference, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(reference.out_dir, out)
    with pytest.raises(ValueError, match="batch_size=32 but the config has batch_size=16"):
        fit(OBJECTIVE, _stream(), _cfg(60, batch_size=16), out)
    with pytest.raises(ValueError, match="objective 'spectrum_vae', not 'other'"):
        fit(type("Other", (VAEObjective,), {"name": "other"})(**VAE_KW), _stream(), _cfg(60), out)
    with pytest.raises(FileExistsError, match="resume=True"):
        fit(OBJECTIVE, _stream(), _cfg(60), out, resume=False)


def test_bad_batches_and_settings_are_reported(tmp_path):
    def wrong_size(start):
        b = smooth_family(np.random.default_rng(0), 31, NWAVE)
        b.pop("truth")
        yield b

    with pytest.raises(ValueError, match=r"'flux' has shape \(31, 256\).*batch_size"):
        fit(OBJECTIVE, wrong_size, _cfg(5), tmp_path / "a")

    def with_strings(start):
        b = next(_stream()(start))
        b["spectype"] = np.array(["GALAXY"] * 32)
        yield b

    with pytest.raises(TypeError, match="'spectype'.*drop it"):
        fit(OBJECTIVE, with_strings, _cfg(5), tmp_path / "b")

    def poisoned(start):
        b = next(_stream()(start))
        b["ivar"][0, 100] = np.inf  # a broken inverse variance
        while True:
            yield b

    with pytest.raises(FloatingPointError, match="step 1.*learning_rate"):
        fit(OBJECTIVE, poisoned, _cfg(5), tmp_path / "c")

    def short(start):
        gen = _stream()(start)
        for _ in range(4):
            yield next(gen)

    with pytest.warns(UserWarning, match="ran out after step 4"):
        res = fit(OBJECTIVE, short, _cfg(10), tmp_path / "d")
    assert res.step == 4 and find_checkpoint(tmp_path / "d")[0] == 4

    with pytest.raises(ValueError, match="only 1 local device"):
        fit(OBJECTIVE, _stream(), _cfg(5, devices=2), tmp_path / "e")
    for bad, match in [({"batch_size": 0}, "batch_size"), ({"optimizer": "lamb"}, "optimizer"),
                       ({"grad_clip": -1.0}, "grad_clip"), ({"learning_rate": float("nan")}, "learning_rate")]:
        with pytest.raises(ValueError, match=match):
            _cfg(5, **bad)
    with pytest.raises(ValueError, match="unknown setting"):
        TrainConfig.from_dict({"steps": 5, "batch_size": 4, "epochs": 3})
    assert TrainConfig.from_dict(_cfg(5).to_dict()) == _cfg(5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TrainConfig(steps=1, batch_size=1)
