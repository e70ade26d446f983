"""A scheduled corpus report: its spec, and the schedules file the beat reads.

A :class:`ScheduleSpec` names what to watch (a directory or a glob), how often (a 5-field
cron line or an interval such as ``30s``, ``10m``, ``2h``), where its snapshots and reports
go, which heads run, and when a run raises an alert. The schedules file is one JSON object
``{"format": "auditor-schedules", "version": 1, "schedules": {name: spec}}``, rewritten
atomically under a file lock by :func:`add_schedule` / :func:`remove_schedule`; the beat
(``workers/beat.py``) re-reads it when it changes.

Examples
--------
>>> parse_every("90s"), parse_every("10m"), parse_every("2h")
(90.0, 600.0, 7200.0)
>>> parse_every("0 2 * * *")
('0', '2', '*', '*', '*')
>>> parse_every("every day")
Traceback (most recent call last):
...
auditor.errors.ConfigError: field 'every': 'every day' is neither an interval (30s, 10m, \
2h, 1d) nor a 5-field cron line ("0 2 * * *")
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from auditor._files import file_lock, read_json, write_json
from auditor.errors import ConfigError

__all__ = [
    "FILE_FORMAT",
    "ScheduleSpec",
    "add_schedule",
    "get_schedule",
    "parse_every",
    "read_schedules",
    "remove_schedule",
]

#: ``format`` of a schedules file.
FILE_FORMAT = "auditor-schedules"
_VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_every(every: str) -> float | tuple[str, ...]:
    """Parse a schedule's period.

    Parameters
    ----------
    every : str
        An interval (``"30s"``, ``"10m"``, ``"2h"``, ``"1d"``) or a 5-field cron line
        (minute hour day-of-month month day-of-week, UTC; ``"0 2 * * *"``).

    Returns
    -------
    float or tuple of str
        The interval in seconds, or the five cron fields (checked by Celery's crontab).

    Raises
    ------
    ConfigError
        Neither form, a zero interval, or a cron field out of range (``field='every'``).
    """
    m = _INTERVAL.match(every)
    if m:
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
        if seconds <= 0:
            raise ConfigError(f"interval {every!r} must be positive", field="every")
        return seconds
    parts = tuple(every.split())
    if len(parts) != 5:
        raise ConfigError(f"{every!r} is neither an interval (30s, 10m, 2h, 1d) nor a "
                          f'5-field cron line ("0 2 * * *")', field="every")
    from celery.schedules import crontab

    try:
        crontab(minute=parts[0], hour=parts[1], day_of_month=parts[2],
                month_of_year=parts[3], day_of_week=parts[4])
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"bad cron line {every!r}: {e}", field="every") from e
    return parts


@dataclass(frozen=True)
class ScheduleSpec:
    """One scheduled corpus report.

    Parameters
    ----------
    name
        Letters, digits, ``_.-``; the key in the schedules file.
    every
        See :func:`parse_every`.
    watch
        A directory (the data files inside it, recursively) or a glob (``/data/in/*.jsonl``).
    out
        Where ``seen.json``, ``snapshots/<UTC time>/`` and ``index.html`` go.
    heads
        Head names or directories (``None``: every installed head).
    model, saes
        The model and SAEs (default: the shipped ones).
    text_column, id_column
        Columns of the watched files.
    explain
        Top contributing features kept per document and head.
    skip_bad_rows
        Skip unusable rows of a watched file (counted in the summary) instead of failing.
    alert_drift
        Alert when a head's label-share total variation against the previous snapshot
        reaches this (0–1); ``None``: never.
    alert_flagged
        Alert when the share of flagged documents in the snapshot reaches this (0–1).
    label_shift_threshold
        Label-share changes at least this large are listed in the "what changed" summary.
    top_features
        Features with the largest firing-rate change listed in the summary.
    webhook
        An ``http(s)://`` URL the summary of an alerting run is POSTed to, as JSON.
    """

    name: str
    every: str
    watch: str
    out: str
    heads: tuple[str, ...] | None = None
    model: str | None = None
    saes: tuple[str, ...] = ()
    text_column: str = "text"
    id_column: str | None = None
    explain: int = 5
    skip_bad_rows: bool = False
    alert_drift: float | None = None
    alert_flagged: float | None = None
    label_shift_threshold: float = 0.1
    top_features: int = 5
    webhook: str | None = None

    def __post_init__(self) -> None:
        for name in ("heads", "saes"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigError(f"schedule name {self.name!r}: use letters, digits, '_', '.' "
                              "or '-' (at most 64)", field="name")
        parse_every(self.every)
        if not self.watch:
            raise ConfigError("watch a directory or a glob", field="watch")
        if not self.out:
            raise ConfigError("give an output directory", field="out")
        for name in ("alert_drift", "alert_flagged", "label_shift_threshold"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= float(value) <= 1.0:
                raise ConfigError(f"{name} must be between 0 and 1, got {value}", field=name)
        if self.explain < 0 or self.top_features < 0:
            raise ConfigError("explain and top_features must be >= 0", field="explain")
        if self.webhook is not None and not re.match(r"^https?://[^\s/]+", self.webhook):
            raise ConfigError(f"webhook {self.webhook!r} is not an http(s) URL",
                              field="webhook")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict; :meth:`from_dict` inverts it."""
        d = asdict(self)
        for name in ("heads", "saes"):
            if d[name] is not None:
                d[name] = list(d[name])
        return d

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> ScheduleSpec:
        """Build from :meth:`to_dict` output.

        Raises
        ------
        ConfigError
            An unknown key or an invalid value (the field is named).
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(record) - known)
        if unknown:
            raise ConfigError(f"unknown schedule keys: {', '.join(unknown)}", field=unknown[0])
        try:
            return cls(**dict(record))
        except TypeError as e:  # a required key missing
            raise ConfigError(f"incomplete schedule: {e}") from e

    def matches(self) -> list[Path]:
        """The data files ``watch`` names now, sorted (see :func:`watched_files`)."""
        from auditor.schedule.files import watched_files

        return watched_files(self.watch)


def _lock(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


def read_schedules(path: str | Path) -> dict[str, ScheduleSpec]:
    """Every schedule in the schedules file (none when the file does not exist).

    Raises
    ------
    InputFileError
        The file is not JSON.
    ConfigError
        It is not a schedules file, or a schedule in it is invalid.
    """
    src = Path(path)
    if not src.is_file():
        return {}
    data = read_json(src, what="schedules file")
    if data.get("format") != FILE_FORMAT or data.get("version") != _VERSION:
        raise ConfigError(f"{src} is not an {FILE_FORMAT} file of version {_VERSION}",
                          path=src, field="schedules")
    out = {}
    for name, record in (data.get("schedules") or {}).items():
        out[name] = ScheduleSpec.from_dict(record)
    return out


def _write(path: Path, schedules: Mapping[str, ScheduleSpec]) -> None:
    write_json(path, {"format": FILE_FORMAT, "version": _VERSION,
                      "schedules": {n: s.to_dict() for n, s in sorted(schedules.items())}})


def _unknown(name: str, schedules: Mapping[str, ScheduleSpec]) -> ConfigError:
    close = difflib.get_close_matches(name, list(schedules), n=3, cutoff=0.5)
    hint = (f"; did you mean {', '.join(close)}?" if close else
            f"; schedules: {', '.join(sorted(schedules)) or 'none'}")
    return ConfigError(f"no schedule named {name!r}{hint}", field="name")


def get_schedule(path: str | Path, name: str) -> ScheduleSpec:
    """The schedule ``name``.

    Raises
    ------
    ConfigError
        There is none (the message names close matches).
    """
    schedules = read_schedules(path)
    if name not in schedules:
        raise _unknown(name, schedules)
    return schedules[name]


def add_schedule(path: str | Path, spec: ScheduleSpec, *, replace: bool = False) -> Path:
    """Add ``spec`` to the schedules file (created), atomically, under the file's lock.

    Raises
    ------
    ConfigError
        A schedule of that name exists and ``replace`` is false.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(_lock(target)):
        schedules = read_schedules(target)
        if spec.name in schedules and not replace:
            raise ConfigError(f"a schedule named {spec.name!r} exists; remove it first or "
                              "replace it", field="name")
        schedules[spec.name] = spec
        _write(target, schedules)
    return target


def remove_schedule(path: str | Path, name: str) -> ScheduleSpec:
    """Remove the schedule ``name`` from the file; return it (its outputs stay).

    Raises
    ------
    ConfigError
        There is no such schedule (the message names close matches).
    """
    target = Path(path)
    if not target.parent.is_dir():  # no file, so no schedule: nothing to lock
        raise _unknown(name, {})
    with file_lock(_lock(target)):
        schedules = read_schedules(target)
        if name not in schedules:
            raise _unknown(name, schedules)
        spec = schedules.pop(name)
        _write(target, schedules)
    return spec

