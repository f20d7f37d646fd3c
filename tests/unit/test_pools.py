from __future__ import annotations

import pytest

from dspex_jobs.errors import ConfigurationError
from dspex_jobs.pools import PROFILES, WORKER_QUEUES, profile_for
from dspex_jobs.settings import QUEUES, Settings


def test_every_queue_has_a_profile() -> None:
    assert set(PROFILES) == set(WORKER_QUEUES) == {*QUEUES, "webhooks"}


def test_webhook_deliveries_get_many_threads() -> None:
    argv = profile_for("webhooks").worker_argv(Settings.from_env({}))
    assert argv[argv.index("--pool") + 1] == "threads"
    assert argv[argv.index("--concurrency") + 1] == "16"  # DSPEX_WEBHOOKS_CONCURRENCY


def test_worker_argv_uses_settings_concurrency_and_the_profile() -> None:
    settings = Settings.from_env({}, general_concurrency=3)
    argv = profile_for("general").worker_argv(settings)
    assert argv[0] == "worker"
    pairs = dict(zip(argv[1::2], argv[2::2], strict=False))
    assert pairs["--queues"] == "general"
    assert pairs["--concurrency"] == "3"
    assert pairs["--pool"] == "threads"  # LM calls wait on I/O (bench/lm_throughput.py)
    assert pairs["--prefetch-multiplier"] == "1"
    assert "--time-limit" in argv


def test_flags_override_the_profile() -> None:
    argv = profile_for("optimizer").worker_argv(
        Settings.from_env({}), concurrency=5, pool="solo", hostname="x@y"
    )
    assert argv[argv.index("--concurrency") + 1] == "5"
    assert argv[argv.index("--pool") + 1] == "solo"
    assert argv[argv.index("--hostname") + 1] == "x@y"
    assert argv[argv.index("--max-tasks-per-child") + 1] == "1"


def test_unknown_queue_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="expected one of general"):
        profile_for("gpu")
