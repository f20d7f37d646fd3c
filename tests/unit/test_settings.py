from __future__ import annotations

import pytest

from dspex_jobs.errors import ConfigurationError
from dspex_jobs.settings import Settings


def test_reads_dspex_variables() -> None:
    # Given an environment with a few settings
    env = {
        "DSPEX_REDIS_URL": "redis://h:1/2",
        "DSPEX_LM": "openai/gpt-4o-mini",
        "DSPEX_RESULT_TTL_S": "60",
        "DSPEX_GENERAL_CONCURRENCY": "8",
        "HOME": "/root",
    }
    # When settings are read from it
    settings = Settings.from_env(env)
    # Expect typed values
    assert settings.redis_url == "redis://h:1/2"
    assert settings.lm == "openai/gpt-4o-mini"
    assert settings.result_ttl_s == 60
    assert settings.concurrency_for("general") == 8


def test_misspelt_variable_is_an_error_naming_the_closest_setting() -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({"DSPEX_REDIS_ULR": "redis://x:1/0"})
    assert "DSPEX_REDIS_ULR" in str(info.value)
    assert "did you mean DSPEX_REDIS_URL?" in str(info.value)
    assert info.value.details["unknown"] == ["DSPEX_REDIS_ULR"]


def test_invalid_value_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="DSPEX_RESULT_TTL_S"):
        Settings.from_env({"DSPEX_RESULT_TTL_S": "-5"})
    with pytest.raises(ConfigurationError, match="DSPEX_REDIS_URL"):
        Settings.from_env({"DSPEX_REDIS_URL": "http://localhost"})


def test_retry_budgets_per_kind() -> None:
    settings = Settings.from_env(
        {"DSPEX_JOB_MAX_RETRIES": "3", "DSPEX_JOB_MAX_RETRIES_BY_KIND": "predict=1, ping=0"}
    )
    assert settings.retries_for("predict") == 1
    assert settings.retries_for("ping") == 0
    assert settings.retries_for("chain_of_thought") == 3
    with pytest.raises(ConfigurationError, match="KIND=N"):
        Settings.from_env({"DSPEX_JOB_MAX_RETRIES_BY_KIND": "predict"})


def test_test_only_variables_are_ignored() -> None:
    assert Settings.from_env({"DSPEX_TEST_SIZE": "big"}).redis_url.startswith("redis://")


def test_overrides_win_over_environment() -> None:
    settings = Settings.from_env({"DSPEX_LM": "a/b"}, lm="c/d")
    assert settings.lm == "c/d"


def test_environment_is_read_when_called_not_at_import(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSPEX_LM", "openai/changed")
    assert Settings.from_env().lm == "openai/changed"


def test_settings_are_frozen() -> None:
    settings = Settings.from_env({})
    with pytest.raises(Exception, match="frozen"):
        settings.lm = "x"  # type: ignore[misc]


def test_secrets_stay_out_of_repr_and_urls() -> None:
    settings = Settings.from_env(
        {"DSPEX_LM_API_KEY": "sk-secret", "DSPEX_REDIS_URL": "redis://user:pw@h:6379/0"}
    )
    assert "sk-secret" not in repr(settings)
    assert settings.lm_api_key_value() == "sk-secret"
    assert settings.redacted_redis_url() == "redis://user:***@h:6379/0"
    assert Settings.from_env({}).redacted_redis_url() == "redis://127.0.0.1:6379/0"
