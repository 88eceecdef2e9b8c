"""`skybatch run difference` as a user meets it: flags + a YAML config, the Prefect flow, the report, exit codes."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from skybatch import cli
from skybatch.commands._config import ConfigError
from skybatch.store.difference_store import open_candidates, open_difference_store, read_candidates

from .pipeline.test_difference import SATURATION, make_field, write_pair


@pytest.fixture()
def skybatch_main():
    """``skybatch.cli.main``, with the difference job registered as users get it."""
    assert cli.JOBS["difference"] == "skybatch.commands.difference"
    return cli.main


@pytest.mark.prefect
def test_cli_difference_runs_the_flow(prefect_server, dask_client, skybatch_main, tmp_path, capsys):
    root = tmp_path / "data"
    truth = {}
    for tile, seed in (("tile_0100", 11), ("tile_0101", 12)):
        p = make_field(seed, (256, 256), 5, (0.0, 0.0))
        write_pair(str(root), tile, p)
        truth[tile] = p
    cfg = tmp_path / "run.yaml"
    cfg.write_text("cutout_size: 21\nplot_top: 4\n")
    out = str(tmp_path / "diff.zarr")
    args = ["run", "difference", "--config", str(cfg), "--science", str(root / "sci"), "--reference", str(root / "ref"),
            "--out", out, "--threshold", "5", "--inject", "12", "--inject-snr", "8", "30", "--saturation",
            str(SATURATION), "--cluster", dask_client.scheduler.address, "--no-progress"]
    assert skybatch_main(args) == 0, capsys.readouterr()
    text = capsys.readouterr().out
    assert "pairs: 2 differenced by this run" in text and "injection-recovery:" in text
    assert f"xr.open_zarr({out!r}, group='256x256')" in text
    ds = open_difference_store(out)["256x256"]
    assert ds.done.values.tolist() == [True, True] and ds.n_injected.values.min() >= 8
    assert open_candidates(out).sizes["y"] == 21  # from the YAML file
    cat = read_candidates(out)
    # the recovered injections (S/N 8-30) are flagged in the catalogue; the generated transients are there too
    assert cat.injected.sum() >= 0.9 * ds.n_injected.values.sum()
    assert (~cat.injected & (cat.significance > 8)).sum() >= 0.8 * sum(len(p.transients["x"]) for p in truth.values())

    # again with one more science image that has no reference: the done pairs are skipped, exit code 3
    extra = tmp_path / "extra"
    extra.mkdir()
    shutil.copy(root / "sci" / "tile_0100_r.fits", extra / "tile_0999_r.fits")
    assert skybatch_main(args + ["--science", str(extra)]) == 3
    text = capsys.readouterr().out
    assert "0 differenced by this run, 2 already done" in text and "SET ASIDE [no-reference]" in text
    assert "tile_0999" in text

    # nothing to difference: every file and its reason on the terminal, exit code 3, no traceback
    none_args = ["run", "difference", "--science", str(extra), "--reference", str(tmp_path / "nowhere_r.fits"),
                 "--out", str(tmp_path / "none.zarr"), "--cluster", dask_client.scheduler.address, "--no-progress"]
    assert skybatch_main(none_args) == 3
    text = capsys.readouterr()
    assert "NOTHING TO DIFFERENCE" in text.out and "Traceback" not in text.out + text.err
    assert "SET ASIDE [no-reference] science" in text.out and "tile_0999_r.fits" in text.out
    assert "SET ASIDE [not-found]" in text.out and "nowhere_r.fits" in text.out

    # a typo in the YAML file is named, with the valid settings
    cfg.write_text("cutout_sise: 21\n")
    assert skybatch_main(args) == 2
    assert "cutout_sise" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="cutout_size"):
        from argparse import Namespace

        from skybatch.commands import difference as cmd

        cmd.run(Namespace(config=None, science=["a.fits"], reference=["b.fits"], out=out, cutout_size=20))


def test_cli_sample_images(skybatch_main, tmp_path, capsys):
    out = tmp_path / "sample"
    args = ["run", "sample-images", "--out", str(out), "--size", "192", "--pairs", "1", "--tiles", "2"]
    assert skybatch_main(args) == 0
    text = capsys.readouterr().out
    assert f"skybatch run difference --science {out}/plain/sci --reference {out}/plain/ref" in text
    for layout, name in (("plain", "field_000_r.fits"), ("rubin", "tile_000_r.fits"), ("euclid", "tile_000_VIS.fits")):
        assert (out / layout / "sci" / name).exists() and (out / layout / "ref" / name).exists()
    assert len(list((out / "tiles" / "rubin").glob("*.npz"))) == 2
    truth = pd.read_parquet(out / "truth" / "transients.parquet")
    assert set(truth.layout) == {"plain", "rubin", "euclid"} and truth.snr_new.min() > 0
    # a directory holding someone else's files is refused (exit code 2, named)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert skybatch_main(["run", "sample-images", "--out", str(tmp_path / "mine")]) == 2
    assert "holds other files" in capsys.readouterr().err


def test_cli_realbogus_train_and_refusals(skybatch_main, tmp_path, capsys):
    m = tmp_path / "rb"
    assert skybatch_main(["run", "realbogus", "--train", "--out", str(m), "--examples", "600", "--epochs", "2",
                          "--stamp", "15"]) == 0
    text = capsys.readouterr().out
    assert "held-out generated triplets: ECE" in text and (m / "card.json").exists()
    assert skybatch_main(["run", "realbogus", "--train", "--out", str(m)]) == 2  # never overwrites a model
    assert "not empty" in capsys.readouterr().err
    assert skybatch_main(["run", "realbogus", "--store", str(tmp_path / "nope.zarr"), "--model", str(m)]) == 2
    assert "no candidate catalogue" in capsys.readouterr().err


@pytest.mark.prefect
def test_quickstart_imaging_part(prefect_server, dask_client, tmp_path, capsys):
    """`skybatch run quickstart --imaging`'s imaging part: sample pairs written, the plain ones differenced."""
    from skybatch.commands.quickstart import run_imaging

    code = run_imaging(str(tmp_path / "qs"), dask_client.scheduler.address, pairs=2, size=256, progress=False)
    text = capsys.readouterr().out
    assert code == 0, text
    assert "[difference plain pairs]" in text and "pairs: 2 differenced by this run" in text
    assert "skybatch run classify --store" in text
    ds = open_difference_store(str(tmp_path / "qs" / "images-diff.zarr"))["256x256"]
    assert ds.done.values.tolist() == [True, True]
    assert (tmp_path / "qs" / "images" / "truth" / "transients.parquet").exists()


