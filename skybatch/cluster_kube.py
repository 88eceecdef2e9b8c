"""The Kubernetes profile: a ``DaskCluster`` resource for the dask-kubernetes operator.

The resource has the structure ``dask_kubernetes.operator.make_cluster_spec`` returns (used when
dask-kubernetes is installed; rendered here the same way when it is not, so ``skybatch cluster show
kubernetes`` works without the extra), then skybatch's changes on top:

- the image is a skybatch worker image (``Dockerfile`` / ``Dockerfile.cuda`` at the repository
  root), tagged with this skybatch version: workers must match the driver (see
  :mod:`skybatch.cluster_check`);
- the scheduler Service is ``ClusterIP``: reachable only from inside the Kubernetes cluster (from
  outside, ``kubectl port-forward``). Any other Service type (``LoadBalancer``, ``NodePort``) is
  refused unless TLS is configured (``tls: {secret: NAME}``: a Secret with ``ca.crt``, ``tls.crt``,
  ``tls.key``), which switches scheduler and workers to ``tls://`` with those files;
- worker threads, image pull policy, namespace.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["kubernetes_spec", "default_image", "TLS_DIR"]

#: Where the TLS Secret is mounted in scheduler and worker pods.
TLS_DIR = "/etc/dask/tls"


def default_image() -> str:
    """``skybatch:<this version>``: the tag `docker build -t skybatch:$(skybatch --version) .` gives."""
    import skybatch

    return f"skybatch:{skybatch.__version__}"


def _base_spec(name: str, image: str, n_workers: int, resources: dict, env: dict, worker_command: str,
               service_type: str) -> dict[str, Any]:
    """``make_cluster_spec(...)`` of dask-kubernetes, or the same structure when it is not installed."""
    try:
        from dask_kubernetes.operator import make_cluster_spec
    except ImportError:
        pass
    else:
        return make_cluster_spec(name=name, image=image, n_workers=n_workers, resources=resources, env=env,
                                 worker_command=worker_command, scheduler_service_type=service_type)
    return _render_spec(name, image, n_workers, resources, env, worker_command, service_type)


def _render_spec(name: str, image: str, n_workers: int, resources: dict, env: dict, worker_command: str,
                 service_type: str) -> dict[str, Any]:
    """The structure of ``make_cluster_spec`` (dask-kubernetes 2026.3), for when it is not installed."""
    env_list = [{"name": k, "value": v} for k, v in env.items()]
    health = {"httpGet": {"port": "http-dashboard", "path": "/health"}}
    worker = {
        "name": "worker", "image": image,
        "args": worker_command.split(" ") + ["--name", "$(DASK_WORKER_NAME)", "--dashboard", "--dashboard-address", "8788"],
        "env": env_list, "resources": resources,
        "ports": [{"name": "http-dashboard", "containerPort": 8788, "protocol": "TCP"}],
    }
    scheduler = {
        "name": "scheduler", "image": image, "args": ["dask-scheduler", "--host", "0.0.0.0"],
        "env": env_list, "resources": resources,
        "ports": [{"name": "tcp-comm", "containerPort": 8786, "protocol": "TCP"},
                  {"name": "http-dashboard", "containerPort": 8787, "protocol": "TCP"}],
        "readinessProbe": {**health, "initialDelaySeconds": 0, "periodSeconds": 1, "timeoutSeconds": 300},
        "livenessProbe": {**health, "initialDelaySeconds": 15, "periodSeconds": 20},
    }
    return {
        "apiVersion": "kubernetes.dask.org/v1",
        "kind": "DaskCluster",
        "metadata": {"name": name},
        "spec": {
            "idleTimeout": 0,
            "worker": {"replicas": n_workers, "spec": {"containers": [worker]}},
            "scheduler": {
                "spec": {"containers": [scheduler]},
                "service": {
                    "type": service_type,
                    "selector": {"dask.org/cluster-name": name, "dask.org/component": "scheduler"},
                    "ports": [
                        {"name": "tcp-comm", "protocol": "TCP", "port": 8786, "targetPort": "tcp-comm"},
                        {"name": "http-dashboard", "protocol": "TCP", "port": 8787, "targetPort": "http-dashboard"},
                    ],
                },
            },
        },
    }


def kubernetes_spec(profile) -> dict[str, Any]:
    """The ``DaskCluster`` resource a ``kubernetes`` profile starts (a plain dict, YAML-ready).

    Raises ProfileError for a Service type other than ClusterIP without TLS, or a TLS setting
    without a Secret name.
    """
    from skybatch.cluster import ProfileError

    o = profile.options
    name = str(o.get("name") or "skybatch")
    image = str(o.get("image") or default_image())
    env = {str(k): str(v) for k, v in (o.get("env") or {}).items()}
    tls = o.get("tls") or None
    if tls is not None and not (isinstance(tls, dict) and tls.get("secret")):
        raise ProfileError(f"cluster profile {profile.name!r}: tls must be {{secret: NAME}} (a Secret with ca.crt, "
                           f"tls.crt, tls.key), got {tls!r}")
    service_type = str(o.get("service_type") or "ClusterIP")
    if service_type != "ClusterIP" and tls is None:
        raise ProfileError(
            f"cluster profile {profile.name!r}: service_type {service_type} would expose the scheduler outside the "
            "Kubernetes cluster without encryption or authentication; keep ClusterIP (reach it with kubectl "
            "port-forward) or configure tls: {secret: NAME}"
        )
    threads = int(o.get("worker_threads") or 1)
    spec = _base_spec(name, image, int(o.get("n_workers") or 2), dict(o.get("resources") or {}), env,
                      f"dask-worker --nthreads {threads}", service_type)
    spec["metadata"]["namespace"] = str(o.get("namespace") or "default")
    spec["metadata"]["labels"] = {"app.kubernetes.io/name": "skybatch", "app.kubernetes.io/component": "dask"}
    containers = (spec["spec"]["worker"]["spec"]["containers"] + spec["spec"]["scheduler"]["spec"]["containers"])
    for c in containers:
        c["imagePullPolicy"] = str(o.get("image_pull_policy") or "IfNotPresent")
        c["env"] = list(c.get("env") or []) + [{"name": "DASK_LOGGING__DISTRIBUTED", "value": "info"}]
    if tls is not None:
        files = [f"--tls-ca-file={TLS_DIR}/ca.crt", f"--tls-cert={TLS_DIR}/tls.crt", f"--tls-key={TLS_DIR}/tls.key"]
        volume = {"name": "dask-tls", "secret": {"secretName": str(tls["secret"])}}
        for pod in (spec["spec"]["worker"]["spec"], spec["spec"]["scheduler"]["spec"]):
            pod["volumes"] = [volume]
            for c in pod["containers"]:
                c["volumeMounts"] = [{"name": "dask-tls", "mountPath": TLS_DIR, "readOnly": True}]
                c["args"] = list(c["args"]) + ["--protocol", "tls"] + files
    return json.loads(json.dumps(spec))  # no shared sub-objects (they would print as YAML anchors)
