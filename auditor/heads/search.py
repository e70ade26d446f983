"""Finding heads by name along the heads search path.

A head is named by its directory (``heads/mine``, ``/srv/heads/safety``) or by its name,
looked up in the directories of :func:`auditor.defaults.heads_search_path` in order: the
shipped heads, the user's (``~/.local/share/auditor/heads``), ``$AUDITOR_HEADS_PATH``, and
the working directory's ``heads/`` (where ``auditor probe train --head NAME`` writes). The
first directory holding a head of that name wins; a head of the same name further down is
*shadowed* (``auditor heads list`` says by which).

Without names, commands apply the default set: the shipped heads (:func:`list_heads`), so
what ``auditor classify`` labels does not depend on the directory it runs from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from auditor.defaults import HeadsDir, heads_search_path, models_dir
from auditor.errors import ConfigError
from auditor.heads.head import CONFIG_FILE, Head, load_head

__all__ = ["FoundHead", "find_heads", "is_head_path", "list_heads", "load_heads",
           "resolve_head"]


@dataclass(frozen=True)
class FoundHead:
    """A head directory on the search path.

    Parameters
    ----------
    name
        The head's name (its directory's name).
    path
        The head's directory.
    origin
        Why its parent is on the search path (:class:`auditor.defaults.HeadsDir`).
    shadowed_by
        The directory of the head of the same name found first, or None when this one is
        what the name finds.
    """

    name: str
    path: Path
    origin: str
    shadowed_by: Path | None = None


def _heads_in(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if (p / CONFIG_FILE).is_file())


def find_heads(search_path: Sequence[HeadsDir] | None = None) -> list[FoundHead]:
    """Every head on the search path, in search order (sorted by name within a directory).

    Parameters
    ----------
    search_path : sequence of HeadsDir, optional
        Default :func:`auditor.defaults.heads_search_path`.

    Returns
    -------
    list of FoundHead
        Shadowed heads included, with ``shadowed_by`` set.
    """
    dirs = heads_search_path() if search_path is None else search_path
    first: dict[str, Path] = {}
    out = []
    for d in dirs:
        for path in _heads_in(d.path):
            winner = first.setdefault(path.name, path)
            out.append(FoundHead(path.name, path, d.origin,
                                 None if winner == path else winner))
    return out


def is_head_path(ref: str) -> bool:
    """Whether ``ref`` names a head by its directory rather than by its name (a head's name
    has no ``/``, ``.`` or ``\\``: :class:`~auditor.heads.HeadConfig` refuses them)."""
    return any(c in ref for c in "/\\.") or ref.startswith("~")


def resolve_head(ref: str | Path, *, search_path: Sequence[HeadsDir] | None = None) -> Path:
    """The directory of a head named by directory or by name.

    Parameters
    ----------
    ref : str or Path
        A head directory (anything with ``/`` or ``.`` in it) or a head's name, looked up
        along ``search_path``; a bare name that is not on the path but is a directory here
        is taken as that directory.
    search_path : sequence of HeadsDir, optional
        Default :func:`auditor.defaults.heads_search_path`.

    Returns
    -------
    Path

    Raises
    ------
    ConfigError
        No head of that name on the search path (the message lists the heads found and the
        directories searched), or no such directory (``field='head'``).
    """
    text = str(ref)
    if is_head_path(text):
        path = Path(text).expanduser()
        if not path.is_dir():
            raise ConfigError(f"no head directory {text}", path=path, field="head")
        return path
    dirs = list(heads_search_path() if search_path is None else search_path)
    for d in dirs:
        if (d.path / text / CONFIG_FILE).is_file():
            return d.path / text
    if Path(text).is_dir():
        return Path(text)
    names = sorted({h.name for h in find_heads(dirs)})
    searched = "; ".join(f"{d.path} ({d.origin})" for d in dirs)
    raise ConfigError(f"no head named {text}; heads found: {', '.join(names) or 'none'}; "
                      f"searched: {searched}. Name a head directory by its path, or add "
                      f"its parent directory to $AUDITOR_HEADS_PATH", field="head")


def list_heads(directory: str | Path | None = None) -> list[Path]:
    """Head directories in ``directory``; by default the shipped ones (``models/heads``),
    the set commands apply when no head is named."""
    root = Path(directory) if directory is not None else models_dir() / "heads"
    return _heads_in(root)


def load_heads(names: Sequence[str] | None = None, *,
               directory: str | Path | None = None) -> list[Head]:
    """Load heads by name or directory (all of the default set when ``names`` is None).

    Parameters
    ----------
    names : sequence of str, optional
        Head names (looked up along the search path, see :func:`resolve_head`) or
        directories. None: every head of :func:`list_heads` (``directory``).
    directory : str or Path, optional
        Look names up in this directory only, instead of the search path.

    Raises
    ------
    ConfigError
        A named head is not found (the message lists those that are and where it looked).
    """
    if names is None:
        return [load_head(p) for p in list_heads(directory)]
    dirs = None if directory is None else [HeadsDir(Path(directory), "given")]
    return [load_head(resolve_head(n, search_path=dirs)) for n in names]
