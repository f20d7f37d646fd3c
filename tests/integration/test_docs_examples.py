"""Every code example in README.md and docs/ runs, against a real stack, so none can rot.

One test per page (a new page is picked up by itself): the page's ```python blocks run in
order in one fresh subprocess with one shared namespace, and its ``$ dspex-jobs ...`` console
lines run as real CLI calls (see ``docs_examples.py``). The environment points ``Client()``
and the CLI at a stack started once for the module: subprocess workers on the general,
neural and optimizer queues, on this module's Redis database (44), with the session's local
LM server as ``DSPEX_LM``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from conftest import LM_API_KEY, LM_MODEL, redis_db_url
from docs_examples import FAILURE_MARK, ROOT, pages, runnable_blocks

from dspex_jobs.embedded import EmbeddedRedis
from dspex_jobs.stack import LocalStack

# A page may load a model (lm_server.md, the first embedding): more than the default 120 s
# on a loaded 2-core machine, though about 10 s on a quiet one.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

DB = 44
PAGE_TIMEOUT_S = 280
RUNNER = Path(__file__).with_name("docs_examples.py")

PAGES = [p for p in pages() if runnable_blocks(p)]


@pytest.fixture(scope="module")
def docs_env(redis_server: EmbeddedRedis, lm_server: object) -> Iterator[dict[str, str]]:
    """The environment a reader would have: DSPEX_* pointing at a running deployment."""
    url = redis_db_url(redis_server, DB)
    redis.Redis.from_url(url).flushdb()
    stack = LocalStack(
        redis_url=url,
        lm=LM_MODEL,
        lm_api_base=lm_server.url,  # type: ignore[attr-defined]
        queues=["general", "neural", "optimizer"],
        env={"DSPEX_LM_API_KEY": LM_API_KEY},
    )
    with stack:
        env = stack.worker_env()
        env["DSPEX_LM_API_KEY"] = LM_API_KEY
        env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        yield env
    redis.Redis.from_url(url).flushdb()


def test_every_page_with_examples_is_collected() -> None:
    # Given the docs tree, expect the pages with examples to include the README and the guides
    names = {p.relative_to(ROOT).as_posix() for p in PAGES}
    assert {"README.md", "docs/getting_started.md", "docs/examples/basic_usage.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_page_examples_run(page: Path, docs_env: dict[str, str], tmp_path: Path) -> None:
    # Given a page's examples, run in a fresh interpreter in a scratch directory
    done = subprocess.run(
        [sys.executable, str(RUNNER), str(page)],
        env=docs_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=PAGE_TIMEOUT_S,
    )
    # Expect every block to run; a failure names the page, the block and its line
    if done.returncode != 0:
        marker = next(
            (line for line in done.stderr.splitlines() if line.startswith(FAILURE_MARK)), ""
        )
        detail = done.stderr.split(marker, 1)[-1] if marker else done.stderr
        pytest.fail(
            f"{marker or 'docs examples failed'}\n{detail[-6000:]}\n"
            f"--- stdout\n{done.stdout[-2000:]}",
            pytrace=False,
        )
    assert done.returncode == 0


def test_runner_reports_page_block_and_line(tmp_path: Path) -> None:
    # Given a page whose second python block fails on its second line
    page = tmp_path / "selftest.md"
    text = (
        "# t\n\n```python\nx = 1\n```\n\n```toml\nnot = 'run'\n```\n\n"
        "```python\ny = x\nz = w\n```\n"
    )
    page.write_text(text)
    done = subprocess.run(
        [sys.executable, str(RUNNER), str(page)],
        cwd=tmp_path,
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Expect exit 1, the block's number and the failing line of the page, and the NameError
    assert done.returncode == 1
    assert f"{FAILURE_MARK} {page} block 3 (python, line 13)" in done.stderr
    assert "NameError: name 'w' is not defined" in done.stderr
