"""Dask's convention: ``client=`` wins; else the current client; only with neither is a cluster started.

Run in a fresh interpreter: the check counts every cluster skybatch starts in that process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import json, os, sys
    import skybatch, skybatch.cluster as cm
    from skybatch.jobs import ingest

    started = []
    real = cm.start_cluster
    def counting(profile):  # the real start_cluster still runs; this only counts its calls
        started.append(profile.name)
        return real(profile)
    cm.start_cluster = counting

    def cfg(name):
        return ingest.Config(sources=[os.path.join(sys.argv[1], "none", "*.fits")],
                             store=os.path.join(sys.argv[1], name + ".zarr"), cluster="local", progress=False)

    if __name__ == "__main__":
        from distributed import Client, LocalCluster
        out = {"before": cm.current_client() is None}
        with LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0") as lc:
            with Client(lc) as client:
                out["current_is_client"] = cm.current_client() is client
                rep = ingest.run(cfg("a"))  # no client given: the current one
                out["set_aside"] = [a["reason"] for a in rep.set_aside]
                skybatch.ingest(os.path.join(sys.argv[1], "none", "*.fits"), os.path.join(sys.argv[1], "b.zarr"),
                                cluster="local", progress=False)
                out["started_inside"] = list(started)
                out["client_running"] = client.status == "running"
            with Client(lc, set_as_default=False) as other:
                ingest.run(cfg("c"), client=other)  # client= given, no current client
                out["started_with_argument"] = list(started)
        out["after_closed"] = cm.current_client() is None
        ingest.run(cfg("d"))  # neither: one cluster is started from cfg.cluster
        out["started_alone"] = list(started)
        print("RESULT " + json.dumps(out))
''')


def test_current_client_then_argument_then_a_new_cluster(tmp_path):
    script = tmp_path / "check.py"
    script.write_text(SCRIPT)
    r = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.split("RESULT ", 1)[1])
    assert out["before"] and out["current_is_client"]
    assert out["set_aside"] == ["not-found"]
    assert out["started_inside"] == [] and out["client_running"]
    assert out["started_with_argument"] == []
    assert out["after_closed"]
    assert out["started_alone"] == ["local"]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
