"""Cluster profiles: every shipped profile parses and renders; bad ones fail with the setting named."""

from __future__ import annotations

import pytest
import yaml

from skybatch.cluster import ProfileError, cluster_client, describe, kubernetes_spec, list_profiles, load_profile


def test_shipped_profiles_listed():
    assert {"auto", "local", "local-cuda", "slurm", "kubernetes", "address"} <= set(list_profiles())


def test_auto_is_local_without_gpu():
    assert load_profile("auto").kind == "local"
    assert load_profile(None).kind == "local"


def test_slurm_show_renders_job_script():
    text = describe(load_profile("slurm", queue="debug", account="desi", walltime="00:30:00"))
    assert "#SBATCH -p debug" in text
    assert "#SBATCH -A desi" in text
    assert "#SBATCH -t 00:30:00" in text
    assert "distributed.cli.dask_worker" in text


def test_kubernetes_spec_is_a_daskcluster():
    spec = kubernetes_spec(load_profile("kubernetes", n_workers=7, image="example/skybatch:1"))
    assert spec["kind"] == "DaskCluster"
    assert spec["spec"]["worker"]["replicas"] == 7
    assert spec["spec"]["worker"]["spec"]["containers"][0]["image"] == "example/skybatch:1"
    assert yaml.safe_load(describe(load_profile("kubernetes")).split("\n\n", 1)[1])["kind"] == "DaskCluster"


def test_address_profile_from_argument_and_env(monkeypatch):
    assert load_profile("tcp://10.0.0.1:8786").options["address"] == "tcp://10.0.0.1:8786"
    monkeypatch.setenv("SKYBATCH_SCHEDULER_ADDRESS", "tcp://10.0.0.2:8786")
    assert load_profile("address").options["address"] == "tcp://10.0.0.2:8786"


def test_unknown_profile_and_typo_named(tmp_path):
    with pytest.raises(ProfileError, match="nonesuch"):
        load_profile("nonesuch")
    bad = tmp_path / "mine.yaml"
    bad.write_text("kind: local\nn_wrokers: 3\n")
    with pytest.raises(ProfileError, match="n_wrokers"):
        load_profile(str(bad))
    bad.write_text("kind: cloud\n")
    with pytest.raises(ProfileError, match="cloud"):
        load_profile(str(bad))


def test_local_cuda_refuses_without_gpu():
    with pytest.raises(ProfileError, match="GPU|gpu"):
        with cluster_client("local-cuda", quiet=True):
            pass


def test_local_profile_starts_on_loopback(capsys):
    with cluster_client("local", n_workers=1) as client:
        assert client.submit(sum, [1, 2, 3]).result() == 6
        workers = client.scheduler_info()["workers"]
        assert all(addr.startswith("tcp://127.0.0.1:") for addr in workers)
        assert client.scheduler.address.startswith("tcp://127.0.0.1:")
    assert "Dask dashboard: http://127.0.0.1:" in capsys.readouterr().out
