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


def test_slurm_job_script_is_what_a_nersc_user_writes():
    import sys

    text = describe(load_profile("slurm", account="m1234", qos="debug", constraint="gpu", walltime="00:20:00",
                                 job_script_prologue=["module load python"]))
    for line in ("#SBATCH -A m1234", "#SBATCH -q debug", "#SBATCH -C gpu", "#SBATCH -t 00:20:00",
                 "#SBATCH -J skybatch-worker", "module load python"):
        assert line in text, line
    assert f"{sys.executable} -m distributed.cli.dask_worker" in text  # the venv skybatch runs in
    assert "--dashboard-address 127.0.0.1:0" in text
    assert "#SBATCH -p" not in text  # NERSC selects by qos + constraint, not partition


def test_cluster_opt_flags_reach_the_profile(capsys):
    from skybatch.cli import main
    from skybatch.cluster import cli_overrides, parse_options

    assert parse_options(["account=m1234", "cores=2", "job-extra-directives=[--exclusive]", "queue="]) == {
        "account": "m1234", "cores": 2, "job_extra_directives": ["--exclusive"], "queue": None}
    with pytest.raises(ProfileError, match="KEY=VALUE"):
        parse_options(["account"])
    with cli_overrides({"qos": "premium"}):
        assert load_profile("slurm").options["qos"] == "premium"
    assert load_profile("slurm").options["qos"] == "regular"
    assert main(["cluster", "show", "slurm", "--cluster-opt", "account=m9999", "--cluster-opt", "qos=shared"]) == 0
    out = capsys.readouterr().out
    assert "#SBATCH -A m9999" in out and "#SBATCH -q shared" in out
    assert main(["cluster", "show", "slurm", "--cluster-opt", "acount=m1"]) == 2
    assert "acount" in capsys.readouterr().err


def test_kubernetes_spec_is_a_daskcluster():
    spec = kubernetes_spec(load_profile("kubernetes", n_workers=7, image="example/skybatch:1"))
    assert spec["kind"] == "DaskCluster"
    assert spec["spec"]["worker"]["replicas"] == 7
    assert spec["spec"]["worker"]["spec"]["containers"][0]["image"] == "example/skybatch:1"
    text = describe(load_profile("kubernetes")).split("\n\n", 1)[1]
    assert yaml.safe_load(text)["kind"] == "DaskCluster"
    assert "&id" not in text  # no YAML anchors in what a user copies into kubectl


# Fields of the operator's DaskCluster CRD (kubernetes.dask.org/v1) and of the Kubernetes objects it embeds
# (PodSpec, Container, ServiceSpec) that a rendered spec may use; anything else would be rejected or ignored.
_CRD_SPEC = {"idleTimeout", "worker", "scheduler"}
_POD = {"containers", "volumes", "nodeSelector", "tolerations", "serviceAccountName", "securityContext"}
_CONTAINER = {"name", "image", "args", "command", "env", "resources", "ports", "readinessProbe", "livenessProbe",
              "imagePullPolicy", "volumeMounts", "securityContext"}
_SERVICE = {"type", "selector", "ports"}


