"""A flaky HTTP proxy on 127.0.0.1 in front of an S3 server (moto): 503s and connection resets.

Each request is, with probability ``p_fail``, answered by a fault instead of (or after) being
forwarded: half of the faults are ``503 SlowDown`` replies, half are connection resets (RST),
and of the resets half happen *after* the request reached the server (so the server acted on
it and the client never heard back). Everything else is forwarded unchanged.
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_SLOWDOWN = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
             b'<Message>Please reduce your request rate.</Message></Error>')


def set_botocore_backoff_scale(scale: float) -> float:
    """Multiply botocore's standard-mode retry waits (``rand * 2**(attempt-1)`` s, up to 20 s) by ``scale`` in
    this process; returns the previous scale. botocore has no setting for its back-off; 1.0 is its own."""
    from botocore.retries.standard import ExponentialBackoff

    if "_unscaled_delay_amount" not in ExponentialBackoff.__dict__:
        unscaled = ExponentialBackoff.delay_amount

        def delay_amount(self, context):
            return ExponentialBackoff._skybatch_scale * unscaled(self, context)

        ExponentialBackoff._unscaled_delay_amount = unscaled
        ExponentialBackoff._skybatch_scale = 1.0
        ExponentialBackoff.delay_amount = delay_amount
    old = ExponentialBackoff._skybatch_scale
    ExponentialBackoff._skybatch_scale = float(scale)
    return old


@contextmanager
def short_botocore_backoff(client, scale: float = 0.05) -> Iterator[None]:
    """botocore's retry waits times ``scale`` in this process and on every worker of ``client`` while the block
    runs (the same retries of the same faults, ~1/scale times shorter sleeps); botocore's own waits after."""
    set_botocore_backoff_scale(scale)
    client.run(set_botocore_backoff_scale, scale)
    try:
        yield
    finally:
        set_botocore_backoff_scale(1.0)
        client.run(set_botocore_backoff_scale, 1.0)


class FlakyProxy:
    """Start with :meth:`start`; ``url`` is its endpoint; ``counts`` what it did."""

    def __init__(self, upstream: str, p_fail: float = 0.2, seed: int = 0):
        host, port = upstream.split("://", 1)[1].split(":")
        self.upstream = (host, int(port))
        self.p_fail = p_fail
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.counts = {"forwarded": 0, "503": 0, "reset-before": 0, "reset-after": 0}
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        n = int(self.rfile.readline().strip().split(b";")[0], 16)
                        if n == 0:
                            self.rfile.readline()
                            return out
                        out += self.rfile.read(n)
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length", 0) or 0)
                return self.rfile.read(n) if n else b""

            def _reset(self) -> None:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True

            def _handle(self) -> None:
                body = self._body()
                with proxy.lock:
                    r = proxy.rng.random()
                    fault = None
                    if r < proxy.p_fail / 2:
                        fault = "503"
                    elif r < proxy.p_fail * 3 / 4:
                        fault = "reset-before"
                    elif r < proxy.p_fail:
                        fault = "reset-after"
                    proxy.counts[fault or "forwarded"] += 1
                if fault == "503":
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(_SLOWDOWN)))
                    self.end_headers()
                    self.wfile.write(_SLOWDOWN)
                    return
                if fault == "reset-before":
                    return self._reset()
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding",)}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                if fault == "reset-after":
                    return self._reset()
                self.send_response(resp.status, resp.reason)
                head = self.command == "HEAD"  # a HEAD reply keeps the object's Content-Length
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection") and (head or k.lower() != "content-length"):
                        self.send_header(k, v)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):  # a client that gave up mid-reply: expected here
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> FlakyProxy:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
