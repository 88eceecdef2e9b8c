"""What a user reads from the CLI: usage errors, defaults in --help, errors once without a traceback."""

from __future__ import annotations

import numpy as np
import pytest

import skybatch.orchestrate.ingest  # Prefect imported at collection, outside any test's captured stderr
from skybatch.cli import main


def test_missing_source_is_a_usage_error(capsys):
    assert main(["run", "ingest", "--store", "x.zarr"]) == 2
    err = capsys.readouterr().err
    assert "usage: skybatch run ingest" in err
    assert "missing --source" in err and "__init__" not in err
    assert err.count("error:") == 1 and "Traceback" not in err


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "ingest", "--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "(default: 2048)" in out and "(default: auto)" in out
    with pytest.raises(SystemExit):
        main(["run", "preprocess", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: median)" in out and "redshift range" in out


@pytest.mark.parametrize("argv", [[], ["--help"], ["run", "ingest", "--help"], ["run", "ingest-tiles", "--help"],
                                  ["run", "preprocess", "--help"], ["run", "difference", "--help"],
                                  ["server", "--help"], ["cluster", "list"]])
def test_cli_without_a_model_imports_no_jax(argv):
    """A fresh ``import skybatch.cli`` and the parsing, ``--help`` and commands that need no model import
    neither JAX (seconds per CLI process) nor Equinox, Optax or Prefect."""
    import subprocess
    import sys

    code = ("import sys, runpy; sys.argv = ['skybatch', *sys.argv[1:]]\n"
            "try:\n    runpy.run_module('skybatch.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'equinox', 'optax', 'prefect'))\n"
            "assert not heavy, heavy[:5]")
    r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


def test_unknown_config_key_named(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("sources: [a.fits]\nstore: s.zarr\nstore_option: {}\n")
    assert main(["run", "ingest", "--config", str(cfg)]) == 2
    assert "store_option" in capsys.readouterr().err


def test_ingest_passes_every_setting_to_the_flow(tmp_path, monkeypatch, capsys):
    """source_options, store_options and retries from --config reach the flow (none silently dropped)."""
    seen = {}

    def fake_flow(config, **kw):  # stands in for the Prefect flow only: records what the CLI hands over
        seen.update(config)
        raise RuntimeError("stop here")

    monkeypatch.setattr(skybatch.orchestrate.ingest, "ingest_flow", fake_flow)
    cfg = tmp_path / "run.yaml"
    cfg.write_text("sources: ['s3://bucket/x/']\nstore: out.zarr\nretries: 7\n"
                   "source_options: {anon: true, client_kwargs: {region_name: eu-west-1}}\n"
                   "store_options: {key: AKIA, secret: hush}\n")
    assert main(["run", "ingest", "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "stop here" in err and "--debug" in err and "Traceback" not in err
    from skybatch.secrets import unstash

    assert seen["retries"] == 7
    assert seen["source_options"]["client_kwargs"] == {"region_name": "eu-west-1"}
    assert seen["source_options"]["config_kwargs"]["connect_timeout"] <= 5
    assert isinstance(seen["store_options"], str) and "hush" not in seen["store_options"]
    assert unstash(seen["store_options"])["secret"] == "hush"


def test_flags_derived_from_the_config_reach_the_flow(tmp_path, monkeypatch, capsys):
    """Settings without a hand-made flag get one from the config (--retries, --no-verify-checksums)."""
    seen = {}

    def fake_flow(config, **kw):  # stands in for the Prefect flow only: records what the CLI hands over
        seen.update(config)
        raise RuntimeError("stop here")

    monkeypatch.setattr(skybatch.orchestrate.ingest, "ingest_flow", fake_flow)
    assert main(["run", "ingest", "--source", str(tmp_path / "*.fits"), "--store", str(tmp_path / "s.zarr"),
                 "--retries", "5", "--no-verify-checksums"]) == 1
    assert seen["retries"] == 5 and seen["verify_checksums"] is False and seen["dedupe_files"] is True
    with pytest.raises(SystemExit) as e:  # argparse's own error, as for every typed flag
        main(["run", "ingest", "--source", "x", "--store", "y", "--retries", "many"])
    assert e.value.code == 2 and "--retries: invalid int value" in capsys.readouterr().err


def test_rest_frame_grid_covers_the_redshift_range():
    from skybatch.spectra.grids import rest_frame_grid

    wl = np.arange(3600.0, 9824.01, 0.8)
    z = np.r_[np.linspace(0.0, 3.0, 500), np.nan, -5.0]
    g = rest_frame_grid(wl, z)
    assert g.kind == "loglam" and g.step == pytest.approx(1e-4)
    # 0.5 % of the redshifts at either end do not stretch the grid
    z_lo, z_hi = np.quantile(np.linspace(0.0, 3.0, 500), (0.005, 0.995))
    assert 3600 / (1 + z_hi) * 0.999 <= 10 ** g.start <= 3600 / (1 + z_hi)
    assert 9824 / (1 + z_lo) <= 10 ** g.stop <= 9824 / (1 + z_lo) * 1.001
    with pytest.raises(ValueError, match="redshift"):
        rest_frame_grid(wl, [np.nan])
