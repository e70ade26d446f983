"""auditor's cache directory and the per-file hash cache that model loading and GGUF
conversion share.

Both :mod:`auditor.lm.loading` and :mod:`auditor.lm.gguf` import from here (and from
:mod:`auditor._files`), so neither imports the other for these helpers.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from auditor._files import read_json, sha256_bytes, sha256_file, write_json
from auditor.errors import InputFileError

__all__ = ["cache_dir", "cached_sha256"]


def cache_dir() -> Path:
    """Return auditor's cache directory.

    ``$AUDITOR_CACHE_DIR`` when set, else ``~/.cache/auditor``.  Not created here.

    Returns
    -------
    Path
    """
    override = os.environ.get("AUDITOR_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "auditor"


def cached_sha256(path: Path, *, hashes_dir: Path | None = None) -> str:
    """SHA-256 of one file's bytes, through a sidecar keyed by (path, size, mtime_ns).

    Sidecars live in ``hashes_dir`` (default ``cache_dir() / 'hashes'``), so a large file
    is hashed once until it changes. A sidecar that cannot be read is ignored and one that
    cannot be written (a read-only cache) is not an error.

    Raises
    ------
    OSError
        The file itself cannot be read.

    Examples
    --------
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> _ = (root / "w.bin").write_bytes(b"abc")
    >>> cached_sha256(root / "w.bin", hashes_dir=root / "hashes")[:12]
    'ba7816bf8f01'
    >>> len(list((root / "hashes").glob("*.json")))
    1
    """
    resolved = path.resolve()
    stat = resolved.stat()
    key = {"path": str(resolved), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    hashes_dir = hashes_dir if hashes_dir is not None else cache_dir() / "hashes"
    sidecar = hashes_dir / f"{sha256_bytes(str(resolved))}.json"
    with contextlib.suppress(InputFileError):
        cached = read_json(sidecar, what="hash sidecar")
        if all(cached.get(k) == v for k, v in key.items()):
            value = cached.get("sha256")
            if isinstance(value, str) and len(value) == 64:
                return value
    value = sha256_file(resolved)
    with contextlib.suppress(OSError):
        write_json(sidecar, {**key, "sha256": value}, indent=None)
    return value
