"""`skybatch run difference` as a user meets it: flags + a YAML config, the Prefect flow, the report, exit codes."""

from __future__ import annotations

import shutil

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

    # a typo in the YAML file is named, with the valid settings
    cfg.write_text("cutout_sise: 21\n")
    assert skybatch_main(args) == 2
    assert "cutout_sise" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="cutout_size"):
        from argparse import Namespace

        from skybatch.commands import difference as cmd

        cmd.run(Namespace(config=None, science=["a.fits"], reference=["b.fits"], out=out, cutout_size=20))
