"""Webhook parts without a worker: URL rules, signatures, and the HTTP sender against a
real local server (timeouts, bounded reads, redirects)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from dspex_jobs.errors import ValidationError
from dspex_jobs.webhooks.sender import post_webhook
from dspex_jobs.webhooks.signing import sign, signature_headers, verify_signature
from dspex_jobs.webhooks.urls import check_webhook_url, host_allowed

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from webhook_receiver import Receiver

ALLOWED = ("127.0.0.1",)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def test_urls_need_http_an_allowed_host_and_no_credentials() -> None:
    target = check_webhook_url("https://hooks.example.com/a?b=1", ("*.example.com",))
    assert (target.host, target.port, target.path) == ("hooks.example.com", 443, "/a?b=1")
    assert check_webhook_url("http://127.0.0.1:8080", ("127.0.0.1:8080",)).path == "/"
    for url, allowed, why in [
        ("file:///etc/passwd", ALLOWED, "only http and https"),
        ("http://127.0.0.1:9/x", ("127.0.0.1:8080",), "not in DSPEX_WEBHOOK_ALLOWED_HOSTS"),
        ("http://evil.com/x", ("*.example.com",), "not in"),
        ("http://example.com.evil.com/x", ("example.com",), "not in"),
        ("http://a:b@127.0.0.1/x", ALLOWED, "credentials"),
        ("http:///x", ALLOWED, "no host"),
        ("http://127.0.0.1:99999/x", ALLOWED, "not a valid URL"),
        ("http://127.0.0.1/x", (), "webhooks are off"),
    ]:
        with pytest.raises(ValidationError, match=why) as caught:
            check_webhook_url(url, allowed)
        assert caught.value.details["field"] == "webhook"


def test_wildcards_match_subdomains_only() -> None:
    assert host_allowed("a.b.example.com", 443, ("*.example.com",))
    assert not host_allowed("example.com", 443, ("*.example.com",))
    assert not host_allowed("badexample.com", 443, ("*.example.com",))


def test_signatures_cover_timestamp_and_body() -> None:
    secret = b"k"
    headers = signature_headers(secret, b'{"a":1}', "d1", now=1_000)
    assert headers["X-Dspex-Signature"] == sign(secret, 1_000, b'{"a":1}')
    assert verify_signature(secret, b'{"a":1}', headers, now=1_100)
    assert not verify_signature(secret, b'{"a":2}', headers, now=1_100)  # body changed
    assert not verify_signature(secret, b'{"a":1}', headers, now=2_000)  # too old: replay
    moved = {**headers, "X-Dspex-Timestamp": "1050"}  # a fresher timestamp, same signature
    assert not verify_signature(secret, b'{"a":1}', moved, now=1_100)
    assert not verify_signature(secret, b'{"a":1}', {}, now=1_100)


def _post(receiver: Receiver, path: str, **kwargs: Any) -> Any:
    target = check_webhook_url(receiver.url(path), ALLOWED)
    options: dict[str, Any] = {
        "timeout_s": 1.0,
        "max_response_bytes": 1024,
        "allowed_hosts": ALLOWED,
        **kwargs,
    }
    return post_webhook(target, b"{}", {"Content-Type": "application/json"}, **options)


def test_statuses_decide_retry(receiver: Receiver) -> None:
    receiver.statuses["/s"] = [204, 404, 429, 503]
    assert _post(receiver, "/s").ok
    gone = _post(receiver, "/s")
    assert (gone.ok, gone.retryable, gone.status) == (False, False, 404)
    assert _post(receiver, "/s").retryable and _post(receiver, "/s").retryable


def test_same_host_redirect_is_followed_and_other_hosts_refused(receiver: Receiver) -> None:
    receiver.redirects["/moved"] = "/landing"
    assert _post(receiver, "/moved").ok
    assert len(receiver.received("/landing")) == 1
    receiver.redirects["/away"] = f"http://localhost:{receiver.port}/landing"
    away = _post(receiver, "/away", allowed_hosts=("127.0.0.1", "localhost"))
    assert not away.ok and not away.retryable and "another host" in str(away.error)
    receiver.redirects["/loop"] = "/loop"
    assert "redirects" in str(_post(receiver, "/loop").error)


def test_timeouts_and_dead_ports_are_retryable(receiver: Receiver) -> None:
    receiver.delays_s["/hang"] = 2.0
    hung = _post(receiver, "/hang", timeout_s=0.3)
    assert not hung.ok and hung.retryable and "timed out" in str(hung.error)
    target = check_webhook_url("http://127.0.0.1:1/x", ALLOWED)
    refused = post_webhook(
        target, b"{}", {}, timeout_s=0.5, max_response_bytes=10, allowed_hosts=ALLOWED
    )
    assert refused.retryable and not refused.ok


def test_a_huge_or_trickling_reply_is_cut_short() -> None:
    # Given a server that answers 200 and then streams bytes forever, slowly
    stop = threading.Event()

    class Endless(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(200)
            self.end_headers()
            try:
                while not stop.wait(0.2):
                    self.wfile.write(b"x" * 10)
                    self.wfile.flush()
            except OSError:
                pass

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        target = check_webhook_url(f"http://127.0.0.1:{server.server_address[1]}/", ALLOWED)
        # Expect the attempt to end (the watchdog at 2x the timeout), not to hang
        outcome = post_webhook(
            target, b"{}", {}, timeout_s=0.5, max_response_bytes=10**9, allowed_hosts=ALLOWED
        )
        assert outcome.retryable or outcome.ok
    finally:
        stop.set()
        server.shutdown()
        server.server_close()


def test_allowed_hosts_read_comma_separated_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dspex_jobs.settings import Settings

    monkeypatch.setenv("DSPEX_WEBHOOK_ALLOWED_HOSTS", "127.0.0.1, Hooks.Example.com:8443")
    monkeypatch.setenv("DSPEX_LM_FALLBACKS", "openai/a,openai/b")  # the same decoding
    settings = Settings.from_env()
    assert settings.webhook_allowed_hosts == ("127.0.0.1", "hooks.example.com:8443")
    assert settings.lm_fallbacks == ("openai/a", "openai/b")


def test_pipeline_bodies_look_like_job_bodies() -> None:
    from dspex_jobs.webhooks import pipeline_event

    body = pipeline_event(
        "run1",
        "qa",
        {
            "status": "failed",
            "step": "answer",
            "error": {"code": "lm_timeout"},
            "finished_at": 12.0,
        },
        trace_id="t1",
        created_at=10.0,
    )
    assert body["event"] == "pipeline.failed" and body["kind"] == "pipeline"
    assert body["job_id"] == "run1" and body["error"] == {"code": "lm_timeout"}
    assert body["timings"]["total_s"] == 2.0 and body["trace_id"] == "t1"
