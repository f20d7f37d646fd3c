"""Webhook deliveries in Redis: one hash per delivery, an outbox entry, per-host slots.

A delivery is recorded *before* the job's result is stored, together with an outbox entry
in the delayed-jobs set (:mod:`dspex_jobs.resilience.delayed`) due a little later. The
worker then sends the delivery task at once and removes the outbox entry. A worker that
dies between the two leaves the outbox entry, which any worker's heartbeat sends when it
falls due: no finished job loses its webhook (at least once), and a duplicate task finds
the delivery already delivered, or its lease taken, and does nothing.

Per-host slots (a sorted set per ``host:port`` of deliveries in flight, scored by when
their claim lapses) cap what one slow or dead endpoint can hold of the webhooks pool.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import redis

from dspex_jobs.keys import Keys

__all__ = ["DELIVERED", "FAILED", "PENDING", "WebhookStore", "outbox_member"]

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"

OUTBOX_GRACE_S = 30.0
"""How long after scheduling the outbox copy of a delivery task falls due (if the worker
that scheduled it died before sending it)."""

# KEYS: record, index, failed, delayed. ARGV: id, event, now, ttl_s, due, member, then
# field/value pairs. A delivery already attempted for the same event is kept as it is.
# Index entries older than the record TTL (their records expired) are trimmed on the way.
_SCHEDULE = """
local status = redis.call('HGET', KEYS[1], 'status')
if status then
  local event = redis.call('HGET', KEYS[1], 'event')
  local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
  if event == ARGV[2] and not (status == 'pending' and attempts == 0) then return 0 end
  redis.call('DEL', KEYS[1])
end
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('EXPIRE', KEYS[1], ARGV[4])
local expired = tonumber(ARGV[3]) - tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', expired)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', expired)
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[6])
return 1
"""

# KEYS: host set. ARGV: member, now_ms, until_ms, limit, ttl_ms.
_ACQUIRE_HOST = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or
   redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return 1
end
return 0
"""


def outbox_member(task_name: str, queue: str, delivery_id: str) -> str:
    """The delayed-jobs member that sends the delivery task (the format of
    :meth:`dspex_jobs.resilience.delayed.DelayedJobs.park`)."""
    return json.dumps(
        {"task": task_name, "queue": queue, "payload": {"id": delivery_id}}, sort_keys=True
    )