def _validate_daskcluster(spec: dict) -> None:
    assert spec["apiVersion"] == "kubernetes.dask.org/v1" and spec["kind"] == "DaskCluster"
    assert set(spec["metadata"]) <= {"name", "namespace", "labels", "annotations"}
    assert set(spec["spec"]) <= _CRD_SPEC and {"worker", "scheduler"} <= set(spec["spec"])
    w, s = spec["spec"]["worker"], spec["spec"]["scheduler"]
    assert isinstance(w["replicas"], int) and w["replicas"] >= 1
    assert set(s) <= {"spec", "service", "metadata"} and {"spec", "service"} <= set(s)
    for pod in (w["spec"], s["spec"]):
        assert set(pod) <= _POD and pod["containers"]
        mounts = {v["name"] for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            assert set(c) <= _CONTAINER, set(c) - _CONTAINER
            assert c["name"] and c["image"] and all(isinstance(a, str) for a in c["args"])
            assert all(isinstance(e["value"], str) for e in c.get("env") or [])
            assert {m["name"] for m in c.get("volumeMounts", [])} <= mounts
    sched = s["spec"]["containers"][0]
    port_names = {p["name"] for p in sched["ports"]}
    assert set(s["service"]) <= _SERVICE
    assert {p["targetPort"] for p in s["service"]["ports"]} <= port_names
    assert sched["readinessProbe"]["httpGet"]["port"] in port_names
    assert s["service"]["selector"]["dask.org/cluster-name"] == spec["metadata"]["name"]


def test_kubernetes_profile_runs_the_skybatch_image_on_clusterip():
    import skybatch

    spec = kubernetes_spec(load_profile("kubernetes"))
    _validate_daskcluster(spec)
    images = {c["image"] for part in ("worker", "scheduler") for c in spec["spec"][part]["spec"]["containers"]}
    assert images == {f"skybatch:{skybatch.__version__}"}  # the Dockerfile's image, at the driver's version
    assert spec["spec"]["scheduler"]["service"]["type"] == "ClusterIP"
    worker = spec["spec"]["worker"]["spec"]["containers"][0]
    assert worker["args"][:3] == ["dask-worker", "--nthreads", "2"]
    with pytest.raises(ProfileError, match="LoadBalancer.*tls"):
        kubernetes_spec(load_profile("kubernetes", service_type="LoadBalancer"))
    with pytest.raises(ProfileError, match="secret"):
        kubernetes_spec(load_profile("kubernetes", tls={"cert": "x"}))


def test_kubernetes_tls_switches_every_pod_to_tls():
    spec = kubernetes_spec(load_profile("kubernetes", service_type="LoadBalancer", tls={"secret": "dask-tls"}))
    _validate_daskcluster(spec)
    assert spec["spec"]["scheduler"]["service"]["type"] == "LoadBalancer"
    for part in ("worker", "scheduler"):
        pod = spec["spec"][part]["spec"]
        assert pod["volumes"] == [{"name": "dask-tls", "secret": {"secretName": "dask-tls"}}]
        for c in pod["containers"]:
            args = " ".join(c["args"])
            assert "--protocol tls" in args and "--tls-ca-file=/etc/dask/tls/ca.crt" in args
            assert "--tls-key=/etc/dask/tls/tls.key" in args


def test_kubernetes_spec_matches_make_cluster_spec_when_installed():
    operator = pytest.importorskip("dask_kubernetes.operator", reason="dask-kubernetes not installed (kubernetes extra)")
    from skybatch.cluster_kube import _render_spec

    ours = _render_spec(name="c", image="i:1", n_workers=3, resources={"limits": {"cpu": "1"}}, env={"A": "1"},
                        worker_command="dask-worker --nthreads 1", service_type="ClusterIP")
    theirs = operator.make_cluster_spec(name="c", image="i:1", n_workers=3, resources={"limits": {"cpu": "1"}},
                                        env={"A": "1"}, worker_command="dask-worker --nthreads 1")
    assert ours == theirs


def test_dockerfiles_build_context_installs_a_complete_skybatch(tmp_path):
    """Each Dockerfile's COPY set alone builds a wheel with the profiles, schemas and flows (no docker here)."""
    import re
    import shutil
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    root = Path(__file__).parents[1]
    for name in ("Dockerfile", "Dockerfile.cuda"):
        text = (root / name).read_text()
        assert re.search(r"^USER \d+", text, re.M), f"{name}: runs as root"
        assert 'pip install ".' in text
    text = (root / "Dockerfile").read_text()
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    for src in re.findall(r"^COPY (?!--from)(.+?) \S+$", text, re.M):
        for part in src.split():
            p = root / part
            (shutil.copytree if p.is_dir() else shutil.copy)(p, ctx / part)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp_path / "w"), str(ctx)], check=True, timeout=300)
    (wheel,) = (tmp_path / "w").glob("skybatch-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "skybatch/profiles/kubernetes.yaml" in names and "skybatch/profiles/slurm.yaml" in names
    assert any(n.startswith("skybatch/schemas/") and n.endswith(".json") for n in names)
    assert "skybatch/orchestrate/ingest.py" in names and "skybatch/cluster_check.py" in names
    assert "skybatch/__init__.pyi" in names and "skybatch/py.typed" in names
    assert not any(n.startswith("flows/") for n in names), "a top-level `flows` package is installed"


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


def test_scheduler_without_workers_is_a_clear_error_not_a_hang():
    from distributed import LocalCluster

    from skybatch.cluster_check import WorkerEnvironmentError

    with LocalCluster(n_workers=0, host="127.0.0.1", dashboard_address="127.0.0.1:0") as empty:
        with pytest.raises(WorkerEnvironmentError, match=r"0 of 1 worker\(s\) joined within 1 s.*dask worker"):
            with cluster_client(empty.scheduler_address, quiet=True, start_timeout=1):
                pass


def test_worker_without_a_package_is_named(dask_client, monkeypatch):
    """The worker side of the check for real: a distribution the workers do not have is 'not installed'."""
    from skybatch import cluster_check

    monkeypatch.setattr(cluster_check, "CHECKED_PACKAGES", ("skybatch", "skybatch-absent-plugin"))
    real = cluster_check._version
    monkeypatch.setattr(cluster_check, "_version", lambda n: "1.0" if n == "skybatch-absent-plugin" else real(n))
    problems = cluster_check.worker_mismatches(dask_client)
    workers = dask_client.scheduler_info()["workers"]
    assert set(problems) == {f"{a} ({w['name']})" for a, w in workers.items()}  # address and name
    assert all(p == ["skybatch-absent-plugin is not installed (driver has 1.0)"] for p in problems.values())
    with pytest.raises(cluster_check.WorkerEnvironmentError, match="(?s)2 worker.*absent-plugin is not installed"):
        cluster_check.check_workers(dask_client, "the test cluster")
