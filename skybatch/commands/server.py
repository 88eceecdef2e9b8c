"""`skybatch server start | stop | status`: one local Prefect API server that CLI runs share.

Without a Prefect server configured, Prefect starts a temporary server for every process
(10-20 s on a busy 2-core machine) and stops it at exit. ``skybatch run`` instead starts one
API server on 127.0.0.1 the first time it is needed and leaves it running, so the next command
starts its work within a few seconds. ``skybatch server stop`` stops it; ``skybatch server
status`` says where it is. Its state (pid, URL, log file) lives in ``$PREFECT_HOME/skybatch-server.json``;
its database is Prefect's usual ``$PREFECT_HOME/prefect.db``.

It is Prefect's own API app (``prefect.server.api.server:create_app``) run by uvicorn, as
Prefect's temporary server is, without the UI and the scheduling services; for the UI and
deployments run ``prefect server start`` and export ``PREFECT_API_URL`` (then skybatch uses that).

Settings (environment):

- ``PREFECT_API_URL`` set (or set in the active Prefect profile): skybatch uses that server.
- ``SKYBATCH_PREFECT_SERVER=temporary``: no shared server; Prefect's temporary one per run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HELP = "start, stop or show the local Prefect API server that skybatch runs share"

#: Environment variable choosing the server mode: "shared" (default) or "temporary".
MODE_ENV = "SKYBATCH_PREFECT_SERVER"


def prefect_home() -> Path:
    """``$PREFECT_HOME`` (default ``~/.prefect``), without importing Prefect."""
    return Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()


def state_path() -> Path:
    """Where the shared server's pid, URL and log file are recorded."""
    return prefect_home() / "skybatch-server.json"


def _healthy(api_url: str, timeout: float = 2.0) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as r:
            return r.status == 200
    except Exception:  # noqa: BLE001 - any failure means "not reachable"
        return False


