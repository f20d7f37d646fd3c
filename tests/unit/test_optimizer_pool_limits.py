"""The optimizer pool's Celery time limits come from settings (docs/optimizer.md, "Time
limits of the pool"); tests/integration/test_optimizer_time_limits.py shows them acting."""

from __future__ import annotations

import pytest

from dspex_jobs.errors import ConfigurationError
from dspex_jobs.pools import profile_for
from dspex_jobs.settings import Settings


def _limits(argv: list[str]) -> tuple[str | None, str | None]:
    def value(flag: str) -> str | None:
        return argv[argv.index(flag) + 1] if flag in argv else None

    return value("--soft-time-limit"), value("--time-limit")


def test_optimizer_limits_default_to_six_hours_and_five_minutes_more() -> None:
    argv = profile_for("optimizer").worker_argv(Settings.from_env({}))
    assert _limits(argv) == (str(6 * 3600), str(6 * 3600 + 300))


def test_optimizer_limits_follow_the_environment() -> None:
    settings = Settings.from_env(
        {"DSPEX_OPTIMIZER_SOFT_TIME_LIMIT_S": "2", "DSPEX_OPTIMIZER_HARD_TIME_LIMIT_S": "3"}
    )
    assert _limits(profile_for("optimizer").worker_argv(settings)) == ("2", "3")


def test_a_soft_limit_of_zero_leaves_only_the_hard_one() -> None:
    settings = Settings.from_env(
        {"DSPEX_OPTIMIZER_SOFT_TIME_LIMIT_S": "0", "DSPEX_OPTIMIZER_HARD_TIME_LIMIT_S": "3"}
    )
    assert _limits(profile_for("optimizer").worker_argv(settings)) == (None, "3")


def test_other_pools_keep_their_profile_limits() -> None:
    settings = Settings.from_env(
        {"DSPEX_OPTIMIZER_HARD_TIME_LIMIT_S": "3", "DSPEX_OPTIMIZER_SOFT_TIME_LIMIT_S": "2"}
    )
    assert _limits(profile_for("general").worker_argv(settings)) == ("300", "330")
    assert _limits(profile_for("neural").worker_argv(settings)) == (None, None)


@pytest.mark.parametrize("soft", ["3", "4"])
def test_a_soft_limit_not_below_the_hard_one_is_refused(soft: str) -> None:
    with pytest.raises(ConfigurationError, match="optimizer_soft_time_limit_s"):
        Settings.from_env(
            {"DSPEX_OPTIMIZER_SOFT_TIME_LIMIT_S": soft, "DSPEX_OPTIMIZER_HARD_TIME_LIMIT_S": "3"}
        )