class WebhookStore:
    """Reads and writes delivery records for one Redis and key prefix."""

    def __init__(self, client: redis.Redis, keys: Keys, record_ttl_s: int) -> None:
        self.client = client
        self.keys = keys
        self.record_ttl_s = record_ttl_s
        self._schedule = client.register_script(_SCHEDULE)
        self._acquire_host = client.register_script(_ACQUIRE_HOST)

    # -- scheduling ------------------------------------------------------------------------

    def schedule(
        self,
        delivery_id: str,
        url: str,
        body: Mapping[str, Any],
        *,
        event: str,
        kind: str,
        member: str,
        job_id: str | None = None,
    ) -> bool:
        """Record a delivery and its outbox entry; whether it was new.

        A second call for the same id and event (a redelivered job finishing again) keeps
        the first record, unless no attempt was made yet (then the newer body wins).
        """
        keys, args = self._schedule_call(
            delivery_id, url, body, event=event, kind=kind, member=member, job_id=job_id
        )
        return bool(self._schedule(keys=keys, args=args))

    def schedule_in(
        self,
        pipe: redis.client.Pipeline,
        delivery_id: str,
        url: str,
        body: Mapping[str, Any],
        *,
        event: str,
        kind: str,
        member: str,
        job_id: str | None = None,
    ) -> None:
        """Queue :meth:`schedule` on ``pipe`` (a ``MULTI`` transaction), so the delivery is
        recorded atomically with whatever else ends there (a pipeline run's outcome).

        ``EVAL``, not ``EVALSHA``: inside ``MULTI`` a missing script would fail after the
        other commands ran, and checking first (``SCRIPT EXISTS``) costs a round trip.
        """
        keys, args = self._schedule_call(
            delivery_id, url, body, event=event, kind=kind, member=member, job_id=job_id
        )
        pipe.eval(_SCHEDULE, len(keys), *keys, *args)

    def _schedule_call(
        self,
        delivery_id: str,
        url: str,
        body: Mapping[str, Any],
        *,
        event: str,
        kind: str,
        member: str,
        job_id: str | None,
    ) -> tuple[list[str], list[Any]]:
        now = time.time()
        fields: dict[str, str] = {
            "id": delivery_id,
            "url": url,
            "event": event,
            "kind": kind,
            "job_id": job_id or "",
            "status": PENDING,
            "attempts": "0",
            "created_at": repr(now),
            "updated_at": repr(now),
            "body": json.dumps(dict(body), separators=(",", ":"), sort_keys=True, default=str),
        }
        flat = [item for pair in fields.items() for item in pair]
        return (
            [
                self.keys.webhook(delivery_id),
                self.keys.webhooks(),
                self.keys.webhooks_failed(),
                self.keys.delayed(),
            ],
            [delivery_id, event, now, self.record_ttl_s, now + OUTBOX_GRACE_S, member, *flat],
        )

    def sent(self, member: str) -> None:
        """The delivery task was sent: its outbox entry is no longer needed."""
        self.client.zrem(self.keys.delayed(), member)

    # -- reading ---------------------------------------------------------------------------

    def get(self, delivery_id: str) -> dict[str, Any] | None:
        """A delivery record (numbers parsed), or ``None`` when unknown or expired."""
        raw = self.client.hgetall(self.keys.webhook(delivery_id))
        return _parse(raw) if raw else None

    def list(self, limit: int = 50, *, failed: bool = False) -> list[dict[str, Any]]:
        """The newest deliveries (or only the undeliverable ones), newest first.

        Ids whose record expired are dropped from the index on the way.
        """
        index = self.keys.webhooks_failed() if failed else self.keys.webhooks()
        ids = [
            _text(i)
            for i in self.client.zrevrange(index, 0, max(0, limit - 1))
            if isinstance(i, bytes | str)
        ]
        pipe = self.client.pipeline(transaction=False)
        for delivery_id in ids:
            pipe.hgetall(self.keys.webhook(delivery_id))
        records, gone = [], []
        for delivery_id, raw in zip(ids, pipe.execute(), strict=True):
            if raw:
                records.append(_parse(raw))
            else:
                gone.append(delivery_id)
        if gone:
            self.client.zrem(index, *gone)
        return records

    # -- one attempt -----------------------------------------------------------------------

    def take_lease(self, delivery_id: str, ttl_ms: int) -> bool:
        """Claim the delivery for one attempt (a duplicate task finds it taken)."""
        return bool(self.client.set(self.keys.webhook_lease(delivery_id), "1", nx=True, px=ttl_ms))

    def drop_lease(self, delivery_id: str) -> None:
        """Give up the claim taken by :meth:`take_lease`."""
        self.client.delete(self.keys.webhook_lease(delivery_id))

    def acquire_host(self, origin: str, delivery_id: str, limit: int, hold_s: float) -> bool:
        """Take one of ``limit`` slots for ``origin`` (``host:port``) for at most ``hold_s``."""
        now_ms = int(time.time() * 1000)
        hold_ms = int(hold_s * 1000)
        return bool(
            self._acquire_host(
                keys=[self.keys.webhook_host(origin)],
                args=[delivery_id, now_ms, now_ms + hold_ms, limit, hold_ms * 2],
            )
        )

    def release_host(self, origin: str, delivery_id: str) -> None:
        """Free the slot taken by :meth:`acquire_host`."""
        self.client.zrem(self.keys.webhook_host(origin), delivery_id)

    def begin_attempt(self, delivery_id: str) -> int:
        """Count one more attempt; its number."""
        key = self.keys.webhook(delivery_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.hincrby(key, "attempts", 1)
        pipe.hset(key, mapping={"last_attempt_at": repr(time.time())})
        attempts, _ = pipe.execute()
        return int(attempts)

    def result_stored(self, job_id: str) -> bool:
        """Whether the job's result is in the store (the webhook never runs ahead of it)."""
        return bool(self.client.exists(self.keys.result(job_id)))

    def delivered(self, delivery_id: str, status_code: int) -> None:
        """The endpoint answered 2xx."""
        now = repr(time.time())
        self.client.hset(
            self.keys.webhook(delivery_id),
            mapping={
                "status": DELIVERED,
                "last_status": str(status_code),
                "delivered_at": now,
                "updated_at": now,
                "last_error": "",
            },
        )

    def will_retry(
        self, delivery_id: str, delay_s: float, error: str, status_code: int | None
    ) -> None:
        """An attempt failed retryably; the next one is due in ``delay_s``."""
        now = time.time()
        self.client.hset(
            self.keys.webhook(delivery_id),
            mapping={
                "last_error": error,
                "last_status": str(status_code or ""),
                "next_at": repr(now + delay_s),
                "updated_at": repr(now),
            },
        )

    def deferred(self, delivery_id: str, reason: str) -> int:
        """No attempt was made (host busy, result not stored yet); how often so far."""
        key = self.keys.webhook(delivery_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.hincrby(key, "deferrals", 1)
        pipe.hset(key, mapping={"waiting_for": reason, "updated_at": repr(time.time())})
        count, _ = pipe.execute()
        return int(count)

    def failed(self, delivery_id: str, error: str, status_code: int | None = None) -> None:
        """Undeliverable: listed by ``dspex-jobs webhooks ls --failed`` until replayed."""
        now = time.time()
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(
            self.keys.webhook(delivery_id),
            mapping={
                "status": FAILED,
                "last_error": error,
                "last_status": str(status_code or ""),
                "failed_at": repr(now),
                "updated_at": repr(now),
            },
        )
        pipe.zadd(self.keys.webhooks_failed(), {delivery_id: now})
        pipe.execute()

    def reset(self, delivery_id: str) -> bool:
        """Make a delivery pending again with a fresh budget (replay); whether it exists."""
        key = self.keys.webhook(delivery_id)
        if not self.client.exists(key):
            return False
        now = repr(time.time())
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(
            key,
            mapping={
                "status": PENDING,
                "attempts": "0",
                "deferrals": "0",
                "created_at": now,
                "updated_at": now,
                "last_error": "",
            },
        )
        pipe.expire(key, self.record_ttl_s)
        pipe.zrem(self.keys.webhooks_failed(), delivery_id)
        pipe.execute()
        return True


_NUMBERS = {
    "attempts": int,
    "deferrals": int,
    "created_at": float,
    "updated_at": float,
    "last_attempt_at": float,
    "next_at": float,
    "delivered_at": float,
    "failed_at": float,
}


def _parse(raw: Mapping[Any, Any]) -> dict[str, Any]:
    record: dict[str, Any] = {_text(k): _text(v) for k, v in raw.items()}
    for name, convert in _NUMBERS.items():
        if record.get(name):
            record[name] = convert(record[name])
    status = record.get("last_status")
    record["last_status"] = int(status) if status else None
    return record


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
