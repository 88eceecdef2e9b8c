"""One module per job: typed config, run / run_with_client, typed report; one table of model kinds;
settings errors that name the key and the nearest valid one; Dask's current-client convention."""

from __future__ import annotations

import dataclasses
import importlib
import subprocess
import sys

import pytest

from skybatch.jobs import JOBS
from skybatch.jobs.kinds import KINDS, kind, train_job
from skybatch.jobs.settings import SettingsError, config_from, settings_of


@pytest.mark.parametrize("name", sorted(JOBS))
def test_every_job_has_config_run_and_report(name):
    import inspect

    mod = importlib.import_module(JOBS[name])
    assert callable(mod.run) and callable(mod.run_with_client)
    assert list(inspect.signature(mod.run_with_client).parameters)[:2] == ["cfg", "client"]
    assert dataclasses.is_dataclass(mod.Report), name
    if name != "sky_train":  # two config classes: sky_train.config_class(model)
        assert dataclasses.is_dataclass(mod.Config), name
        assert settings_of(mod.Config), name


def test_settings_carry_type_default_and_help():
    from skybatch.jobs import ingest, score

    s = settings_of(ingest.Config)
    assert s["sources"].required and not s["chunk_spectra"].required
    assert s["chunk_spectra"].default == 2048 and s["chunk_spectra"].type is int
    assert "spectra per stored object" in s["chunk_spectra"].help
    assert "credentials" in settings_of(score.Config)["storage_options"].help


def _own_job_config() -> type:
    from skybatch.pipeline.run_settings import StoreRunSettings

    @dataclasses.dataclass
    class OwnJobConfig(StoreRunSettings):
        n: int = 1

    OwnJobConfig.__doc__ = "A job of one's own.\n\n    cluster: where my tasks run.\n    "
    return OwnJobConfig


def test_shared_settings_section_declared_once_with_its_help():
    """cluster / progress / storage_options of the train, apply and generate configs come from one section,
    with its defaults and help; a config's own docstring entry wins over the section's."""
    from skybatch.jobs._apply import ApplyConfig
    from skybatch.pipeline.modeling import TrainJobConfig
    from skybatch.pipeline.run_settings import StoreRunSettings
    from skybatch.pipeline.sky_broadband import SkyBroadbandConfig
    from skybatch.pipeline.sky_generate import GenerateConfig
    from skybatch.pipeline.sky_ldm import SkyLDMConfig

    section = settings_of(StoreRunSettings)
    assert list(section) == ["cluster", "progress", "storage_options"]
    assert all(s.help for s in section.values())
    for cls in (ApplyConfig, TrainJobConfig, SkyBroadbandConfig, GenerateConfig, SkyLDMConfig):
        assert issubclass(cls, StoreRunSettings), cls
        own = settings_of(cls)
        for name, s in section.items():
            assert (own[name].default, own[name].help) == (s.default, s.help), (cls.__name__, name)
    cfg = TrainJobConfig("s.zarr", "vae", "out", cluster="tcp://127.0.0.1:8786")
    assert (cfg.cluster, cfg.progress, cfg.storage_options) == ("tcp://127.0.0.1:8786", True, {})
    own_job = _own_job_config()
    assert settings_of(own_job)["cluster"].help == "where my tasks run."
    assert settings_of(own_job)["progress"].help == section["progress"].help


def test_unknown_key_names_the_nearest_valid_one():
    from skybatch.jobs import ingest

    with pytest.raises(SettingsError, match=r"'chunk_spectrum' \(did you mean 'chunk_spectra'\?\)"):
        config_from(ingest.Config, {"sources": ["a.fits"], "store": "s.zarr", "chunk_spectrum": 4})
    with pytest.raises(SettingsError, match="missing required setting"):
        config_from(ingest.Config, {"sources": ["a.fits"]})
    cfg = config_from(ingest.Config, {"sources": ["a.fits"], "store": "s.zarr", "chunk-spectra": 4})
    assert cfg.chunk_spectra == 4


def test_flow_parameter_with_an_unknown_key_is_refused():
    """The flows' ``config`` parameter goes through the same check (no Prefect run needed to see it)."""
    from skybatch.jobs import difference
    from skybatch.orchestrate._common import job_config

    with pytest.raises(SettingsError, match=r"difference_flow\(config\).*'treshold' \(did you mean 'threshold'\?\)"):
        job_config(difference.Config, {"science": ["a"], "reference": ["b"], "out": "d.zarr", "treshold": 3},
                   "difference_flow(config)")


def test_yaml_unknown_key_names_the_nearest(tmp_path, capsys):
    from skybatch.cli import main

    cfg = tmp_path / "run.yaml"
    cfg.write_text("sources: [a.fits]\nstore: s.zarr\nchunk_spectrum: 8\n")
    assert main(["run", "ingest", "--config", str(cfg)]) == 2
    assert "did you mean 'chunk_spectra'" in capsys.readouterr().err


def test_one_table_of_model_kinds():
    assert set(KINDS) == {"vae", "classifier", "tile-encoder", "sky-broadband", "sky-ldm", "realbogus"}
    assert kind("realbogus").store == "difference" and "classify" in kind("realbogus").applies
    for name in KINDS:
        mod = train_job(name)
        assert callable(mod.run), name
    with pytest.raises(ValueError, match="realbogus"):
        kind("nonesuch")


def test_library_imports_no_prefect():
    """skybatch.pipeline, skybatch.jobs and the orchestrate package itself never import Prefect."""
    code = ("import sys, skybatch, skybatch.pipeline, skybatch.jobs, skybatch.jobs.ingest, skybatch.jobs.kinds, "
            "skybatch.orchestrate; assert 'prefect' not in sys.modules, sorted(m for m in sys.modules if "
            "m.startswith('prefect'))[:5]")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


def test_no_top_level_flows_package():
    import importlib.util

    spec = importlib.util.find_spec("flows")
    assert spec is None or "site-packages" not in str(spec.origin or ""), spec


@pytest.mark.parametrize("command, module", [("ingest", "ingest"), ("ingest-tiles", "tile_ingest"),
                                             ("difference", "difference"), ("score", "score"),
                                             ("preprocess", "preprocess")])
def test_every_setting_is_a_flag(command, module):
    """Each setting of a job's config that a flag can carry (not a mapping or nested config) has one."""
    import argparse

    from skybatch.cli import _parser

    p = _parser(with_defaults=False, job=command)
    run = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices["run"]
    jp = next(a for a in run._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    dests = {a.dest for a in jp._actions}
    cls = importlib.import_module(f"skybatch.jobs.{module}").Config
    scalar = [n for n, s in settings_of(cls).items() if "dict" not in str(s.type) and n != "recipe"]
    assert set(scalar) <= dests, sorted(set(scalar) - dests)
