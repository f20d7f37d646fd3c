"""`make demo` runs `dspex-jobs demo`: answers from the local model, nothing left running."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def _processes_mentioning(*needles: str) -> list[str]:
    """Command lines of processes whose command line or environment contains a needle."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read().decode(errors="replace")
        except OSError:
            continue
        if any(n in cmdline or n in environ for n in needles):
            found.append(cmdline)
    return found


def test_demo_answers_and_leaves_no_process_behind() -> None:
    # Given a fresh environment with no DSPEX_ settings (embedded Redis, local LM)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSPEX_")}
    # When the demo runs
    done = subprocess.run(
        [sys.executable, "-m", "dspex_jobs", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # Expect exit 0 and both jobs' answers, taken from the context, with timings and tokens
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "== predict" in out and "== chain_of_thought" in out
    answers = re.findall(r"^  answer +(.+)$", out, flags=re.M)
    assert len(answers) == 2 and all("queue" in a for a in answers), out
    assert re.search(r"^  reasoning +\S", out, flags=re.M)
    assert re.findall(r"tokens +openai/extractive-minilm: prompt [1-9]", out)
    # And nothing it started still runs
    port = re.search(r"redis redis://127\.0\.0\.1:(\d+)/0", out)
    lm_port = re.search(r"at http://127\.0\.0\.1:(\d+)/v1", out)
    assert port and lm_port, out
    assert (
        _processes_mentioning(
            f"--port {port.group(1)}", f"127.0.0.1:{port.group(1)}", f"--port {lm_port.group(1)}"
        )
        == []
    )
