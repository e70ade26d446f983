"""One cancel token for every long piece of work.

A job is handed a :class:`CancelToken` and checks it at its boundaries (a batch, a shard, a
training step, a chunk, a stage); when it is set, :meth:`CancelToken.check` raises
:class:`~auditor.errors.JobCancelled` there. Everything finished before that boundary was
written whole (shards, checkpoints, stage markers), so a rerun with the same options
resumes from it.

A token is set by :meth:`CancelToken.cancel` (another thread, a signal handler) or polls a
function that says whether to stop (a Celery worker asking the result backend whether
the job was revoked); polling is rate-limited so a check costs nothing in a tight loop.

Examples
--------
>>> token = CancelToken()
>>> token.check("batch 1")
>>> token.cancel()
>>> token.check("batch 2")
Traceback (most recent call last):
...
auditor.errors.JobCancelled: cancelled at batch 2
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from auditor.errors import JobCancelled

__all__ = ["CancelToken", "check_cancel"]


class CancelToken:
    """A flag that says a job should stop at its next boundary.

    Parameters
    ----------
    poll
        Optional function returning True when the job should stop; asked at most every
        ``poll_interval`` seconds from :meth:`check`.
    poll_interval
        Seconds between two calls of ``poll``.
    """

    def __init__(self, poll: Callable[[], bool] | None = None, *,
                 poll_interval: float = 1.0) -> None:
        self._event = threading.Event()
        self._poll = poll
        self._poll_interval = poll_interval
        self._last_poll = float("-inf")

    def cancel(self) -> None:
        """Ask the job to stop at its next boundary."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        """Whether the job was asked to stop (polls ``poll`` when it is due)."""
        if self._event.is_set():
            return True
        if self._poll is not None:
            now = time.monotonic()
            if now - self._last_poll >= self._poll_interval:
                self._last_poll = now
                if self._poll():
                    self._event.set()
        return self._event.is_set()

    def check(self, where: str) -> None:
        """Raise :class:`JobCancelled` naming ``where`` if the job was asked to stop."""
        if self.cancelled:
            raise JobCancelled(f"cancelled at {where}")


def check_cancel(token: CancelToken | None, where: str) -> None:
    """:meth:`CancelToken.check` where a token may be absent."""
    if token is not None:
        token.check(where)
