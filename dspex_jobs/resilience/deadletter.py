"""Jobs that failed for good, kept with their envelope, error and traceback.

Redis has no dead-letter exchange, so the worker records a job here when it fails
permanently or exhausts its retries: ``dspex-jobs dlq ls|show|replay|purge``. Replay sends
the original envelope again (same job id, attempt 1), so a waiting producer's handle sees
the new outcome.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis
from celery import Celery

from dspex_jobs.errors import DSPexError
from dspex_jobs.keys import Keys

__all__ = ["DeadLetters"]


class DeadLetters:
    """The dead-letter store of one Redis and key prefix."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    def record(
        self,
        payload: dict[str, Any],
        task_name: str,
        queue: str,
        error: DSPexError,
        traceback: str,
        worker: str,
        attempt: int,
    ) -> None:
        """Keep a failed job."""
        job_id = str(payload.get("id"))
        failed_at = time.time()
        letter = {
            "job_id": job_id,
            "task": task_name,
            "queue": queue,
            "envelope": payload,
            "error": error.to_payload(),
            "traceback": traceback,
            "worker": worker,
            "attempt": attempt,
            "failed_at": failed_at,
        }
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.keys.dead_letters(), job_id, json.dumps(letter, default=str))
        pipe.zadd(self.keys.dead_letter_index(), {job_id: failed_at})
        pipe.execute()

    def list(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest dead letters first."""
        ids = [
            str(i.decode() if isinstance(i, bytes) else i)
            for i in self.client.zrevrange(self.keys.dead_letter_index(), 0, limit - 1)
        ]
        if not ids:
            return []
        raws = self.client.hmget(self.keys.dead_letters(), ids)
        return [json.loads(raw) for raw in raws if raw is not None]

    def get(self, job_id: str) -> dict[str, Any] | None:
        """One dead letter."""
        raw = self.client.hget(self.keys.dead_letters(), job_id)
        return None if raw is None else dict(json.loads(raw))

    def remove(self, job_id: str) -> bool:
        """Forget one dead letter; whether it existed."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hdel(self.keys.dead_letters(), job_id)
        pipe.zrem(self.keys.dead_letter_index(), job_id)
        removed, _ = pipe.execute()
        return bool(removed)

    def replay(self, app: Celery, job_id: str) -> bool:
        """Send a dead job again (attempt 1) and remove it from here; whether it existed."""
        letter = self.get(job_id)
        if letter is None:
            return False
        payload = {**letter["envelope"], "attempt": 1}
        self.client.delete(self.keys.result(job_id), self.keys.done(job_id))
        app.send_task(letter["task"], args=(payload,), task_id=job_id, queue=letter["queue"])
        self.remove(job_id)
        return True

    def purge(self) -> int:
        """Remove every dead letter; how many."""
        count = int(self.client.zcard(self.keys.dead_letter_index()))
        self.client.delete(self.keys.dead_letters(), self.keys.dead_letter_index())
        return count

    def __len__(self) -> int:
        return int(self.client.zcard(self.keys.dead_letter_index()))
