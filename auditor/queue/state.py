"""What a queued job keeps in Redis: queue state and live progress, never the truth.

- ``auditor:jobs`` (hash): job id -> its out directory, for ``jobs status ID`` and
  ``jobs list`` (the manifest in ``out/_job/manifest.json`` is the record; a lost index
  only means naming the job by its out directory).
- ``auditor:job:<id>:cancel``: set by ``jobs cancel``; every task's cancel token polls it.
- ``auditor:job:<id>:claim:<unit>``: who runs a unit (a shard task, the finish, a CPU
  stage) now. Taken with ``SET NX PX`` (atomic: of two workers handed the same unit, one
  gets it), kept alive by a heartbeat, and lapsing ``claim_ttl`` after a worker dies.
- ``auditor:job:<id>:progress`` (hash): unit -> its last progress event.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

from auditor.settings import QueueSettings

__all__ = ["Claim", "RedisState", "worker_name"]

PREFIX = "auditor"

_REFRESH = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


#: Seconds a job's live state (progress, a cancel flag) outlives its last update: the
#: manifest is the record, Redis only the live view, so it should not grow for ever.
LIVE_TTL = 7 * 24 * 3600


def worker_name() -> str:
    """``host:pid`` of this process (recorded with the units it runs)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Claim:
    """A unit claimed by this process, kept alive by a heartbeat thread until released."""

    def __init__(self, state: RedisState, key: str, token: str, ttl: float) -> None:
        self._state = state
        self.key = key
        self.token = token
        self._ttl_ms = int(ttl * 1000)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(ttl / 3,), daemon=True,
                                        name=f"claim-heartbeat {key}")
        self._thread.start()

    def _beat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                if not self._state.client.eval(_REFRESH, 1, self.key, self.token,
                                               self._ttl_ms):
                    return  # lost (Redis restarted without it): the unit's writes are atomic
            except Exception:  # Redis away for a moment: try again on the next beat
                continue

    def release(self) -> None:
        """Stop the heartbeat and give the unit up (only if still ours)."""
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self._state.client.eval(_RELEASE, 1, self.key, self.token)
        except Exception:  # the claim lapses by itself
            pass


class RedisState:
    """Claims, cancel flags, live progress and the job index in Redis."""

    def __init__(self, settings: QueueSettings) -> None:
        import redis

        self.settings = settings
        self.client = redis.Redis.from_url(str(settings.state_url), socket_timeout=30,
                                           socket_connect_timeout=10,
                                           decode_responses=True)

    @staticmethod
    def _key(job_id: str, *parts: str) -> str:
        return ":".join((PREFIX, "job", job_id, *parts))

    # ----- index

    def register(self, job_id: str, out: str) -> None:
        self.client.hset(f"{PREFIX}:jobs", job_id, out)

    def out_of(self, job_id: str) -> str | None:
        value = self.client.hget(f"{PREFIX}:jobs", job_id)
        return None if value is None else str(value)

    def jobs(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in self.client.hgetall(f"{PREFIX}:jobs").items()}

    # ----- cancel

    def cancel(self, job_id: str) -> None:
        self.client.set(self._key(job_id, "cancel"), "1", ex=LIVE_TTL)

    def uncancel(self, job_id: str) -> None:
        self.client.delete(self._key(job_id, "cancel"))

    def cancelled(self, job_id: str) -> bool:
        return bool(self.client.exists(self._key(job_id, "cancel")))

    # ----- claims

    def claim(self, job_id: str, unit: str, worker: str) -> Claim | None:
        """Claim ``unit`` for ``worker``; ``None`` when a live worker holds it."""
        key = self._key(job_id, "claim", unit)
        token = f"{worker}:{uuid.uuid4().hex}"
        ttl = self.settings.claim_ttl
        if not self.client.set(key, token, nx=True, px=int(ttl * 1000)):
            return None
        return Claim(self, key, token, ttl)

    def holder(self, job_id: str, unit: str) -> str | None:
        value = self.client.get(self._key(job_id, "claim", unit))
        return None if value is None else str(value).rsplit(":", 1)[0]

    # ----- progress

    def progress(self, job_id: str, unit: str, event: Mapping[str, Any]) -> None:
        key = self._key(job_id, "progress")
        with self.client.pipeline() as pipe:
            pipe.hset(key, unit, json.dumps({**event, "time": time.time()}))
            pipe.expire(key, LIVE_TTL)  # live state: gone a week after the job went quiet
            pipe.execute()

    def progress_of(self, job_id: str) -> dict[str, dict[str, Any]]:
        raw = self.client.hgetall(self._key(job_id, "progress"))
        return {str(k): json.loads(v) for k, v in raw.items()}

    def forget_progress(self, job_id: str, unit: str) -> None:
        self.client.hdel(self._key(job_id, "progress"), unit)
