"""Configuration of the local LM server: one frozen dataclass, validated on construction.

Every field carries its unit in its name (``latency_ms``, ``hang_s``) and a ``help`` text in
its metadata, which :mod:`dspex_jobs.lmserver.__main__` turns into command-line options, so
the flags and the dataclass never drift apart.

Fault probabilities are absolute and additive: each request draws one number ``u`` in
``[0, 1)`` and gets a 429 when ``u < rate_limit_rate``, a 5xx in the next
``server_error_rate`` of the interval, a hang in the next ``hang_rate``, and a fault of a
random kind (429, 500 or 503) in the next ``error_rate``. Their sum must not exceed 1.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from dspex_jobs.errors import ConfigurationError, LMServerStartError

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_MODEL_NAME",
    "LMServerConfig",
    "LMServerStartError",
]

DEFAULT_HOST = "127.0.0.1"
"""Loopback only: the server has no TLS and, by default, no authentication."""

DEFAULT_MODEL_NAME = "extractive-minilm"
"""The one model id the server answers to (``dspy.LM("openai/extractive-minilm", ...)``)."""

DEFAULT_MAX_REQUEST_BYTES = 8 * 1024 * 1024
"""Largest request body accepted; bigger bodies get 413."""


def _opt(default: Any, help_text: str) -> Any:
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class LMServerConfig:
    """Everything the local LM server can be told.

    Example:
        >>> LMServerConfig(latency_ms=100, rate_limit_rate=0.1, seed=7).port
        0

    Raises:
        ConfigurationError: A value is out of range (negative latency, a probability
            outside [0, 1], fault probabilities that sum above 1, ...).
    """

    host: str = _opt(DEFAULT_HOST, "Interface to bind; keep it on loopback.")
    port: int = _opt(0, "TCP port; 0 picks a free one (printed on the ready line).")
    model_name: str = _opt(DEFAULT_MODEL_NAME, "Model id served at /v1/models.")
    api_key: str | None = _opt(
        None, "When set, requests must send 'Authorization: Bearer KEY' or get 401."
    )
    latency_ms: float = _opt(0.0, "Added delay before every chat completion (ms).")
    latency_jitter_ms: float = _opt(0.0, "Extra uniform random delay in [0, this) (ms).")
    token_delay_ms: float = _opt(0.0, "Delay between streamed chunks (ms).")
    error_rate: float = _opt(
        0.0, "Probability of a fault of a random kind (429, 500 or 503) per request."
    )
    rate_limit_rate: float = _opt(0.0, "Probability of a 429 with Retry-After per request.")
    server_error_rate: float = _opt(0.0, "Probability of a 500 or 503 per request.")
    hang_rate: float = _opt(0.0, "Probability that a request hangs (see hang_s).")
    hang_s: float | None = _opt(
        None,
        "How long a hung request sleeps before answering; unset hangs until the "
        "client gives up or the server stops.",
    )
    retry_after_s: float = _opt(1.0, "Retry-After sent with injected 429s (s).")
    seed: int | None = _opt(None, "Seed of the fault and jitter draws (reproducible runs).")
    top_k: int = _opt(3, "Sentences returned for list[str] outputs.")
    bool_threshold: float = _opt(
        0.5, "bool outputs are True when the best similarity reaches this."
    )
    request_log_size: int = _opt(100, "Message lists kept for GET /v1/requests.")
    max_request_bytes: int = _opt(DEFAULT_MAX_REQUEST_BYTES, "Largest request body (bytes).")

    def __post_init__(self) -> None:
        for name in ("latency_ms", "latency_jitter_ms", "token_delay_ms", "retry_after_s"):
            _check_non_negative(name, getattr(self, name))
        if self.hang_s is not None:
            _check_non_negative("hang_s", self.hang_s)
        rates = ("rate_limit_rate", "server_error_rate", "hang_rate", "error_rate")
        for name in (*rates, "bool_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigurationError(
                    f"LMServerConfig.{name} is {value!r}; it must be a probability in [0, 1].",
                    field=name,
                )
        total = sum(getattr(self, name) for name in rates)
        if total > 1.0 + 1e-9:
            raise ConfigurationError(
                f"LMServerConfig fault probabilities add up to {total:g} (> 1): lower "
                + ", ".join(rates)
                + ".",
                field="error_rate",
            )
        if not 0 <= self.port <= 65535:
            raise ConfigurationError(
                f"LMServerConfig.port is {self.port}; use 0 (any free port) to 65535.",
                field="port",
            )
        for name in ("top_k", "request_log_size", "max_request_bytes"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"LMServerConfig.{name} must be at least 1.", field=name)
        if not self.model_name:
            raise ConfigurationError("LMServerConfig.model_name must not be empty.")

    @property
    def fault_rate(self) -> float:
        """Probability that a request gets any injected fault."""
        return self.error_rate + self.rate_limit_rate + self.server_error_rate + self.hang_rate

    def replace(self, **changes: Any) -> LMServerConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_argv(self) -> list[str]:
        """The command-line flags that rebuild this config in another process.

        Only fields that differ from their defaults are written.
        """
        argv: list[str] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value == f.default:
                continue
            argv += ["--" + f.name.replace("_", "-"), str(value)]
        return argv


def _check_non_negative(name: str, value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise ConfigurationError(
            f"LMServerConfig.{name} is {value!r}; it must be a finite number >= 0.", field=name
        )
