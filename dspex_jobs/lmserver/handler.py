"""The HTTP layer: a threaded stdlib server speaking a subset of the OpenAI API.

Routes (a leading ``/v1`` is optional, so either form of ``api_base`` works):

======  ======================  ========================================================
GET     /health                 200 once the model is loaded, 503 while it loads
GET     /v1/models              the one served model (``/v1/models/{id}`` too)
POST    /v1/chat/completions    an answer, or SSE chunks with ``"stream": true``
GET     /v1/stats               counters: requests, statuses, faults, in flight
POST    /v1/stats/reset         zero the counters and the request log
GET     /v1/requests?last=N     the last N chat requests' message lists, oldest first
======  ======================  ========================================================

With an API key configured, ``/v1/models`` and ``/v1/chat/completions`` answer 401 to a
missing or wrong ``Authorization: Bearer`` header; the other routes stay open (they are
test instruments on loopback). Every thread serves one connection, so slow requests
(added latency, hangs) overlap instead of queueing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from dspex_jobs.lmserver import wire
from dspex_jobs.lmserver.config import LMServerConfig
from dspex_jobs.lmserver.faults import FaultInjector, FaultPlan, error_body
from dspex_jobs.lmserver.model import ExtractiveModel
from dspex_jobs.lmserver.prompt import message_text, parse_messages
from dspex_jobs.lmserver.stats import ServerStats

__all__ = ["LMHTTPServer", "LMRequestHandler", "ServerState"]

logger = logging.getLogger("dspex_jobs.lmserver")

_MODEL_WAIT_S = 300.0
"""How long a chat request waits for a model that is still loading."""


@dataclass
class ServerState:
    """Everything the request handlers share."""

    config: LMServerConfig
    model: ExtractiveModel
    faults: FaultInjector
    stats: ServerStats
    ready: threading.Event = field(default_factory=threading.Event)
    stopping: threading.Event = field(default_factory=threading.Event)
    created: int = field(default_factory=lambda: int(time.time()))


class LMHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its :class:`ServerState` and its open connections."""

    daemon_threads = True
    request_queue_size = 256

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        if ":" in state.config.host:
            self.address_family = socket.AF_INET6
        super().__init__((state.config.host, state.config.port), LMRequestHandler)

    def track(self, sock: socket.socket, open_: bool) -> None:
        """Remember (or forget) a connection so :meth:`close_connections` can end it."""
        with self._connections_lock:
            if open_:
                self._connections.add(sock)
            else:
                self._connections.discard(sock)

    def close_connections(self) -> None:
        """Shut down every open connection (idle keep-alives and hung requests)."""
        with self._connections_lock:
            connections = list(self._connections)
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _BadRequest(Exception):
    def __init__(self, status: int, message: str, code: str, error_type: str) -> None:
        super().__init__(message)
        self.status, self.code, self.error_type = status, code, error_type


