"""Several hosts: Redis, a producer and two workers in separate network namespaces.

Each namespace has only its own address on a private /24, joined through a bridge in a
fifth namespace by veth pairs; nothing can reach anything outside it (no route, no other
address). Redis and the LM server live on the "redis" host, the producer on its own, and
each worker on its own host. Mid-run, worker A's link is cut: the jobs it held come back
after the visibility timeout (their leases lapse because A cannot renew them) and worker B
completes every one of them. Before that, a session with strict affinity runs all its jobs
on one host, through that worker's own queue.

Needs root and ``ip netns``; skipped with the reason printed otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dspex_jobs.embedded import find_redis_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
JOBS = int(os.environ.get("DSPEX_TEST_NETNS_JOBS", "6"))
VISIBILITY_S = 8


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root for ip netns"
    if shutil.which("ip") is None:
        return "no `ip` command"
    name = f"dspexprobe{os.getpid() % 100000}"
    probe = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"`ip netns add` failed: {probe.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def _ip(*args: str, ns: str | None = None) -> None:
    argv = ["ip", "netns", "exec", ns, "ip", *args] if ns else ["ip", *args]
    subprocess.run(argv, check=True, capture_output=True, timeout=15)


class PrivateNetwork:
    """Namespaces joined by a bridge: ``hosts`` maps a host name to its address."""

    def __init__(self, names: list[str]) -> None:
        tag = f"{os.getpid() % 10000}{random.randint(0, 99)}"
        self.subnet = f"10.213.{random.randint(1, 254)}"
        self.bridge_ns = f"dspexbr{tag}"
        self.ns = {name: f"dspex{name}{tag}" for name in names}
        self.hosts = {name: f"{self.subnet}.{i + 1}" for i, name in enumerate(names)}
        self.links = {name: (f"dx{tag}{i}h", f"dx{tag}{i}b") for i, name in enumerate(names)}

    def __enter__(self) -> PrivateNetwork:
        try:
            _ip("netns", "add", self.bridge_ns)
            _ip("link", "add", "br0", "type", "bridge", ns=self.bridge_ns)
            _ip("link", "set", "br0", "up", ns=self.bridge_ns)
            for name, ns in self.ns.items():
                inside, port = self.links[name]
                _ip("netns", "add", ns)
                _ip("link", "add", inside, "type", "veth", "peer", "name", port)
                _ip("link", "set", inside, "netns", ns)
                _ip("link", "set", port, "netns", self.bridge_ns)
                _ip("link", "set", "lo", "up", ns=ns)
                _ip("addr", "add", f"{self.hosts[name]}/24", "dev", inside, ns=ns)
                _ip("link", "set", inside, "up", ns=ns)
                _ip("link", "set", port, "master", "br0", ns=self.bridge_ns)
                _ip("link", "set", port, "up", ns=self.bridge_ns)
        except BaseException:
            self.__exit__()
            raise
        return self

    def run(
        self, host: str, argv: list[str], env: dict[str, str], **kwargs: object
    ) -> subprocess.Popen[str]:
        """Start ``argv`` on ``host`` (in its namespace), in its own process group."""
        return subprocess.Popen(
            ["ip", "netns", "exec", self.ns[host], *argv],
            env=env,
            text=True,
            start_new_session=True,
            **kwargs,
        )  # type: ignore[call-overload]

    def cut(self, host: str) -> None:
        """Take the host's link down: its packets go nowhere, as with a pulled cable."""
        _ip("link", "set", self.links[host][1], "down", ns=self.bridge_ns)

    def __exit__(self, *_: object) -> None:
        for ns in [*self.ns.values(), self.bridge_ns]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _stop(proc: subprocess.Popen[str] | None) -> None:
    if proc is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


@pytest.fixture(scope="module")
def network() -> Iterator[PrivateNetwork]:
    reason = _unavailable()
    if reason:
        print(f"\nSKIPPED several-hosts test: {reason}")
        pytest.skip(f"several-hosts test skipped: {reason}")
    with PrivateNetwork(["redis", "producer", "a", "b"]) as net:
        yield net


def test_jobs_of_a_cut_off_worker_are_redelivered_to_the_other(
    network: PrivateNetwork, tmp_path: Path
) -> None:
    redis_host = network.hosts["redis"]
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("DSPEX_")}
    base.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    started: list[subprocess.Popen[str]] = []
    logs = {}
    try:
        redis = network.run(
            "redis",
            [
                find_redis_server(),
                "--bind",
                redis_host,
                "--port",
                "6379",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--dir",
                str(tmp_path),
            ],
            base,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        started.append(redis)
        lm = network.run(
            "redis",
            [
                sys.executable,
                "-m",
                "dspex_jobs",
                "lm-server",
                "--host",
                redis_host,
                "--port",
                "8765",
                "--latency-ms",
                "1500",
            ],
            base,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        started.append(lm)
        assert lm.stdout is not None
        for line in lm.stdout:  # the server says when it answers
            if "listening on" in line:
                break
        env = {
            **base,
            "DSPEX_REDIS_URL": f"redis://{redis_host}:6379/0",
            "DSPEX_LM": "openai/extractive-minilm",
            "DSPEX_LM_API_BASE": f"http://{redis_host}:8765/v1",
            "DSPEX_LM_API_KEY": "k",
            "DSPEX_VISIBILITY_TIMEOUT_S": str(VISIBILITY_S),
            "DSPEX_LEASE_TTL_S": "3",
            "DSPEX_SOCKET_TIMEOUT_S": "3",
            "DSPEX_LM_TIMEOUT_S": "5",
            "DSPEX_JOB_MAX_RETRIES": "0",
        }
        for host in ("a", "b"):
            logs[host] = open(tmp_path / f"worker-{host}.log", "w")  # noqa: SIM115
            started.append(
                network.run(
                    host,
                    [
                        sys.executable,
                        "-m",
                        "dspex_jobs",
                        "worker",
                        "--queue",
                        "general",
                        "--concurrency",
                        "2",
                        "--hostname",
                        f"general@host-{host}",
                    ],
                    env,
                    stdout=logs[host],
                    stderr=subprocess.STDOUT,
                )
            )
        producer = network.run(
            "producer",
            [sys.executable, str(HERE / "netns_producer.py"), str(JOBS)],
            env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        started.append(producer)
        assert producer.stdout is not None and producer.stdin is not None
        line = producer.stdout.readline()
        assert line.startswith("RUNNING_ON_A"), line + producer.stdout.read()[-3000:]
        network.cut("a")
        cut_at = time.monotonic()
        producer.stdin.write("cut\n")
        producer.stdin.flush()
        out = producer.stdout.read()
        producer.wait(30)
        elapsed = time.monotonic() - cut_at
        summary = json.loads(out.strip().splitlines()[-1])
    finally:
        for proc in reversed(started):
            _stop(proc)
        for log in logs.values():
            log.close()
    outcomes = summary["outcomes"]
    print(
        "several hosts:",
        json.dumps(
            {
                "jobs": JOBS,
                "held_by_a_at_cut": len(summary["on_a_at_cut"]),
                "completed_by_b": sum(
                    o.get("worker") == "general@host-b" for o in outcomes.values()
                ),
                "seconds_after_cut": round(elapsed, 1),
            }
        ),
    )
    assert all(o["status"] == "succeeded" for o in outcomes.values()), outcomes
    workers = set(summary["session_workers"])  # one host ran the whole session
    assert len(workers) == 1 and workers <= {"general@host-a", "general@host-b"}, workers
    for job in summary["on_a_at_cut"]:  # what A held went to B
        assert outcomes[job]["worker"] == "general@host-b", outcomes[job]
