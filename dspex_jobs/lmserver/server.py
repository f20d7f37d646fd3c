"""Running the LM server: in a background thread (:class:`LocalLMServer`) or blocking
in the foreground (:func:`serve`, what ``dspex-jobs lm-server`` and
``python -m dspex_jobs.lmserver`` call).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from types import FrameType, TracebackType
from typing import Any, TextIO

from dspex_jobs.lmserver.config import LMServerConfig
from dspex_jobs.lmserver.embedder import Embedder, MiniLMEmbedder
from dspex_jobs.lmserver.faults import FaultInjector
from dspex_jobs.lmserver.handler import LMHTTPServer, ServerState
from dspex_jobs.lmserver.model import ExtractiveModel
from dspex_jobs.lmserver.stats import ServerStats

__all__ = ["READY_LINE_PREFIX", "LocalLMServer", "serve"]

logger = logging.getLogger("dspex_jobs.lmserver")

READY_LINE_PREFIX = "dspex-jobs lm-server listening on "
""":func:`serve` prints this followed by the ``.../v1`` URL once it answers requests."""


class LocalLMServer:
    """The LM server on a background thread of this process.

    Args:
        config: Server options; the defaults serve ``extractive-minilm`` on a free
            loopback port with no latency and no faults.
        embedder: Stand-in for all-MiniLM-L6-v2 (anything with ``encode``); the real
            model, shared by every server in the process, when None.

    Example:
        >>> with LocalLMServer(LMServerConfig(latency_ms=50)) as server:  # doctest: +SKIP
        ...     lm = dspy.LM("openai/extractive-minilm", api_base=server.url, api_key="x")
    """

    def __init__(
        self, config: LMServerConfig | None = None, *, embedder: Embedder | None = None
    ) -> None:
        self.config = config or LMServerConfig()
        self._embedder = embedder
        self._httpd: LMHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.load_time_s: float | None = None
        """Seconds :meth:`start` spent loading the model (near 0 once cached)."""

    @property
    def state(self) -> ServerState:
        """The shared server state (stats, config); only while running."""
        if self._httpd is None:
            raise RuntimeError("LocalLMServer is not running; call start() first.")
        return self._httpd.state

    @property
    def stats(self) -> ServerStats:
        """Live counters and the request log (what ``/v1/stats`` reports)."""
        return self.state.stats

    @property
    def port(self) -> int:
        """The bound TCP port."""
        if self._httpd is None:
            raise RuntimeError("LocalLMServer is not running; call start() first.")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://host:port`` without the ``/v1`` suffix."""
        host = self.config.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The ``api_base`` to give ``dspy.LM``: ``http://host:port/v1``."""
        return self.base_url + "/v1"

    def start(self) -> LocalLMServer:
        """Bind, start answering, and load the model; returns once requests get answers.

        ``/health`` answers 503 while the model loads and 200 afterwards.

        Returns:
            This server, for chaining.
        """
        if self._httpd is not None:
            return self
        embedder = self._embedder or MiniLMEmbedder()
        state = ServerState(
            config=self.config,
            model=ExtractiveModel(
                embedder, top_k=self.config.top_k, bool_threshold=self.config.bool_threshold
            ),
            faults=FaultInjector(self.config),
            stats=ServerStats(self.config.request_log_size),
        )
        self._httpd = LMHTTPServer(state)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"lm-server:{self.port}",
            daemon=True,
        )
        self._thread.start()
        started = time.perf_counter()
        try:
            load = getattr(embedder, "load", None)
            if callable(load):
                load()
        except BaseException:
            self.stop()
            raise
        self.load_time_s = time.perf_counter() - started
        state.ready.set()
        logger.info(
            "lm-server: %s ready at %s (model loaded in %.2f s)",
            self.config.model_name,
            self.url,
            self.load_time_s,
        )
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop answering, end open connections (hung ones too) and release the port."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        httpd.state.stopping.set()
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout_s)
        self._httpd = self._thread = None

    def __enter__(self) -> LocalLMServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve(
    config: LMServerConfig, *, stop_event: threading.Event | None = None, out: TextIO | None = None
) -> None:
    """Run the LM server in the foreground until SIGINT/SIGTERM (or ``stop_event``).

    Prints one line, ``dspex-jobs lm-server listening on http://HOST:PORT/v1``, to ``out``
    (stdout) and flushes it once the model is loaded and requests are answered.

    Args:
        config: Server options.
        stop_event: Set it to stop the server (from another thread).
        out: Where the ready line goes; stdout when None.
    """
    stop = stop_event or threading.Event()
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():

        def _on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, _on_signal)
    server = LocalLMServer(config)
    try:
        server.start()
        stream = out or sys.stdout
        print(READY_LINE_PREFIX + server.url, file=stream, flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
