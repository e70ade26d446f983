"""The CLI's consumer of the progress protocol: one terminal bar per stage.

A job reports :class:`~auditor.progress.ProgressEvent` values; :func:`progress_bars`
returns the callback that draws them (tqdm on stderr), or ``None`` when bars are off.
"""

from __future__ import annotations

import sys
from typing import Any

from auditor.progress import ProgressCallback, ProgressEvent

__all__ = ["progress_bars", "progress_option_value"]

_UNITS = {"shards": "doc", "docs": "doc", "steps": "step", "chunks": "chunk",
          "tokens": "tok"}


def progress_option_value(flag: bool | None) -> bool:
    """``--progress/--no-progress``: on when asked, or by default when stderr is a terminal."""
    return sys.stderr.isatty() if flag is None else flag


_SHOWN = ("tokens", "tokens_per_s", "bad_rows", "loss", "fvu", "dead_frac")


def _number(value: float) -> str:
    """Counts with thousands separators; small fractions (fvu, dead share) with 4 digits."""
    if isinstance(value, int) or (isinstance(value, float) and abs(value) >= 100):
        return f"{value:,.0f}"
    return f"{value:.4g}"


class _Bars:
    def __init__(self) -> None:
        self._bars: dict[str, Any] = {}

    def __call__(self, event: ProgressEvent) -> None:
        from tqdm.auto import tqdm

        bar = self._bars.get(event.stage)
        if bar is None:
            bar = tqdm(total=event.total, desc=f"{event.job} {event.stage}",
                       unit=_UNITS.get(event.stage, "it"), dynamic_ncols=True,
                       file=sys.stderr)
            self._bars[event.stage] = bar
        if event.total is not None and bar.total != event.total:
            bar.total = event.total
        bar.n = event.done
        shown = {k: _number(v) for k, v in event.counters.items() if k in _SHOWN}
        if shown:
            bar.set_postfix(shown, refresh=False)
        bar.refresh()
        if event.final:
            bar.close()
            del self._bars[event.stage]


def progress_bars(enabled: bool | None) -> ProgressCallback | None:
    """The progress callback for a command's ``--progress/--no-progress`` flag."""
    return _Bars() if progress_option_value(enabled) else None
