"""Sky models end to end on the generated sky VAC (spectra follow moon and sun angles by construction).

One small VAC is ingested into a real Zarr store with the session Dask cluster; a tiny VAE, the
broadband model and two tiny latent diffusion models (dark, moon) are trained on it once, then:
broadband vs the training mean, dark-time airglow line ratios, moon-time continuum vs illumination,
guidance 0 vs 2, a fresh process generating the same spectra, and the generate job's store.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow

LINES = {"oi5577": 5578.9, "oi6300": 6302.0, "nad": 5894.6}


def line_flux(wave, flux, centre, half=6.0):
    """Line flux above the local continuum (median of side bands), 1e-17 erg/s/cm²/arcsec²."""
    s = (wave > centre - half) & (wave < centre + half)
    side = ((wave > centre - 25) & (wave < centre - 10)) | ((wave > centre + 10) & (wave < centre + 25))
    return (flux[:, s] - np.median(flux[:, side], axis=1, keepdims=True)).sum(1) * 0.8


def g_continuum(wave, flux):
    return np.median(flux[:, (wave > 4200) & (wave < 5400)], axis=1)


@pytest.fixture(scope="module")
def sky(tmp_path_factory, dask_client):
    import skybatch
    from skybatch.pipeline.modeling import TrainJobConfig, train
    from skybatch.pipeline.sky_broadband import SkyBroadbandConfig, train_broadband
    from skybatch.pipeline.sky_ldm import SkyLDMConfig, train_sky_ldm
    from skybatch.sample.skyvac_file import write_skyvac

    d = tmp_path_factory.mktemp("sky")
    write_skyvac(d / "sky_spectra_vac_v1.fits", 420, np.random.default_rng(7))
    store = str(d / "sky.zarr")
    skybatch.ingest([str(d / "sky_spectra_vac_v1.fits")], store, chunk_spectra=128, client=dask_client, progress=False)
    train(TrainJobConfig(store=store, model="vae", out=str(d / "vae"), steps=250, batch_size=32, width=64,
                         learning_rate=2e-3, progress=False, checkpoint_every=1000), dask_client)
    bb = train_broadband(SkyBroadbandConfig(store=store, out=str(d / "bb"), steps=300, batch_size=64, width=32,
                                            progress=False), dask_client)
    ldm = {}
    for sel in ("dark", "moon"):
        ldm[sel] = train_sky_ldm(SkyLDMConfig(store=store, vae=str(d / "vae"), selection=sel, out=str(d / f"ldm-{sel}"),
                                              steps=350, batch_size=32, channels=(16, 32), emb_dim=32,
                                              learning_rate=2e-3, progress=False), dask_client)
    return {"dir": d, "store": store, "bb": bb, "ldm": ldm}


def _rows_and_real(sky, sel):
    from skybatch.pipeline.sky_data import read_rows, selection_rows
    from skybatch.store.spectra_store import open_group

    rows = selection_rows(sky["store"], sel)
    real = read_rows(sky["store"], ["flux"], rows)["flux"]
    wave = np.asarray(open_group(sky["store"], mode="r")["wavelength"][:])
    return rows, real, wave


def _generate(sky, sel, cond, guidance=2.0, rows=None, steps=16):
    from skybatch.pipeline.sky_ldm import load_sky_ldm
    from skybatch.pipeline.sky_generate import generate_spectra

    model, card, _ = load_sky_ldm(sky["ldm"][sel]["model_dir"])
    rows = np.arange(len(cond)) if rows is None else rows
    return generate_spectra(model, cond, rows, np.zeros(len(cond), int), guidance=guidance, steps=steps, seed=1), card


def test_broadband_beats_the_training_mean(sky):
    bb = sky["bb"]
    for b, rms in bb["heldout_rms"].items():
        assert rms < 0.5 * bb["baseline_rms"][b], (b, rms, bb["baseline_rms"][b])
    card = json.loads((sky["dir"] / "bb" / "model" / "card.json").read_text())
    assert card["metrics"]["heldout_rms_V"] == pytest.approx(bb["heldout_rms"]["V"])
    assert card["photometry"]["filters"]["g"] == "decam2014-g" and (sky["dir"] / "bb" / "residuals.png").exists()


def test_broadband_predictions_written_into_the_store(sky, dask_client):
    from skybatch.pipeline.sky_broadband import predict_broadband

    out = predict_broadband(sky["store"], str(sky["dir"] / "bb"), dask_client, progress=False,
                            out_dir=str(sky["dir"] / "bb-out"))
    import skybatch

    ds = skybatch.open_store(sky["store"])
    assert ds["sky_mag_pred"].dims == ("spectrum", "band") and list(ds["band"].values) == ["V", "g", "r", "z"]
    cat = pd.read_parquet(out["top_parquet"])
    assert np.sqrt(np.nanmean((cat["pred_r"] - cat["measured_r"]) ** 2)) < 0.5 * cat["measured_r"].std()


def test_dark_time_airglow_ratios_within_real_scatter(sky):
    from skybatch.pipeline.sky_data import condition_table

    rows, real, wave = _rows_and_real(sky, "dark")
    card_cols = json.loads((sky["dir"] / "ldm-dark" / "model" / "card.json").read_text())["conditioning"]["columns"]
    gen, _ = _generate(sky, "dark", condition_table(sky["store"], card_cols, rows=rows))
    for a, b in (("oi6300", "oi5577"), ("nad", "oi5577")):
        r_real = line_flux(wave, real, LINES[a]) / line_flux(wave, real, LINES[b])
        r_gen = line_flux(wave, gen, LINES[a]) / line_flux(wave, gen, LINES[b])
        lo, hi = np.percentile(r_real, [16, 84])
        assert lo <= np.median(r_gen) <= hi, (a, b, lo, np.median(r_gen), hi)
    # line brightness itself is close to the real median
    for c in LINES.values():
        assert np.median(line_flux(wave, gen, c)) == pytest.approx(np.median(line_flux(wave, real, c)), rel=0.25)


def test_moon_continuum_rises_with_illumination(sky):
    from skybatch.pipeline.sky_data import condition_table

    rows, real, wave = _rows_and_real(sky, "moon")
    cols = json.loads((sky["dir"] / "ldm-moon" / "model" / "card.json").read_text())["conditioning"]["columns"]
    x = condition_table(sky["store"], cols, rows=rows)
    fracs = np.linspace(0.56, 1.0, 5)
    base = np.median(x, axis=0)
    cond = np.repeat(base[None, :], len(fracs) * 12, axis=0)
    cond[:, cols.index("MOONFRAC")] = np.repeat(fracs, 12)
    gen, _ = _generate(sky, "moon", cond, rows=np.arange(len(cond)))
    level = g_continuum(wave, gen).reshape(len(fracs), 12).mean(1)
    assert level[-1] > 1.3 * level[0] and np.corrcoef(fracs, level)[0, 1] > 0.8, level


def test_guidance_two_follows_conditions_better_than_zero(sky):
    from skybatch.pipeline.sky_data import condition_table

    rows, real, wave = _rows_and_real(sky, "moon")
    cols = json.loads((sky["dir"] / "ldm-moon" / "model" / "card.json").read_text())["conditioning"]["columns"]
    x = condition_table(sky["store"], cols, rows=rows)
    err = {}
    for w in (0.0, 2.0):
        gen, _ = _generate(sky, "moon", x, guidance=w, rows=rows)
        err[w] = np.median(np.abs(np.log(g_continuum(wave, gen) / g_continuum(wave, real))))
    assert err[2.0] < 0.8 * err[0.0], err


def test_fresh_process_generates_the_same_spectra_and_the_store(sky, dask_client):
    from skybatch.pipeline.sky_data import condition_table
    from skybatch.pipeline.sky_generate import GenerateConfig, generate

    rows, _, _ = _rows_and_real(sky, "dark")
    cols = json.loads((sky["dir"] / "ldm-dark" / "model" / "card.json").read_text())["conditioning"]["columns"]
    x = condition_table(sky["store"], cols + ["TILERA", "TILEDEC"], rows=rows[:6])
    table = pd.DataFrame(x, columns=[c.lower() for c in cols] + ["TILERA", "TILEDEC"])
    table.loc[2, "sunalt"] = np.nan  # a row with a missing condition is set aside
    cond_path = sky["dir"] / "cond.parquet"
    table.to_parquet(cond_path)
    out = str(sky["dir"] / "gen.zarr")
    cfg = GenerateConfig(model=sky["ldm"]["dark"]["out"], conditions=str(cond_path), out=out, guidance=2.0, steps=8,
                         seed=11, n_per_row=2, chunk_spectra=4, progress=False)
    rep = generate(cfg, dask_client)
    assert rep.n_spectra == 12 and rep.rows_set_aside == [2] and rep.exit_code == 3 and not rep.failed_chunks
    again = generate(cfg, dask_client)
    assert again.chunks_written == 0 and again.chunks_skipped == 3
    import skybatch

    ds = skybatch.open_store(out)
    flux = ds["flux"].values
    assert flux.shape == (12, 7781) and np.all(ds["ivar"].values[4:6] == 0) and np.all(ds["ivar"].values[:4] == 1)
    assert list(ds["source_row"].values) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert not np.array_equal(flux[0], flux[1])  # two draws per row differ
    script = textwrap.dedent(f"""
        import numpy as np, pandas as pd
        from skybatch.pipeline.sky_ldm import load_sky_ldm
        from skybatch.pipeline.sky_generate import generate_spectra, read_conditions
        model, card, _ = load_sky_ldm({sky['ldm']['dark']['out']!r})
        x, _ = read_conditions({str(cond_path)!r}, card["conditioning"]["columns"])
        idx = np.arange(12)
        f = generate_spectra(model, x[idx // 2], idx // 2, idx % 2, seed=11, guidance=2.0, steps=8)
        np.save({str(sky['dir'] / 'fresh.npy')!r}, f)
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    fresh = np.load(sky["dir"] / "fresh.npy")
    ok = np.isfinite(fresh).all(1)
    np.testing.assert_allclose(fresh[ok], flux[ok], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="another --out"):
        generate(GenerateConfig(model=cfg.model, conditions=cfg.conditions, out=out, seed=12, progress=False),
                 dask_client)
