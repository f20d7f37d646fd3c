"""Jobs that must wait, parked in Redis and re-enqueued when due.

On the Redis broker a countdown or ETA message waits *unacknowledged* in a worker, and one
that waits longer than the visibility timeout is redelivered to a second worker while the
first still holds it. So a wait longer than a short bound (a provider's long Retry-After, a
shared rate limit) is not a countdown: the job's envelope goes into a sorted set scored by
when it is due, and every worker's heartbeat thread moves due jobs back onto their queue.
One Lua script pops them, so two workers never enqueue the same job twice.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis
from celery import Celery

from dspex_jobs.keys import Keys

__all__ = ["DelayedJobs"]

# KEYS[1] sorted set; ARGV: now, limit. Atomically removes and returns the due members.
_POP_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
if #due > 0 then redis.call('ZREM', KEYS[1], unpack(due)) end
return due
"""


class DelayedJobs:
    """Parks job envelopes until they are due, then sends them again."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.key = keys.delayed()
        self._pop_due = client.register_script(_POP_DUE)

    def park(self, task_name: str, payload: dict[str, Any], queue: str, delay_s: float) -> None:
        """Send ``payload`` to ``task_name`` on ``queue`` in ``delay_s`` seconds."""
        member = json.dumps({"task": task_name, "queue": queue, "payload": payload}, sort_keys=True)
        self.client.zadd(self.key, {member: time.time() + delay_s})

    def release_due(self, app: Celery, limit: int = 100) -> int:
        """Enqueue every parked job that is due; how many."""
        released = 0
        for raw in self._pop_due(keys=[self.key], args=[time.time(), limit]):
            item = json.loads(raw)
            payload = item["payload"]
            app.send_task(
                item["task"], args=(payload,), task_id=payload.get("id"), queue=item["queue"]
            )
            released += 1
        return released

    def __len__(self) -> int:
        return int(self.client.zcard(self.key))
