"""What happens when a job arrives for a session that is already running one.

The submitter picks a strategy (LangGraph calls these *multitask strategies*):

- ``enqueue`` (default): run after the running job, in submission order;
- ``reject``: refuse at once with :class:`~dspex_jobs.errors.SessionBusy`; nothing enqueued;
- ``interrupt``: stop the running job cooperatively (it ends ``cancelled``, its partial
  outputs kept on its result and in the session), then run the new one on the state the
  interrupted job left;
- ``rollback``: stop the running job, restore the session's state from before it started,
  then run the new one.

A session runs one job at a time. Two keys per session hold that: ``session-active:<id>``
(the running job's id) and ``session-pending:<id>`` (a list of waiting jobs, each with the
ready-made message that sends it). One Lua script admits a job (run now, queue it, refuse
it, or queue it first and flag the running job to stop), and one releases the session when
a job ends, handing the next job to the worker that released it, so two producers and a
finishing worker never interleave. The released job is also put in the delayed-jobs set due
30 s later: if the releasing worker dies before sending it, a heartbeat sends it (a copy
that arrives twice is dropped by the job's lease and finished check).

Stopping is cooperative. A streaming job checks its stop flag as chunks arrive (at most
every 100 ms) and stops mid-generation, keeping what it streamed; a job that does not stream
is stopped when its LM call returns (its outputs are then its "partial" outputs). The flag
is the job's cancel key, holding ``interrupt`` or ``rollback``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import redis

from dspex_jobs.errors import JobCancelled, ValidationError
from dspex_jobs.keys import Keys
from dspex_jobs.sessions import SessionState, SessionStore

__all__ = [
    "MULTITASK_STRATEGIES",
    "STOP_MODES",
    "Admission",
    "CancelWatch",
    "Multitask",
    "SessionGate",
    "Stopped",
    "check_multitask",
    "settle_stopped",
]

Multitask = Literal["enqueue", "reject", "interrupt", "rollback"]
MULTITASK_STRATEGIES: tuple[str, ...] = ("enqueue", "reject", "interrupt", "rollback")

STOP_MODES = ("interrupt", "rollback")
"""Cancel-key values that stop a running session job (a plain cancel holds ``1``)."""

RELEASE_GRACE_S = 30.0
"""When the safety copy of a released job falls due (see the module docstring)."""

# KEYS: active, pending. ARGV: job id, strategy, entry, ttl_s, result prefix, cancel prefix.
_ADMIT = """
local active = redis.call('GET', KEYS[1])
local finished = active and redis.call('EXISTS', ARGV[5] .. active) == 1
if not active or (finished and redis.call('LLEN', KEYS[2]) == 0) then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[4])
  return {'run', ARGV[1]}
end
if ARGV[2] == 'reject' then return {'busy', active} end
if ARGV[2] == 'enqueue' then
  redis.call('RPUSH', KEYS[2], ARGV[3])
else
  if not finished then redis.call('SET', ARGV[6] .. active, ARGV[2], 'EX', ARGV[4]) end
  redis.call('LPUSH', KEYS[2], ARGV[3])
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return {'queued', active}
"""

# KEYS: active, pending, delayed. ARGV: job id, ttl_s, due.
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
local nxt = redis.call('LPOP', KEYS[2])
if not nxt then
  redis.call('DEL', KEYS[1])
  return false
end
local entry = cjson.decode(nxt)
redis.call('SET', KEYS[1], entry['id'], 'EX', ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], entry['member'])
return nxt
"""


@dataclass(frozen=True, slots=True)
class Admission:
    """What :meth:`SessionGate.admit` decided: ``run`` now, ``queued``, or ``busy``; and the
    job that runs in the session now."""

    decision: Literal["run", "queued", "busy"]
    running: str


@dataclass(frozen=True, slots=True)
class Pending:
    """A job waiting for its session: its id, how to send it, and the session's affinity."""

    id: str
    member: str
    affinity: str

    def message(self) -> dict[str, Any]:
        """``{"task", "queue", "payload"}``: what :meth:`Celery.send_task` needs."""
        return dict(json.loads(self.member))


def check_multitask(value: str) -> Multitask:
    """``value`` as a strategy.

    Raises:
        ValidationError: Not one of :data:`MULTITASK_STRATEGIES` (``field="multitask"``).
    """
    if value not in MULTITASK_STRATEGIES:
        raise ValidationError(
            f"multitask must be one of {', '.join(MULTITASK_STRATEGIES)}, not {value!r}",
            field="multitask",
        )
    return value  # type: ignore[return-value]


