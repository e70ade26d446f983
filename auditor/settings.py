"""The queued service's settings, read from the environment in one place.

:class:`QueueSettings.from_env` is the only reader of the ``AUDITOR_*`` variables below;
the Celery app (``workers/celery_app.py``), the queue library (:mod:`auditor.queue`) and
the ``auditor worker`` / ``auditor jobs`` commands all take a :class:`QueueSettings`.

======================================  =========================================  ==========
variable                                meaning                                    default
======================================  =========================================  ==========
``AUDITOR_BROKER_URL``                  Celery broker (Redis)                      ``redis://127.0.0.1:6379/0``
``AUDITOR_RESULT_BACKEND``              Celery result backend                      the broker
``AUDITOR_STATE_URL``                   Redis for claims, cancel flags, progress   the broker
``AUDITOR_VISIBILITY_TIMEOUT``          s before an unacknowledged task is resent  21600
``AUDITOR_SOFT_TIME_LIMIT``             s before a task is asked to stop           18000
``AUDITOR_TIME_LIMIT``                  s before a task's process is killed        19800
``AUDITOR_MAX_ATTEMPTS``                tries of one shard task before it fails    3
``AUDITOR_CLAIM_TTL``                   s a dead worker's shard claim outlives it  60
``AUDITOR_RETRY_DELAY``                 s before a failed or busy task is retried  10
``AUDITOR_CANCEL_POLL``                 s between two looks at the cancel flag     1
``AUDITOR_MAX_SHARD_TASKS``             most extract tasks one job fans out to     64
``AUDITOR_RESTORE_INTERVAL``            s between sweeps for a dead worker's tasks 10
``AUDITOR_DEVICE``                      device an extract worker runs the model on none (auto)
``AUDITOR_SCHEDULES``                   the schedules file (``auditor schedule``)  see below
======================================  =========================================  ==========

``AUDITOR_SCHEDULES`` unset: ``schedules.json`` in auditor's cache directory
(``$AUDITOR_CACHE_DIR``, default ``~/.cache/auditor``), see :meth:`QueueSettings.schedules_file`.
The beat, the workers and the ``auditor schedule`` commands must name the same file.

Examples
--------
>>> s = QueueSettings.from_env({"AUDITOR_BROKER_URL": "redis://h:6379/3",
...                             "AUDITOR_MAX_ATTEMPTS": "5"})
>>> s.result_backend, s.state_url, s.max_attempts
('redis://h:6379/3', 'redis://h:6379/3', 5)
>>> env = {"AUDITOR_TIME_LIMIT": "10", "AUDITOR_SOFT_TIME_LIMIT": "20"}
>>> QueueSettings.from_env(env)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
auditor.errors.ConfigError: field 'soft_time_limit': soft_time_limit (20.0 s) must be below ...
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from auditor.errors import ConfigError

__all__ = ["ENV", "QueueSettings"]

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"

#: setting name -> environment variable
ENV: dict[str, str] = {
    "broker_url": "AUDITOR_BROKER_URL",
    "result_backend": "AUDITOR_RESULT_BACKEND",
    "state_url": "AUDITOR_STATE_URL",
    "visibility_timeout": "AUDITOR_VISIBILITY_TIMEOUT",
    "soft_time_limit": "AUDITOR_SOFT_TIME_LIMIT",
    "time_limit": "AUDITOR_TIME_LIMIT",
    "max_attempts": "AUDITOR_MAX_ATTEMPTS",
    "claim_ttl": "AUDITOR_CLAIM_TTL",
    "retry_delay": "AUDITOR_RETRY_DELAY",
    "cancel_poll": "AUDITOR_CANCEL_POLL",
    "max_shard_tasks": "AUDITOR_MAX_SHARD_TASKS",
    "restore_interval": "AUDITOR_RESTORE_INTERVAL",
    "device": "AUDITOR_DEVICE",
    "schedules": "AUDITOR_SCHEDULES",
}


@dataclass(frozen=True)
class QueueSettings:
    """Where the broker is and how long tasks may run; see the module table."""

    broker_url: str = DEFAULT_BROKER
    result_backend: str | None = None
    state_url: str | None = None
    visibility_timeout: float = 6 * 3600.0
    soft_time_limit: float = 5 * 3600.0
    time_limit: float = 5.5 * 3600.0
    max_attempts: int = 3
    claim_ttl: float = 60.0
    retry_delay: float = 10.0
    cancel_poll: float = 1.0
    max_shard_tasks: int = 64
    restore_interval: float = 10.0
    device: str | None = None
    schedules: str | None = None

    def __post_init__(self) -> None:
        if self.result_backend is None:
            object.__setattr__(self, "result_backend", self.broker_url)
        if self.state_url is None:
            object.__setattr__(self, "state_url", self.broker_url)
        for name in ("visibility_timeout", "soft_time_limit", "time_limit", "claim_ttl",
                     "cancel_poll", "restore_interval"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive", field=name)
        for name in ("max_attempts", "max_shard_tasks"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1", field=name)
        if self.retry_delay < 0:
            raise ConfigError("retry_delay must be >= 0", field="retry_delay")
        if self.soft_time_limit >= self.time_limit:
            raise ConfigError(f"soft_time_limit ({self.soft_time_limit} s) must be below "
                              f"time_limit ({self.time_limit} s)", field="soft_time_limit")
        if self.time_limit >= self.visibility_timeout:
            # else Redis hands a task still running to a second worker
            raise ConfigError(f"time_limit ({self.time_limit} s) must be below "
                              f"visibility_timeout ({self.visibility_timeout} s)",
                              field="time_limit")
        if self.claim_ttl >= self.visibility_timeout:
            # a dead worker's claim must lapse before its task comes back
            raise ConfigError(f"claim_ttl ({self.claim_ttl} s) must be below "
                              f"visibility_timeout ({self.visibility_timeout} s)",
                              field="claim_ttl")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any
                 ) -> QueueSettings:
        """Settings from ``environ`` (default ``os.environ``), then ``overrides``.

        Raises
        ------
        ConfigError
            A variable that does not parse, or settings that contradict each other; the
            field names the setting.
        """
        env = os.environ if environ is None else environ
        kw: dict[str, Any] = {}
        types = {f.name: f.type for f in fields(cls)}
        for name, var in ENV.items():
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            kind = types[name]
            try:
                if kind in ("int", int):
                    kw[name] = int(raw)
                elif kind in ("float", float):
                    kw[name] = float(raw)
                else:
                    kw[name] = raw
            except ValueError as e:
                raise ConfigError(f"{var}={raw!r} is not a number", field=name) from e
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kw)

    def schedules_file(self) -> str:
        """The schedules file: ``schedules`` when set, else ``schedules.json`` in auditor's
        cache directory (where auditor keeps its other per-user state)."""
        if self.schedules:
            return self.schedules
        # auditor.lm.cache_dir's rule, without importing auditor.lm (torch) for a path
        cache = os.environ.get("AUDITOR_CACHE_DIR")
        root = Path(cache).expanduser() if cache else Path.home() / ".cache" / "auditor"
        return str(root / "schedules.json")

    def with_(self, **changes: Any) -> QueueSettings:
        """A copy with ``changes`` (validated again)."""
        return replace(self, **changes)

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces these settings (for a worker subprocess)."""
        out = {}
        for name, var in ENV.items():
            value = getattr(self, name)
            if value is not None:
                out[var] = str(value)
        return out
