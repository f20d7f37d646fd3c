"""Session state in Redis: history, variables and LM settings shared by a session's jobs.

A session is one JSON document (``dspex:session:<id>``) with a TTL refreshed on every use,
and a ``version`` bumped on every write. Writers update it with optimistic concurrency
(``WATCH``/``MULTI``): two jobs of one session finishing at once both land their history,
whichever commits second simply re-reads and re-applies. Because the state lives in Redis,
not in a worker, a session survives the loss of the worker that served it.

Sessions are bound to the worker that last ran one of their jobs (``dspex:bindings``), so
per-process caches (built modules, LM clients) are reused; see :class:`~dspex_jobs.Client`
for how the binding routes jobs (``hint`` and ``strict`` affinity).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

import redis
from pydantic import BaseModel, ConfigDict, Field

from dspex_jobs.errors import SessionNotFound, SessionStateTooLarge
from dspex_jobs.jobs import LMOptions
from dspex_jobs.keys import Keys

if TYPE_CHECKING:
    from dspex_jobs.client import Client, JobHandle

__all__ = ["Affinity", "Session", "SessionState", "SessionStore"]

Affinity = Literal["hint", "strict"]
"""``hint``: prefer the bound worker, use any when it is busy or gone.
``strict``: only the bound worker; fail fast when it is gone."""


class SessionState(BaseModel):
    """Everything a session carries between its jobs."""

    model_config = ConfigDict(extra="forbid")

    id: str
    version: int = 0
    ttl_s: int
    affinity: Affinity = "hint"
    lm: LMOptions = Field(default_factory=LMOptions)
    vars: dict[str, Any] = Field(default_factory=dict)
    history: list[dict[str, Any]] = Field(default_factory=list)
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)


class SessionStore:
    """Reads and writes sessions and their worker bindings."""

    def __init__(
        self, client: redis.Redis, keys: Keys, *, max_history: int, max_state_bytes: int
    ) -> None:
        self.client = client
        self.keys = keys
        self.max_history = max_history
        self.max_state_bytes = max_state_bytes

    # -- state -----------------------------------------------------------------------------

    def create(
        self,
        ttl_s: int,
        affinity: Affinity = "hint",
        lm: LMOptions | None = None,
        vars: Mapping[str, Any] | None = None,
    ) -> SessionState:
        """Start a new session."""
        state = SessionState(
            id=uuid.uuid4().hex,
            ttl_s=ttl_s,
            affinity=affinity,
            lm=lm or LMOptions(),
            vars=dict(vars or {}),
        )
        self.client.set(self.keys.session(state.id), self._dump(state), ex=ttl_s)
        return state

    def load(self, session_id: str) -> SessionState | None:
        """The session, or ``None`` when it ended or expired."""
        raw = self.client.get(self.keys.session(session_id))
        return None if raw is None else SessionState.model_validate_json(raw)

    def require(self, session_id: str) -> SessionState:
        """The session; :class:`SessionNotFound` when it ended or expired."""
        state = self.load(session_id)
        if state is None:
            raise SessionNotFound(f"session {session_id} ended or expired", session_id=session_id)
        return state

    def update(self, session_id: str, change: Callable[[SessionState], None]) -> SessionState:
        """Apply ``change`` atomically (retrying on concurrent writes); refresh the TTL.

        Raises:
            SessionNotFound: The session ended or expired.
            SessionStateTooLarge: The changed state exceeds the size limit; nothing written.
        """
        key = self.keys.session(session_id)
        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    raw = pipe.get(key)
                    if raw is None:
                        raise SessionNotFound(
                            f"session {session_id} ended or expired", session_id=session_id
                        )
                    state = SessionState.model_validate_json(raw)
                    change(state)
                    del state.history[: -self.max_history]  # oldest first, when over the limit
                    state.version += 1
                    state.updated_at = time.time()
                    pipe.multi()
                    pipe.set(key, self._dump(state), ex=state.ttl_s)
                    pipe.execute()
                    return state
                except redis.WatchError:
                    continue

    def record_turn(
        self, session_id: str, inputs: Mapping[str, Any], outputs: Mapping[str, Any]
    ) -> SessionState:
        """Append one job's inputs and outputs to the history; outputs become variables."""

        def change(state: SessionState) -> None:
            state.history.append({**inputs, **outputs})
            state.vars.update(outputs)

        return self.update(session_id, change)

    def set_vars(self, session_id: str, values: Mapping[str, Any]) -> SessionState:
        """Set session variables (jobs read missing inputs from them)."""
        return self.update(session_id, lambda state: state.vars.update(values))

    def touch(self, session_id: str, ttl_s: int) -> None:
        """Refresh the TTL of a session that is used but not changed."""
        self.client.expire(self.keys.session(session_id), ttl_s)

    def end(self, session_id: str) -> bool:
        """Remove the session and its binding; whether it existed."""
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(self.keys.session(session_id))
        pipe.hdel(self.keys.session_bindings(), session_id)
        existed, _ = pipe.execute()
        return bool(existed)

    def scan(self) -> Iterator[SessionState]:
        """Every live session (for the CLI; not for hot paths)."""
        for key in self.client.scan_iter(match=self.keys.session("*"), count=500):
            raw = self.client.get(key)
            if raw is not None:
                yield SessionState.model_validate_json(raw)

    # -- bindings --------------------------------------------------------------------------

    def binding(self, session_id: str) -> str | None:
        """The worker the session is bound to, if any."""
        worker = self.client.hget(self.keys.session_bindings(), session_id)
        return worker.decode() if isinstance(worker, bytes) else worker

    def bind(self, session_id: str, worker: str) -> None:
        """Bind the session to ``worker`` (the last worker that ran one of its jobs)."""
        self.client.hset(self.keys.session_bindings(), session_id, worker)

    def cleanup(self, is_alive: Callable[[str], bool], requeue_to: str = "general") -> int:
        """Remove bindings to dead workers and to sessions that expired; how many.

        Jobs already sent to a dead worker's own queue (in the seconds before its heartbeat
        expired) are moved back to ``requeue_to``, where any worker takes them.
        """
        stale, dead = [], set()
        for session_b, worker_b in self.client.hgetall(self.keys.session_bindings()).items():
            session_id, worker = _text(session_b), _text(worker_b)
            alive = is_alive(worker)
            if not alive:
                dead.add(worker)
            if not alive or not self.client.exists(self.keys.session(session_id)):
                stale.append(session_id)
        if stale:
            self.client.hdel(self.keys.session_bindings(), *stale)
        for worker in dead:
            while self.client.lmove(f"{worker}.dq2", requeue_to, "RIGHT", "LEFT") is not None:
                pass
        return len(stale)

    def _dump(self, state: SessionState) -> str:
        raw = state.model_dump_json()
        if len(raw) > self.max_state_bytes:
            raise SessionStateTooLarge(
                f"session {state.id} would be {len(raw)} bytes, over the limit of "
                f"{self.max_state_bytes} (DSPEX_SESSION_MAX_STATE_BYTES); store large values "
                "elsewhere or end the session",
                size=len(raw),
                limit=self.max_state_bytes,
            )
        return raw


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Session:
    """A producer's handle on a session: jobs submitted through it share its state.

    Example:
        >>> with client.session(ttl_s=600) as s:                       # doctest: +SKIP
        ...     s.set(user="Ada")
        ...     s.predict("history: dspy.History, question -> answer", question="Hi?")
    """

    def __init__(self, client: Client, state: SessionState) -> None:
        self.client = client
        self.id = state.id
        self.affinity = state.affinity

    def predict(
        self,
        signature: str,
        /,
        *,
        inputs: Mapping[str, Any] | None = None,
        instructions: str | None = None,
        lm: LMOptions | Mapping[str, Any] | None = None,
        stream: bool = False,
        multitask: str = "enqueue",
        webhook: str | None = None,
        **input_values: Any,
    ) -> JobHandle:
        """``Client.predict`` within this session.

        ``multitask`` says what happens if the session is running a job: ``enqueue``
        (default), ``reject``, ``interrupt`` or ``rollback`` (:mod:`dspex_jobs.multitask`).
        """
        return self.client.submit(
            "predict",
            signature,
            {**(inputs or {}), **input_values},
            instructions=instructions,
            lm=lm,
            stream=stream,
            session=self.id,
            multitask=multitask,
            webhook=webhook,
        )

    def chain_of_thought(
        self,
        signature: str,
        /,
        *,
        inputs: Mapping[str, Any] | None = None,
        instructions: str | None = None,
        lm: LMOptions | Mapping[str, Any] | None = None,
        stream: bool = False,
        multitask: str = "enqueue",
        webhook: str | None = None,
        **input_values: Any,
    ) -> JobHandle:
        """``Client.chain_of_thought`` within this session (``multitask`` as in
        :meth:`predict`)."""
        return self.client.submit(
            "chain_of_thought",
            signature,
            {**(inputs or {}), **input_values},
            instructions=instructions,
            lm=lm,
            stream=stream,
            session=self.id,
            multitask=multitask,
            webhook=webhook,
        )

    def state(self) -> SessionState:
        """The session's current state (and a TTL refresh)."""
        state = self.client.sessions.require(self.id)
        self.client.sessions.touch(self.id, state.ttl_s)
        return state

    def set(self, **values: Any) -> SessionState:
        """Set variables; a job reads an input it was not given from them."""
        return self.client.sessions.set_vars(self.id, values)

    def worker(self) -> str | None:
        """The worker this session is bound to, if any."""
        return self.client.sessions.binding(self.id)

    def running(self) -> str | None:
        """The id of the session's job that runs now, if any."""
        return self.client._gate.running(self.id)

    def waiting(self) -> list[str]:
        """Ids of the session's jobs waiting for the running one, next first."""
        return self.client._gate.waiting(self.id)

    def end(self) -> bool:
        """End the session now (its state is removed); whether it still existed."""
        return self.client.sessions.end(self.id)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.end()

    def __repr__(self) -> str:
        return f"<Session {self.id} affinity={self.affinity}>"
