"""An index outlives the worker that built it: it lives in Redis, not in a worker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from conftest import redis_db_url

from dspex_jobs import Client
from dspex_jobs.embedded import EmbeddedRedis
from dspex_jobs.health import check_health
from dspex_jobs.stack import LocalStack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(redis_server: EmbeddedRedis) -> Iterator[LocalStack]:
    url = redis_db_url(redis_server, 11)
    redis.Redis.from_url(url).flushdb()
    with LocalStack(redis_url=url, lm="openai/none", queues=["neural"]) as running:
        yield running


def test_the_index_survives_a_worker_restart(stack: LocalStack) -> None:
    assert stack.settings is not None
    with Client(stack.settings) as client:
        # Given an index built by the first worker (a real `dspex-jobs worker --queue neural`)
        first = stack.workers[0]
        docs = client.index("kept")
        docs.add(
            ["The Eiffel Tower is in Paris.", "The Colosseum is in Rome.", "Big Ben is in London."],
            ids=["eiffel", "colosseum", "big-ben"],
        )
        assert docs.search("Where is the Eiffel Tower?", k=1)[0].id == "eiffel"
        (queue,) = check_health(stack.settings, ("neural",)).queues
        assert set(queue.devices.values()) <= {"cpu", "cuda"} and queue.devices
        # When that worker stops and another process takes its place
        first.stop()
        assert not first.alive()
        stack.workers.remove(first)
        stack.add_worker("neural")
        stack.wait_for_workers(timeout_s=120)
        # Expect the new worker to search the same index, and to add to it
        assert docs.search("Which landmark is in Rome?", k=1, timeout_s=120)[0].id == "colosseum"
        assert docs.add(["Sagrada Familia is in Barcelona."], ids=["sagrada"]).count == 4
        assert docs.search("a church in Barcelona", k=1)[0].id == "sagrada"
        assert docs.info().version == 2
