"""Files written whole or not at all, their hashes, and JSON records.

The one place for the small file chores every layer needs: a reader sees the old file or
the new one, never half of it (write to a temporary sibling, fsync, rename), files are
hashed in chunks, and a JSON record that does not parse is an error that names the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from auditor.errors import ConfigError, InputFileError

__all__ = [
    "apply_umask",
    "atomic_directory",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_writable",
    "file_lock",
    "fsync_dir",
    "read_json",
    "read_json_optional",
    "sha256_bytes",
    "sha256_file",
    "write_json",
]

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks.

    Examples
    --------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "a"
    >>> _ = p.write_bytes(b"abc")
    >>> sha256_file(p)[:12]
    'ba7816bf8f01'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes | str) -> str:
    """Hex SHA-256 of ``data`` (a string is hashed as UTF-8)."""
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


def fsync_dir(directory: str | Path) -> None:
    """Make a rename inside ``directory`` durable (a no-op where directories cannot be
    opened, e.g. on Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it; set straight back
    os.umask(mask)
    return mask


def apply_umask(path: str | Path, *, directory: bool = False) -> None:
    """Give a file made private by ``mkstemp`` / ``mkdtemp`` the mode an ordinary
    ``open`` would have given it (0666, or 0777 for a directory, less the umask), so a
    shared store is as readable as the user's umask says."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def check_writable(directory: str | Path, *, field: str = "out") -> Path:
    """Make sure ``directory`` can be written, before any long work starts.

    Creates it (and its parents) when missing.

    Raises
    ------
    ConfigError
        It exists and is not a directory, cannot be created, or is not writable; the
        message names the path and the reason.
    """
    root = Path(directory)
    if root.exists() and not root.is_dir():
        raise ConfigError("exists and is not a directory", path=root, field=field)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot be created: {e.strerror or e}", path=root,
                          field=field) from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise ConfigError("is not writable", path=root, field=field)
    return root


@contextmanager
def file_lock(path: str | Path, *, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path`` (created) for the block.

    Yields whether the lock is held: with ``blocking=False`` it is ``False`` at once when
    another process (or another open of the file) holds it. Where ``fcntl`` does not
    exist (Windows) it yields ``True`` without locking.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield True
        return
    with open(path, "a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary sibling and a rename.

    Returns
    -------
    Path
        ``path``.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        apply_umask(tmp)  # mkstemp makes it private; a written artefact is not
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)
    return target


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write_bytes` of ``text`` as UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, record: Mapping[str, Any], *, indent: int | None = 2,
               sort_keys: bool = False) -> Path:
    """Write ``record`` as JSON, atomically; values that JSON lacks are an error, not a
    silent ``str()``."""
    text = json.dumps(record, indent=indent, sort_keys=sort_keys, allow_nan=False,
                      ensure_ascii=False)
    return atomic_write_text(path, text + "\n")


def read_json(path: str | Path, *, what: str = "JSON file") -> dict[str, Any]:
    """Read a JSON object from ``path``.

    Raises
    ------
    InputFileError
        The file is missing, unreadable, not JSON or not an object; the message names it.
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputFileError(f"{what} not found", path=p) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputFileError(f"{what} cannot be read: {e}", path=p) from None
    if not isinstance(data, dict):
        raise InputFileError(f"{what} must hold a JSON object, not {type(data).__name__}",
                             path=p)
    return data


def read_json_optional(path: str | Path) -> dict[str, Any]:
    """The JSON object at ``path``, or ``{}`` when it is missing or unreadable (for
    records a reader can do without, such as a card's optional sections)."""
    try:
        return read_json(path)
    except InputFileError:
        return {}


@contextmanager
def atomic_directory(directory: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``directory`` to fill; on success it replaces
    ``directory``, on error it is removed.

    Raises
    ------
    ConfigError
        ``directory`` exists, is not empty and ``overwrite`` is False.
    """
    out = Path(directory)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError("directory exists and is not empty (set overwrite to replace it)",
                          path=out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    apply_umask(tmp, directory=True)  # mkdtemp makes it private; a saved artefact is not
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
