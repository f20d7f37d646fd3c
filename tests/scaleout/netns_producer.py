"""The producer of the network-namespace test, run inside its own namespace.

It talks to Redis only through ``DSPEX_REDIS_URL`` (an address in the test's private
network). Protocol on stdout/stdin with the test: it waits for both workers, runs three jobs
in one session (strict affinity: all on one host), submits the jobs, prints
``RUNNING_ON_A <ids>`` once host A runs at least one of them, waits for a line on stdin (the
test has cut host A's link), then waits for every job and prints one JSON line.
"""

from __future__ import annotations

import json
import sys
import time

from dspex_jobs.client import Client
from dspex_jobs.errors import DSPexError
from dspex_jobs.health import check_health

HOST_A = "general@host-a"


def main() -> None:
    jobs = int(sys.argv[1])
    with Client() as client:
        deadline = time.monotonic() + 180
        while len(check_health(client.settings, ("general",)).queues[0].workers) < 2:
            if time.monotonic() > deadline:
                sys.exit("the two workers never came up")
            time.sleep(0.3)
        # Session affinity across hosts: a session's jobs go to the worker (host) that ran
        # its first one, through that worker's own queue.
        session = client.session(affinity="strict", vars={"context": "Sessions stay put."})
        session_workers = [
            session.predict("context, question -> answer", question="Where do sessions stay?")
            .result(timeout=60)
            .worker
            for _ in range(3)
        ]
        handles = [
            client.predict(
                "context, question -> answer",
                inputs={
                    "context": f"Job {i} ran on some host.",
                    "question": "Where did the job run?",
                },
            )
            for i in range(jobs)
        ]
        on_a: list[str] = []
        while not on_a:
            states = {h.id: client._store.state(h.id) or {} for h in handles}
            on_a = [job for job, state in states.items() if state.get("worker") == HOST_A]
            if time.monotonic() > deadline:
                sys.exit("host A never started a job")
            time.sleep(0.05)
        print("RUNNING_ON_A", " ".join(on_a), flush=True)
        sys.stdin.readline()  # the link is cut
        outcomes = {}
        for handle in handles:
            try:
                result = handle.result(timeout=120)
                outcomes[handle.id] = {
                    "status": result.status.value,
                    "worker": result.worker,
                    "attempt": result.attempt,
                }
            except DSPexError as exc:
                outcomes[handle.id] = {"status": "failed", "code": exc.code}
        print(
            json.dumps(
                {"on_a_at_cut": on_a, "outcomes": outcomes, "session_workers": session_workers}
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