class SessionGate:
    """One job at a time per session, in Redis (shared by producers and workers)."""

    def __init__(self, client: redis.Redis, keys: Keys, ttl_s: int) -> None:
        self.client = client
        self.keys = keys
        self.ttl_s = ttl_s
        self._admit = client.register_script(_ADMIT)
        self._release = client.register_script(_RELEASE)

    def admit(
        self,
        session_id: str,
        job_id: str,
        strategy: Multitask,
        *,
        task: str,
        queue: str,
        payload: Mapping[str, Any],
        affinity: str = "hint",
    ) -> Admission:
        """Decide, atomically, whether the job runs now, waits, or is refused.

        ``payload`` is the task argument to send later if the job has to wait.
        """
        member = json.dumps(
            {"task": task, "queue": queue, "payload": dict(payload)}, sort_keys=True
        )
        entry = json.dumps({"id": job_id, "member": member, "affinity": affinity})
        decision, running = self._admit(
            keys=[self.keys.session_active(session_id), self.keys.session_pending(session_id)],
            args=[job_id, strategy, entry, self.ttl_s, self.keys.result(""), self.keys.cancel("")],
        )
        return Admission(_text(decision), _text(running))  # type: ignore[arg-type]

    def release(self, session_id: str, job_id: str) -> Pending | None:
        """The job ended: the next waiting job, now the session's running one (send it, then
        call :meth:`sent`), or ``None``. A no-op unless ``job_id`` is the running job."""
        raw = self._release(
            keys=[
                self.keys.session_active(session_id),
                self.keys.session_pending(session_id),
                self.keys.delayed(),
            ],
            args=[job_id, self.ttl_s, time.time() + RELEASE_GRACE_S],
        )
        if not raw:
            return None
        entry = json.loads(raw)
        return Pending(entry["id"], entry["member"], entry.get("affinity", "hint"))

    def sent(self, pending: Pending) -> None:
        """The released job was sent: drop its safety copy."""
        self.client.zrem(self.keys.delayed(), pending.member)

    def running(self, session_id: str) -> str | None:
        """The session's running job, if any."""
        value = self.client.get(self.keys.session_active(session_id))
        return None if value is None else _text(value)

    def waiting(self, session_id: str) -> list[str]:
        """Ids of the session's waiting jobs, next first."""
        raw = self.client.lrange(self.keys.session_pending(session_id), 0, -1)
        return [json.loads(item)["id"] for item in raw]

    def forget(self, session_id: str, job_id: str) -> None:
        """Undo an admission whose job was never sent (the broker refused it)."""
        self._release(
            keys=[
                self.keys.session_active(session_id),
                self.keys.session_pending(session_id),
                self.keys.delayed(),
            ],
            args=[job_id, self.ttl_s, time.time()],
        )


class Stopped(BaseException):
    """Raised inside a running session job when a newer job interrupts or rolls it back.

    A ``BaseException``: it must pass the runtime's ``except Exception`` (which would count
    it against the LM's circuit breaker) straight up to :meth:`WorkerContext.execute`.
    """

    def __init__(self, mode: str, partial: dict[str, Any]) -> None:
        super().__init__(mode)
        self.mode = mode
        self.partial = partial


class CancelWatch:
    """Reads a running job's stop flag, at most every ``interval_s``; wraps chunk callbacks."""

    def __init__(
        self, client: redis.Redis, keys: Keys, job_id: str, interval_s: float = 0.1
    ) -> None:
        self.client = client
        self.key = keys.cancel(job_id)
        self.interval_s = interval_s
        self.partial: dict[str, str] = {}
        self._checked_at = 0.0

    def mode(self) -> str | None:
        """``interrupt`` or ``rollback`` when a newer job asked this one to stop."""
        value = self.client.get(self.key)
        mode = None if value is None else _text(value)
        return mode if mode in STOP_MODES else None

    def wrap(self, on_chunk: Callable[[str, str, bool], None]) -> Callable[[str, str, bool], None]:
        """``on_chunk`` that also keeps the text so far and stops the job when flagged."""

        def chunk(field: str, text: str, is_last: bool) -> None:
            on_chunk(field, text, is_last)
            self.partial[field] = self.partial.get(field, "") + text
            now = time.monotonic()
            if now - self._checked_at >= self.interval_s:
                self._checked_at = now
                mode = self.mode()
                if mode is not None:
                    raise Stopped(mode, dict(self.partial))

        return chunk


def settle_stopped(
    sessions: SessionStore,
    job_id: str,
    session_id: str,
    inputs: Mapping[str, Any],
    before: SessionState,
    mode: str,
    partial: Mapping[str, Any],
) -> JobCancelled:
    """Apply a stop to the session and say how the job ended.

    ``interrupt`` records the job's partial turn (the session as the job left it);
    ``rollback`` puts back history, variables and LM options from ``before``.
    """
    if mode == "rollback":

        def restore(state: SessionState) -> None:
            state.history = list(before.history)
            state.vars = dict(before.vars)
            state.lm = before.lm

        sessions.update(session_id, restore)
        return JobCancelled(
            f"job {job_id} was rolled back by a newer job of session "
            f"{session_id}; the session is as it was before it",
            job_id=job_id,
            multitask="rollback",
        )
    if partial:
        sessions.record_turn(session_id, inputs, partial)
    return JobCancelled(
        f"job {job_id} was interrupted by a newer job of session "
        f"{session_id}; its partial outputs are kept",
        job_id=job_id,
        multitask="interrupt",
        outputs=dict(partial),
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
