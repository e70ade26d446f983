"""Where a queued job's files live: one small interface, a local-filesystem implementation.

Every path a queued job reads or writes (its manifest, the store's done-markers, leftover
temporary files) goes through a :class:`JobStorage`, so that an object-storage backend
(several machines sharing one job without a shared filesystem) plugs in by implementing
these few methods; the jobs themselves write to :meth:`JobStorage.local_path`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from auditor._files import read_json, write_json
from auditor.errors import ConfigError

__all__ = ["JobStorage", "LocalStorage", "storage_for"]


class JobStorage(Protocol):
    """A job's output location.

    Names are ``/``-separated paths relative to the job's ``out``.
    """

    url: str

    def local_path(self, name: str = "") -> Path:
        """A local directory or file the jobs read and write (for object storage: a
        synchronised cache)."""
        ...

    def read_json(self, name: str) -> dict[str, Any] | None:
        """The JSON object stored under ``name``, or ``None`` when there is none."""
        ...

    def write_json(self, name: str, record: Mapping[str, Any]) -> None:
        """Store ``record`` under ``name`` atomically (readers see the old or the new)."""
        ...

    def lock(self, name: str) -> contextlib.AbstractContextManager[None]:
        """Serialise read-modify-write of ``name`` between processes and machines."""
        ...

    def list_files(self, prefix: str) -> list[str]:
        """Names of the files directly under the directory ``prefix``."""
        ...

    def remove_temporary(self, prefix: str) -> list[str]:
        """Delete the temporary files a killed writer left under ``prefix`` (``.*.tmp``,
        at any depth, but not the manifest's in ``_job/``); return their names. Call only
        when no writer is running."""
        ...


class LocalStorage:
    """A job's out directory on a local (or network-mounted, ``flock``-capable) filesystem.

    Examples
    --------
    >>> import tempfile
    >>> s = LocalStorage(tempfile.mkdtemp())
    >>> with s.lock("_job/manifest.json"):
    ...     s.write_json("_job/manifest.json", {"state": "queued"})
    >>> s.read_json("_job/manifest.json"), s.read_json("missing.json")
    ({'state': 'queued'}, None)
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.url = str(self.root)

    def local_path(self, name: str = "") -> Path:
        return self.root / name if name else self.root

    def read_json(self, name: str) -> dict[str, Any] | None:
        path = self.root / name
        if not path.is_file():
            return None
        return read_json(path, what=name)

    def write_json(self, name: str, record: Mapping[str, Any]) -> None:
        write_json(self.root / name, record)

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        import fcntl

        path = self.root / f"{name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def list_files(self, prefix: str) -> list[str]:
        directory = self.root / prefix
        if not directory.is_dir():
            return []
        return sorted(p.name for p in directory.iterdir() if p.is_file())

    def remove_temporary(self, prefix: str) -> list[str]:
        directory = self.root / prefix
        removed = []
        if directory.is_dir():
            for path in sorted(directory.rglob(".*.tmp")):
                if "_job" in path.relative_to(self.root).parts:
                    continue  # the manifest's own writes, under its lock
                if path.is_file():
                    path.unlink(missing_ok=True)
                    removed.append(path.relative_to(self.root).as_posix())
        return removed


def storage_for(out: str | Path) -> JobStorage:
    """The storage of a job whose outputs go to ``out`` (a local path; ``s3://…`` and the
    like are for a later backend).

    Raises
    ------
    ConfigError
        ``out`` names a storage scheme auditor does not have yet.
    """
    text = os.fspath(out)
    if "://" in text and not text.startswith("file://"):
        raise ConfigError(f"no storage backend for {text.split('://')[0]!r} yet; use a path "
                          "every worker can reach", field="out")
    return LocalStorage(text.removeprefix("file://"))
