"""Small pieces several command modules share."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["job_dir"]


@contextmanager
def job_dir(out: Path | None) -> Iterator[Path]:
    """Where a command's job records its run: ``out`` when the user gave one, else a
    temporary directory removed afterwards (a command whose output is printed)."""
    if out is not None:
        yield out
        return
    with tempfile.TemporaryDirectory(prefix="auditor-") as tmp:
        yield Path(tmp)