class LMRequestHandler(BaseHTTPRequestHandler):
    """One connection's requests; routes to the methods below."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else headers and body wait on delayed ACKs (~40 ms)
    server: LMHTTPServer
    server_version = "dspex-jobs-lm-server/0.1"

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    @property
    def state(self) -> ServerState:
        return self.server.state

    # --- routing -----------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        if path.startswith("/v1/") or path == "/v1":
            path = path[3:] or "/"
        try:
            if (method, path) == ("GET", "/health"):
                self._health()
            elif (method, path) == ("GET", "/stats"):
                self._send_json(200, self.state.stats.snapshot(), count=False)
            elif (method, path) == ("POST", "/stats/reset"):
                self._discard_body()
                self.state.stats.reset()
                self._send_json(200, {"reset": True}, count=False)
            elif (method, path) == ("GET", "/requests"):
                self._requests(parse_qs(url.query))
            elif method == "GET" and (path == "/models" or path.startswith("/models/")):
                self._api(self._models, path)
            elif (method, path) == ("POST", "/chat/completions"):
                self._api(self._chat, path)
            else:
                self._discard_body()
                raise _BadRequest(
                    404,
                    f"No route {method} {self.path}; see docs/lm_server.md.",
                    "not_found",
                    "invalid_request_error",
                )
        except _BadRequest as exc:
            self._send_error(exc.status, str(exc), exc.code, exc.error_type)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:
            logger.exception("lm-server: unexpected error on %s %s", method, self.path)
            self._send_error(
                500, "Internal error in the dspex-jobs LM server.", "internal_error", "server_error"
            )

    def _api(self, route: Callable[[str], None], path: str) -> None:
        with self.state.stats.in_flight():
            self._check_auth()
            route(path)

    # --- routes ------------------------------------------------------------------------

    def _health(self) -> None:
        if self.state.ready.is_set():
            self._send_json(
                200, {"status": "ok", "model": self.state.config.model_name}, count=False
            )
        else:
            self._send_json(
                503, {"status": "loading", "model": self.state.config.model_name}, count=False
            )

    def _requests(self, query: dict[str, list[str]]) -> None:
        try:
            last = int(query.get("last", ["10"])[0])
        except ValueError as exc:
            raise _BadRequest(
                400, "'last' must be an integer.", "invalid_value", "invalid_request_error"
            ) from exc
        self._send_json(200, {"object": "list", "data": self.state.stats.recent(last)}, count=False)

    def _models(self, path: str) -> None:
        name, created = self.state.config.model_name, self.state.created
        if path == "/models":
            self._send_json(200, wire.models_body(name, created))
            return
        wanted = path[len("/models/") :]
        if wanted != name:
            raise _BadRequest(
                404,
                f"The model '{wanted}' does not exist; this server serves '{name}'.",
                "model_not_found",
                "invalid_request_error",
            )
        self._send_json(200, wire.model_entry(name, created))

    def _chat(self, path: str) -> None:
        body = self._read_json()
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _BadRequest(
                400,
                "'messages' must be a non-empty list.",
                "invalid_value",
                "invalid_request_error",
            )
        model = body.get("model")
        if model != self.state.config.model_name:
            raise _BadRequest(
                404,
                f"The model '{model}' does not exist; this server serves "
                f"'{self.state.config.model_name}' (dspy.LM(\"openai/"
                f'{self.state.config.model_name}", api_base=...)).',
                "model_not_found",
                "invalid_request_error",
            )
        self.state.stats.record_request(body)
        plan = self.state.faults.draw()
        if plan.delay_s and self.state.stopping.wait(plan.delay_s):
            self.close_connection = True
            return
        if plan.fault is not None and self._inject(plan):
            return
        if not self.state.ready.wait(_MODEL_WAIT_S):
            raise _BadRequest(503, "The model is still loading.", "model_loading", "server_error")
        content = self._answer(messages, body.get("response_format"))
        usage = wire.usage(messages, content)
        completion_id = wire.new_completion_id()
        if body.get("stream"):
            options = body.get("stream_options") or {}
            include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
            self._stream(completion_id, model, content, usage if include_usage else None)
        else:
            self._send_json(200, wire.completion_body(completion_id, model, content, usage))

    # --- pieces --------------------------------------------------------------------------

    def _answer(self, messages: list[Any], response_format: Any) -> str:
        try:
            prompt = parse_messages(messages, response_format)
            return self.state.model.respond(prompt, response_format)
        except Exception:
            logger.exception("lm-server: could not answer; echoing the last message instead")
            users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
            return message_text(users[-1] if users else messages[-1]).strip()

    def _inject(self, plan: FaultPlan) -> bool:
        """Carry out a fault; True when the request was answered (or abandoned) by it."""
        assert plan.fault is not None
        self.state.stats.record_fault(plan.fault)
        if plan.fault == "hang":
            if plan.hang_s is not None:
                if not self.state.stopping.wait(plan.hang_s):
                    return False  # slept long enough: answer normally
                self.close_connection = True
                return True
            self._hang_until_client_leaves()
            self.close_connection = True
            return True
        headers, payload = self.state.faults.error_response(plan.status)
        self._send_bytes(plan.status, payload, "application/json", headers)
        return True

    def _hang_until_client_leaves(self) -> None:
        sock = self.connection
        while not self.state.stopping.is_set():
            readable, _, _ = select.select([sock], [], [], 0.2)
            if readable:
                try:
                    if not sock.recv(1, socket.MSG_PEEK):
                        return
                except OSError:
                    return
                time.sleep(0.2)

    def _stream(
        self, completion_id: str, model: str, content: str, usage: dict[str, int] | None
    ) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.state.stats.record_status(200)
        delay_s = self.state.config.token_delay_ms / 1000.0
        first = True
        for event in wire.sse_chunks(completion_id, model, content, usage):
            if delay_s and not first and self.state.stopping.wait(delay_s):
                self.close_connection = True
                return
            first = False
            self.wfile.write(b"%x\r\n%b\r\n" % (len(event), event))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _check_auth(self) -> None:
        key = self.state.config.api_key
        if key is None:
            return
        header = self.headers.get("Authorization", "")
        if header != f"Bearer {key}":
            self._discard_body()
            self.state.stats.record_fault("auth")
            raise _BadRequest(
                401,
                "Incorrect API key provided for the dspex-jobs LM server.",
                "invalid_api_key",
                "invalid_request_error",
            )

    def _read_json(self) -> dict[str, Any]:
        length = self._content_length()
        if length > self.state.config.max_request_bytes:
            self.close_connection = True
            raise _BadRequest(
                413,
                f"Request body of {length} bytes is over the "
                f"{self.state.config.max_request_bytes}-byte limit.",
                "request_too_large",
                "invalid_request_error",
            )
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise _BadRequest(
                400,
                f"The request body is not valid JSON: {exc}.",
                "invalid_json",
                "invalid_request_error",
            ) from exc
        if not isinstance(body, dict):
            raise _BadRequest(
                400,
                "The request body must be a JSON object.",
                "invalid_value",
                "invalid_request_error",
            )
        return body

    def _content_length(self) -> int:
        try:
            return max(0, int(self.headers.get("Content-Length", "0")))
        except ValueError:
            self.close_connection = True
            return 0

    def _discard_body(self) -> None:
        length = self._content_length()
        if 0 < length <= self.state.config.max_request_bytes:
            self.rfile.read(length)
        elif length:
            self.close_connection = True

    def _send_error(self, status: int, message: str, code: str, error_type: str) -> None:
        self._send_bytes(status, error_body(status, message, code, error_type), "application/json")

    def _send_json(self, status: int, payload: Any, count: bool = True) -> None:
        self._send_bytes(status, json.dumps(payload).encode(), "application/json", count=count)

    def _send_bytes(
        self,
        status: int,
        payload: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
        count: bool = True,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if count:  # before the body: a client that has its answer must find it counted
            self.state.stats.record_status(status)
        self.wfile.write(payload)
        self.wfile.flush()

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - %s", self.address_string(), format % args)
