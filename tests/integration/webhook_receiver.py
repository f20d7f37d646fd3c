"""A real HTTP server for webhook tests: records every POST, answers as each path is told.

Started in a thread on a free loopback port (``http.server``), so tests need no network and
no mock: the webhooks worker makes real HTTP requests to it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    """One request as the receiver saw it."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.time)


class Receiver:
    """``statuses[path]``: answers to give in order (then 200); ``delays_s[path]``: sleep
    before answering; ``redirects[path]``: answer 307 with this Location."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.statuses: dict[str, list[int]] = {}
        self.delays_s: dict[str, float] = {}
        self.redirects: dict[str, str] = {}
        self._lock = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                path = self.path
                with receiver._lock:
                    receiver.requests.append(Received(path, dict(self.headers.items()), body))
                    plan = receiver.statuses.get(path)
                    status = plan.pop(0) if plan else 200
                    receiver._lock.notify_all()
                delay = receiver.delays_s.get(path, 0.0)
                if delay:
                    time.sleep(delay)
                location = receiver.redirects.get(path)
                try:
                    self.send_response(307 if location else status)
                    if location:
                        self.send_header("Location", location)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the client gave up (a timeout test)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def received(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def wait_for(self, path: str, count: int, timeout_s: float = 30.0) -> list[Received]:
        """Block until ``path`` got ``count`` requests; return them."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while True:
                found = [r for r in self.requests if r.path == path]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"{path} got {len(found)} of {count} requests"
                self._lock.wait(remaining)

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
