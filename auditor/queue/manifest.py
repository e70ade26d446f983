"""A queued job's manifest: ``out/_job/manifest.json``, the job's source of truth.

It holds what was asked (verb, input and its fingerprint, options, the extraction the
shard tasks run), how the work was split (``world_size`` shard tasks, ``rank`` ``r``
filling store shards ``i % world_size == r``), and every unit's state: ``rank-<r>``,
``finish`` (the store made whole: its record, model/SAE hashes, temporary files swept),
``cpu`` (the verb's CPU stages) or ``explain``; each with its attempts, worker, last
error and, for a shard task, its shards' output checksums. Updates go through
:func:`update` (a lock, then an atomic write), since several workers finish units at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from auditor.errors import JobError
from auditor.queue.storage import JobStorage

__all__ = ["MANIFEST", "TERMINAL", "read", "require", "update"]

MANIFEST = "_job/manifest.json"
SCHEMA_VERSION = 1
#: Job states after which no task works on the job until it is resumed.
TERMINAL = ("done", "failed", "cancelled")


def read(storage: JobStorage) -> dict[str, Any] | None:
    """The manifest, or ``None`` when ``storage`` holds no queued job."""
    return storage.read_json(MANIFEST)


def require(storage: JobStorage) -> dict[str, Any]:
    """The manifest.

    Raises
    ------
    JobError
        There is no queued job there.
    """
    manifest = read(storage)
    if manifest is None:
        raise JobError("holds no queued job (no _job/manifest.json)", path=storage.url)
    return manifest


def update(storage: JobStorage, change: Callable[[dict[str, Any]], Any]) -> Any:
    """Apply ``change`` to the manifest under its lock and write it back atomically;
    return what ``change`` returned."""
    with storage.lock(MANIFEST):
        manifest = require(storage)
        value = change(manifest)
        manifest["updated_at"] = time.time()
        storage.write_json(MANIFEST, manifest)
    return value


def create(storage: JobStorage, manifest: dict[str, Any]) -> None:
    """Write a new manifest (under the lock)."""
    with storage.lock(MANIFEST):
        storage.write_json(MANIFEST, {"schema_version": SCHEMA_VERSION, **manifest,
                                      "updated_at": time.time()})
