"""What a scheduled run reads: the watched files, the ledger of those already audited, and
the snapshot input gathered from the new ones.

A file is known by its content fingerprint (:func:`auditor.io.input_fingerprint`), not its
name: a file renamed or copied unchanged is not new; a file whose bytes changed (rows
appended) is new as a whole and audited again. Write watched files atomically (write, then
rename into the watched directory): a file caught half-written is audited as it was then,
and again once complete.

The ledger is ``OUT/seen.json`` (``{"version": 1, "files": {fingerprint: {"path",
"snapshot", "seen_at"}}}``), written atomically and only after a snapshot's audit finished.

The new files of one run are gathered into one input (``input.jsonl`` in the snapshot:
``id`` = ``<relative file>:<row id>``, ``text``, ``source`` = the relative file) rather
than audited one by one: a snapshot is one corpus with one report, one drift against the
previous snapshot and one set of label shares for the trend, and the model runs once over
all new rows in full batches instead of once per (possibly tiny) file.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from auditor._files import atomic_write_text, read_json, write_json
from auditor.errors import RowError

__all__ = [
    "SEEN_FILE",
    "WatchedFile",
    "mark_seen",
    "new_files",
    "read_seen",
    "snapshot_name",
    "watched_files",
    "write_snapshot_input",
]

SEEN_FILE = "seen.json"
_DATA_ENDINGS = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz", ".parquet", ".csv",
                 ".csv.gz", ".txt")
_MAGIC = set("*?[")


@dataclass(frozen=True)
class WatchedFile:
    """A data file under a schedule's watch: its path, its name relative to the watched
    root (the ``source`` of its rows) and its content fingerprint."""

    path: str
    source: str
    fingerprint: str


def _is_data(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and not name.startswith(".") and name.endswith(_DATA_ENDINGS)


def _root(watch: str) -> Path:
    """The directory a watch's relative source names start from."""
    path = Path(watch).expanduser()
    if path.is_dir():
        return path
    parts = []
    for part in path.parts:
        if _MAGIC & set(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def watched_files(watch: str) -> list[Path]:
    """The data files a watch names now, sorted.

    Parameters
    ----------
    watch : str
        A directory (its data files, recursively; hidden files and directories left out)
        or a glob (``**`` recurses). Only files with a dataset ending (``.jsonl``,
        ``.parquet``, ``.csv``, ``.txt``, ``.gz`` of those) count.

    Returns
    -------
    list of Path
        Possibly empty (nothing there yet is not an error).

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> for name in ("a.jsonl", "notes.md", ".hidden.jsonl", "sub/b.csv"):
    ...     (d / name).parent.mkdir(exist_ok=True)
    ...     _ = (d / name).write_text("x")
    >>> [p.relative_to(d).as_posix() for p in watched_files(str(d))]
    ['a.jsonl', 'sub/b.csv']
    >>> [p.name for p in watched_files(str(d / "*.jsonl"))]
    ['a.jsonl']
    """
    path = Path(watch).expanduser()
    if path.is_dir():
        found = [p for p in path.rglob("*")
                 if _is_data(p) and not any(part.startswith(".")
                                            for part in p.relative_to(path).parts)]
    else:
        found = [Path(p) for p in glob.glob(str(path), recursive=True) if _is_data(Path(p))]
    return sorted(found)


def read_seen(out: str | Path) -> dict[str, dict[str, Any]]:
    """The ledger of audited files: fingerprint → ``{"path", "snapshot", "seen_at"}``."""
    src = Path(out) / SEEN_FILE
    if not src.is_file():
        return {}
    return dict(read_json(src, what="seen-files ledger").get("files") or {})


def new_files(watch: str, seen: Mapping[str, Any]) -> tuple[list[WatchedFile], int]:
    """The watched files whose content is not in ``seen`` (one per fingerprint, the first
    by path), and how many files the watch matched."""
    from auditor.io import input_fingerprint

    paths = watched_files(watch)
    root = _root(watch)
    out: list[WatchedFile] = []
    fresh: set[str] = set()
    for path in paths:
        fp = input_fingerprint(path)
        if fp in seen or fp in fresh:
            continue
        fresh.add(fp)
        try:
            source = path.relative_to(root).as_posix()
        except ValueError:
            source = path.as_posix()
        out.append(WatchedFile(path=str(path), source=source, fingerprint=fp))
    return out, len(paths)


def mark_seen(out: str | Path, files: Iterable[WatchedFile], *, snapshot: str | None) -> None:
    """Add ``files`` to the ledger (atomically), as audited in ``snapshot``."""
    ledger = read_seen(out)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    for f in files:
        ledger[f.fingerprint] = {"path": f.source, "snapshot": snapshot, "seen_at": now}
    write_json(Path(out) / SEEN_FILE, {"version": 1, "files": ledger})


def write_snapshot_input(files: Iterable[WatchedFile], target: str | Path, *,
                         text_column: str = "text", id_column: str | None = None,
                         skip_bad_rows: bool = False) -> dict[str, Any]:
    """Gather the rows of ``files`` into one JSONL input (see the module docstring).

    Returns
    -------
    dict
        ``documents`` (rows written), ``sources`` (per file: ``source``, ``fingerprint``,
        ``documents``, ``skipped_rows``).

    Raises
    ------
    InputError
        A file cannot be read, or a bad row when ``skip_bad_rows`` is false.
    """
    from auditor.io import read_documents

    lines: list[str] = []
    sources = []
    for f in files:
        errors: list[RowError] = []
        before = len(lines)
        txt = f.path.lower().endswith(".txt")
        for doc in read_documents(f.path, text_column=text_column,
                                  id_column=None if txt else id_column,
                                  skip_bad_rows=skip_bad_rows, errors=errors):
            lines.append(json.dumps({"id": f"{f.source}:{doc.doc_id}", "text": doc.text,
                                     "source": f.source}, ensure_ascii=False) + "\n")
        sources.append({"source": f.source, "fingerprint": f.fingerprint,
                        "documents": len(lines) - before, "skipped_rows": len(errors)})
    atomic_write_text(target, "".join(lines))
    return {"documents": len(lines), "sources": sources}


def snapshot_name(now: datetime | None = None, *, taken: Iterable[str] = ()) -> str:
    """A snapshot directory name: the UTC time ``YYYYmmddTHHMMSSZ`` (sorts in time order),
    with ``-2``, ``-3`` … when a snapshot of that second exists.

    Examples
    --------
    >>> t = datetime(2026, 12, 5, 2, 0, 0, tzinfo=UTC)
    >>> snapshot_name(t), snapshot_name(t, taken=["20261205T020000Z"])
    ('20261205T020000Z', '20261205T020000Z-2')
    """
    base = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    used = set(taken)
    name, i = base, 1
    while name in used:
        i += 1
        name = f"{base}-{i}"
    return name

