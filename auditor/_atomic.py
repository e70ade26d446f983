"""Write a directory artefact all at once: readers see the old one or the new one, never half."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from auditor.errors import ConfigError

__all__ = ["atomic_directory"]


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
        raise ConfigError("directory exists and is not empty (pass overwrite=True)", path=out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a saved artefact is not
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
