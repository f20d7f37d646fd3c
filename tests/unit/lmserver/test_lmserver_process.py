"""The server as a child process (``python -m dspex_jobs.lmserver``) and its start failures."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request

import pytest

from dspex_jobs.lmserver import LMServerConfig, LMServerProcess, LMServerStartError


def test_process_serves_and_stops_cleanly() -> None:
    # Given a server process with an API key and a seeded 429 on every request
    config = LMServerConfig(api_key="k", rate_limit_rate=1.0, seed=1)
    with LMServerProcess(config, ready_timeout_s=90) as server:
        # Expect it to answer on the URL from its ready line
        assert server.url.startswith("http://127.0.0.1:") and server.url.endswith("/v1")
        request = urllib.request.Request(
            server.url + "/chat/completions",
            method="POST",
            data=json.dumps(
                {"model": "extractive-minilm", "messages": [{"role": "user", "content": "hi"}]}
            ).encode(),
            headers={"Authorization": "Bearer k", "Content-Type": "application/json"},
        )
        with pytest.raises(urllib.request.HTTPError) as info:
            urllib.request.urlopen(request, timeout=10)
        assert info.value.code == 429
        with urllib.request.urlopen(server.url + "/stats", timeout=10) as response:
            assert json.load(response)["faults"] == {"rate_limit": 1}
        assert server.pid is not None
        # When stopped (SIGTERM), expect it to exit by itself with status 0
        assert server.stop() == 0
        assert server.pid is None
        assert server.stop() is None


def test_start_failure_carries_the_child_stderr() -> None:
    # Given a port that is already taken
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # Expect a clear error that quotes what the child said
        with pytest.raises(LMServerStartError) as info:
            LMServerProcess(LMServerConfig(port=port), ready_timeout_s=60).start()
    message = str(info.value)
    assert "exited with status 3" in message
    assert "could not start" in message and "Address already in use" in message


def test_importing_the_package_stays_light() -> None:
    # Producers import dspex_jobs.lmserver for its config; the model loads only in a server.
    code = (
        "import sys, dspex_jobs.lmserver as m\n"
        "assert all(hasattr(m, name) for name in m.__all__)\n"
        "print(sorted({'torch', 'sentence_transformers', 'dspy', 'litellm'} & set(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