@pytest.mark.prefect
def test_cli_pairs_a_single_unconventionally_named_pair(prefect_server, dask_client, skybatch_main, tmp_path, capsys):
    """One science and one reference file whose names do not pair them: paired anyway, with a NOTE saying how."""
    from skybatch.sample.images import write_plain_fits
    from skybatch.sample.imaging import make_image_pair

    p = make_image_pair((160, 160), seed=4, n_stars=60, n_saturated=0, n_transients=2, transient_snr=(15.0, 30.0))
    sci, ref = tmp_path / "sci", tmp_path / "ref"
    sci.mkdir()
    ref.mkdir()
    write_plain_fits(sci / "ztf_20260101_sciimg.fits", p.new, p.new_wcs, "r", GAIN=2.0, EXPTIME=60.0)
    write_plain_fits(ref / "ps1_skycell_stack.fits", p.ref, p.ref_wcs, "r", GAIN=2.0, EXPTIME=300.0)
    out = str(tmp_path / "one.zarr")
    args = ["run", "difference", "--science", str(sci), "--reference", str(ref), "--out", out,
            "--cluster", dask_client.scheduler.address, "--no-progress"]
    code = skybatch_main(args)
    text = capsys.readouterr().out
    assert code == 0, text
    assert "NOTE paired the only science image" in text and "ztf_20260101_sciimg.fits" in text, text
    assert "ps1_skycell_stack.fits" in text and "SET ASIDE" not in text
    assert "pairs: 1 differenced by this run" in text
    ds = open_difference_store(out)["160x160"]
    assert ds.reference.values.tolist()[0].endswith("ps1_skycell_stack.fits")
    # with a second science image the names decide again: nothing is paired by guesswork
    write_plain_fits(sci / "ztf_20260102_sciimg.fits", p.new, p.new_wcs, "r", GAIN=2.0, EXPTIME=60.0)
    out2 = str(tmp_path / "two.zarr")
    assert skybatch_main(["run", "difference", "--science", str(sci), "--reference", str(ref), "--out", out2,
                          "--cluster", dask_client.scheduler.address, "--no-progress"]) == 3
    text = capsys.readouterr().out
    assert "NOTE paired" not in text and "SET ASIDE [no-reference]" in text
