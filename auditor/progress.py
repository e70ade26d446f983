"""One progress protocol for every long piece of work.

A job reports progress as :class:`ProgressEvent` values passed to one callback
(``progress(event)``). Each event names the job and the stage, how much of the stage is
done out of how much (``total`` may be unknown), and running counters (``docs``,
``tokens``, ``tokens_per_s``, ``bad_rows``, …). Events of a stage arrive in order with
``done`` never going down, are throttled to a few per second, and a stage always ends
with one ``final`` event whose ``done == total``.

The CLI's progress bars are one consumer (:mod:`auditor.cli._progress`); a Celery task's
state updates are another. Library code below the jobs takes a :class:`Stage` (or
``None``) and calls :meth:`Stage.advance` / :meth:`Stage.update` at its boundaries.

Examples
--------
>>> events = []
>>> progress = Progress(events.append, job="extract", interval=0.0)
>>> with progress.stage("shards", total=2) as stage:
...     stage.advance(1, docs=10)
...     stage.advance(1, docs=20)
>>> [(e.stage, e.done, e.total, e.final) for e in events]
[('shards', 1, 2, False), ('shards', 2, 2, False), ('shards', 2, 2, True)]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Progress", "ProgressCallback", "ProgressEvent", "Stage", "stage_of"]


@dataclass(frozen=True)
class ProgressEvent:
    """How far one stage of a job has come.

    Parameters
    ----------
    job
        The job's verb (``extract``, ``sae-train``, …).
    stage
        The stage within the job (``shards``, ``steps``, ``classify``, …).
    done, total
        Units of the stage finished, out of ``total`` (``None`` when not known).
    counters
        Running counts: ``docs``, ``tokens``, ``tokens_per_s``, ``bad_rows`` and the like.
    final
        The stage's last event (``done == total``).
    """

    job: str
    stage: str
    done: int
    total: int | None
    counters: Mapping[str, float] = field(default_factory=dict)
    final: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record (a Celery task's ``meta``)."""
        return {"job": self.job, "stage": self.stage, "done": self.done, "total": self.total,
                "counters": dict(self.counters), "final": self.final}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> ProgressEvent:
        """Inverse of :meth:`to_dict`."""
        return cls(job=str(record["job"]), stage=str(record["stage"]),
                   done=int(record["done"]),
                   total=None if record.get("total") is None else int(record["total"]),
                   counters=dict(record.get("counters") or {}),
                   final=bool(record.get("final", False)))


ProgressCallback = Callable[[ProgressEvent], None]


class Stage:
    """One stage's running state; emits through its :class:`Progress`.

    Use :meth:`Progress.stage` to make one. ``tokens_per_s`` is filled in from a ``tokens``
    counter and the stage's wall time.
    """

    def __init__(self, progress: Progress, name: str, total: int | None) -> None:
        self._progress = progress
        self.name = name
        self.total = total
        self.done = 0
        self.counters: dict[str, float] = {}
        self._started = progress._clock()
        self._last = float("-inf")
        self._closed = False

    def set_total(self, total: int | None) -> None:
        """Learn (or correct) the stage's total once it is known."""
        self.total = total

    def advance(self, n: int = 1, **counters: float) -> None:
        """``n`` more units are done; ``counters`` replace the running counts."""
        self.update(self.done + n, **counters)

    def update(self, done: int | None = None, **counters: float) -> None:
        """Set the units done (never backwards) and counters; emit if the throttle allows."""
        if done is not None:
            self.done = max(self.done, int(done))
        self.counters.update(counters)
        now = self._progress._clock()
        if now - self._last >= self._progress.interval:
            self._last = now
            self._emit(final=False)

    def close(self) -> None:
        """End the stage with its final event (``done == total``); idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.total is None or self.total < self.done:
            self.total = self.done
        self.done = self.total
        self._emit(final=True)

    def _emit(self, *, final: bool) -> None:
        counters = dict(self.counters)
        if "tokens" in counters:
            elapsed = self._progress._clock() - self._started
            counters["tokens_per_s"] = round(counters["tokens"] / elapsed, 1) if elapsed > 0 \
                else 0.0
        self._progress._send(ProgressEvent(job=self._progress.job, stage=self.name,
                                           done=self.done, total=self.total,
                                           counters=counters, final=final))


class Progress:
    """Throttled progress reporting for one job run.

    Parameters
    ----------
    callback
        Receives every event; ``None`` makes every call a cheap no-op.
    job
        The job's verb, copied into every event.
    interval
        Seconds between two non-final events of a stage (final events always go out).
    clock
        Monotonic clock (tests pass a fake one).
    """

    def __init__(self, callback: ProgressCallback | None, *, job: str, interval: float = 0.25,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.callback = callback
        self.job = job
        self.interval = interval
        self._clock = clock

    @contextmanager
    def stage(self, name: str, total: int | None = None) -> Iterator[Stage]:
        """A stage that closes with its final event when the block ends without error."""
        stage = Stage(self, name, total)
        yield stage
        stage.close()

    def _send(self, event: ProgressEvent) -> None:
        if self.callback is not None:
            self.callback(event)


def stage_of(progress: Progress | ProgressCallback | None, *, job: str, name: str,
             total: int | None = None) -> Stage:
    """A stage to hand to library code: from a :class:`Progress`, a bare callback or
    ``None`` (a stage that reports nowhere). The caller closes it."""
    if not isinstance(progress, Progress):
        progress = Progress(progress, job=job)
    return Stage(progress, name, total)