def _pid_is_server(pid: int) -> bool:
    """True if ``pid`` is alive and is a uvicorn running Prefect's app (not a recycled pid)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return True  # no /proc (macOS): trust the live pid
    return "uvicorn" in cmd and "prefect.server.api.server:create_app" in cmd


def running_server() -> dict[str, Any] | None:
    """The shared server's state if it is running and answers, else None (a stale state file is removed)."""
    p = state_path()
    try:
        state = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    if _pid_is_server(int(state.get("pid", -1))) and _healthy(state["api_url"]):
        return state
    if not _pid_is_server(int(state.get("pid", -1))):
        p.unlink(missing_ok=True)  # left by a server that died (or a kill -9 of the machine)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _start_lock():
    """Serialise starts across processes (two commands started at once share one server)."""
    import fcntl

    home = prefect_home()
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "skybatch-server.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def start_server(timeout: float = 120.0) -> tuple[dict[str, Any], bool]:
    """Start the shared server unless one runs; returns ``(state, started_now)``.

    The server runs in its own session (a Ctrl-C in the terminal does not reach it) with its
    output in ``$PREFECT_HOME/skybatch-server.log``.
    """
    with _start_lock():
        state = running_server()
        if state is not None:
            return state, False
        import importlib.util

        prefect_spec = importlib.util.find_spec("prefect")
        if prefect_spec is None or prefect_spec.origin is None:
            raise RuntimeError("the local Prefect server needs Prefect: pip install 'prefect>=3'")
        prefect_dir = Path(prefect_spec.origin).parent  # not imported: settings stay unread
        port = _free_port()
        log_path = prefect_home() / "skybatch-server.log"
        env = {**os.environ, "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1",
               "PREFECT_UI_ENABLED": "0", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        env.pop("PREFECT_API_URL", None)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect_dir.parent), "--factory",
                 "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
                 "--log-level", "error", "--lifespan", "on"],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )
        api_url = f"http://127.0.0.1:{port}/api"
        deadline = time.monotonic() + timeout
        try:
            while not _healthy(api_url, timeout=1.0):
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = log_path.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"the local Prefect server did not start within {timeout:.0f} s "
                                       f"(log {log_path}):\n{tail}")
                time.sleep(0.2)
        except BaseException:  # timed out, or Ctrl-C / SIGTERM while waiting: leave nothing behind
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        state = {"pid": proc.pid, "api_url": api_url, "log": str(log_path), "started": time.time(),
                 "prefect_home": str(prefect_home())}
        tmp = state_path().with_suffix(".json.tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(state_path())
        return state, True


def stop_server(timeout: float = 10.0) -> bool:
    """Stop the shared server (SIGTERM, then SIGKILL after ``timeout`` s); False if none was running."""
    p = state_path()
    try:
        state = json.loads(p.read_text())
    except (OSError, ValueError):
        return False
    pid = int(state.get("pid", -1))
    stopped = False
    if _pid_is_server(pid):
        os.killpg(pid, signal.SIGTERM) if _is_group_leader(pid) else os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _pid_alive(pid) and time.monotonic() < deadline:  # until it is gone, not only until it stops
            time.sleep(0.1)                                      # looking like the server (cmdline mid-exit)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5.0
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        stopped = True
    p.unlink(missing_ok=True)
    return stopped


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie awaiting its parent's wait counts as gone)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _is_group_leader(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def configured_api_url() -> str | None:
    """The Prefect API URL from the environment or the active Prefect profile, if any."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    try:
        from prefect.settings import get_current_settings

        url = get_current_settings().api.url
    except Exception:  # noqa: BLE001 - an unreadable profile is Prefect's to report later
        return None
    return str(url) if url else None


def use_shared_server(say=print) -> str | None:
    """Point this process (and the cluster it starts) at the shared server, starting it if needed.

    Returns the API URL, or None when a server is configured already or the mode is ``temporary``.
    """
    if os.environ.get(MODE_ENV, "shared") == "temporary" or configured_api_url():
        return None
    state = running_server()
    if state is None:
        say("starting a local Prefect API server for skybatch runs (once; it stays up for the next commands, "
            "`skybatch server stop` stops it) ...")
        state, _ = start_server()
    os.environ["PREFECT_API_URL"] = state["api_url"]  # for this process and the workers it starts
    if "prefect" in sys.modules:  # settings were read at import: point the live settings at it too
        from prefect.settings import PREFECT_API_URL, temporary_settings

        ctx = temporary_settings(updates={PREFECT_API_URL: state["api_url"]})
        ctx.__enter__()
        _SETTINGS_CTX.append(ctx)
    return state["api_url"]


_SETTINGS_CTX: list = []


_ENABLED: dict[str, object] = {}


def enable_for_cli(say=print) -> None:
    """Called by the CLI: the first flow module imported afterwards calls :func:`use_shared_server`
    (after the command has checked its settings, so a usage error never waits for a server)."""
    _ENABLED.clear()
    if say is not None:
        _ENABLED["say"] = say


def on_flow_import() -> None:
    """Hook run by ``skybatch.orchestrate._common`` when a flow module is imported (does nothing outside the CLI)."""
    say = _ENABLED.pop("say", None)
    if say is not None:
        use_shared_server(say=say)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["start", "stop", "status"], help="what to do")


def run(args: argparse.Namespace) -> int:
    if args.action == "start":
        url = configured_api_url()
        if url and os.environ.get("PREFECT_API_URL") != (running_server() or {}).get("api_url"):
            print(f"PREFECT_API_URL is set ({url}): skybatch runs use that server; not starting another")
            return 0
        state, started = start_server()
        print(f"{'started' if started else 'already running'}: Prefect API {state['api_url']} "
              f"(pid {state['pid']}, log {state['log']})")
        return 0
    if args.action == "stop":
        print("stopped the local Prefect API server" if stop_server() else "no skybatch Prefect server is running")
        return 0
    current = running_server()
    if current is None:
        print("no skybatch Prefect server is running (the next `skybatch run` starts one)")
        return 1
    print(f"running: Prefect API {current['api_url']} (pid {current['pid']}, log {current['log']})")
    return 0
