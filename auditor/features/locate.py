"""Find an SAE's feature dictionary by the SAE's sha256, never by an absolute path.

A dictionary's manifest records the sha256 of the SAE it describes
(``provenance.sae.sha256``); that hash is what a head card, a feature store or a
prediction file records too. :func:`find_dictionary` looks in, in order:

1. ``labels_dir`` (``--labels DIR``): that dictionary, or one inside it. A dictionary there
   of another SAE is an error naming both hashes: the user asked for it;
2. beside the SAE (``sae_path``): ``<sae dir>/dictionary``, ``<file>.dictionary`` and
   ``<sae dir>/dictionaries/*``;
3. the models dir (:func:`auditor.defaults.models_dir`): ``dictionaries/<sha256>``,
   ``dictionaries/*`` and ``sae/*/dictionary``;
4. the data home (:func:`auditor.defaults.data_home`, ``$XDG_DATA_HOME/auditor``):
   ``dictionaries/<sha256>`` and ``dictionaries/*``;
5. ``$AUDITOR_DICTIONARY_PATH``: each of its ``os.pathsep``-separated directories, as a
   dictionary or a directory of dictionaries (``<dir>/<sha256>``, ``<dir>/*``).

The first dictionary whose manifest names the SAE's sha256 wins; others are skipped. When
none is found, :func:`missing_note` says where it looked and the ``auditor features build``
command that makes one. :func:`load_annotations` returns labels and one example context per
feature with the note, for the faces to print.

Examples
--------
>>> import tempfile
>>> root = Path(tempfile.mkdtemp())
>>> find_dictionary("ab" * 32, environ={"AUDITOR_MODELS_DIR": str(root),
...                                     "XDG_DATA_HOME": str(root)}) is None
True
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor.errors import AuditorError, ProvenanceMismatch, StoreError
from auditor.features.files import DICTIONARY_DIRNAME, MANIFEST

__all__ = [
    "DICTIONARY_PATH_ENV",
    "Annotations",
    "Located",
    "build_command",
    "dictionary_sae_sha256",
    "find_dictionary",
    "load_annotations",
    "missing_note",
    "sae_of",
    "search_dirs",
]

#: The variable naming more dictionary directories, ``os.pathsep``-separated.
DICTIONARY_PATH_ENV = "AUDITOR_DICTIONARY_PATH"
#: Directory of dictionaries (one per SAE, named by its sha256 or anything) in the models
#: dir and the data home.
DICTIONARIES_DIRNAME = "dictionaries"
#: Longest example context kept per feature (characters).
EXAMPLE_CHARS = 120


@dataclass(frozen=True)
class Located:
    """A dictionary found for an SAE.

    Attributes
    ----------
    path : Path
        The dictionary directory.
    origin : str
        Where it was found: ``--labels``, ``beside the SAE``, ``models dir``,
        ``data home`` or ``$AUDITOR_DICTIONARY_PATH``.
    sae_sha256 : str
        The SAE's sha256 its manifest records.
    """

    path: Path
    origin: str
    sae_sha256: str


@dataclass(frozen=True)
class Annotations:
    """Feature labels and one example context each, or why there are none.

    Attributes
    ----------
    labels : dict of int to str
        Feature → label (empty without a dictionary).
    examples : dict of int to str
        Feature → its top context (firing token in «…»), at most ``EXAMPLE_CHARS`` long.
    located : Located or None
        The dictionary they come from.
    note : str or None
        Without a dictionary: where it was looked for and how to build one.
    """

    labels: dict[int, str] = field(default_factory=dict)
    examples: dict[int, str] = field(default_factory=dict)
    located: Located | None = None
    note: str | None = None

    def label(self, feature: int) -> str | None:
        """The feature's label, or None."""
        return self.labels.get(int(feature))

    def example(self, feature: int) -> str | None:
        """The feature's example context, or None."""
        return self.examples.get(int(feature))

    def info(self) -> dict[str, Any]:
        """What a job result records: the dictionary's path and origin, or the note."""
        if self.located is None:
            return {"path": None, "origin": None, "note": self.note}
        return {"path": str(self.located.path), "origin": self.located.origin, "note": None}


def dictionary_sae_sha256(directory: str | Path) -> str | None:
    """The SAE sha256 a dictionary's manifest records, or None when ``directory`` holds no
    readable dictionary manifest."""
    from auditor.features.files import load_manifest

    try:
        manifest = load_manifest(directory)
    except AuditorError:
        return None
    sha = ((manifest.get("provenance") or {}).get("sae") or {}).get("sha256")
    return str(sha) if sha else None


def _is_dictionary(path: Path) -> bool:
    return (path / MANIFEST).is_file()


def _dictionaries_in(root: Path, sha: str) -> Iterator[Path]:
    """``root`` itself, ``root/<sha>``, then ``root``'s children that are dictionaries."""
    if _is_dictionary(root):
        yield root
    if not root.is_dir():
        return
    if _is_dictionary(root / sha):
        yield root / sha
    try:
        children = sorted(p for p in root.iterdir() if p.is_dir())
    except OSError:
        return
    for child in children:
        if child.name != sha and _is_dictionary(child):
            yield child


def _beside(sae_path: str | Path) -> list[Path]:
    """Where a dictionary of the SAE at ``sae_path`` (file or directory) lives beside it."""
    src = Path(sae_path).expanduser()
    is_file = src.is_file() or (not src.is_dir() and bool(src.suffix))
    base = src.parent if is_file else src
    out = []
    if is_file:
        out.append(src.parent / f"{src.name}.{DICTIONARY_DIRNAME}")
    out += [base / DICTIONARY_DIRNAME, base / DICTIONARIES_DIRNAME]
    return out


def search_dirs(sae_path: str | Path | None = None,
                environ: Mapping[str, str] | None = None) -> list[tuple[Path, str]]:
    """The directories :func:`find_dictionary` searches after ``--labels``, in order, each
    with its origin (see the module docstring); they need not exist."""
    from auditor.defaults import data_home, models_dir

    env = os.environ if environ is None else environ
    dirs: list[tuple[Path, str]] = []
    if sae_path is not None:
        dirs += [(p, "beside the SAE") for p in _beside(sae_path)]
    models = models_dir(env)
    dirs.append((models / DICTIONARIES_DIRNAME, "models dir"))
    sae_root = models / "sae"
    if sae_root.is_dir():
        dirs += [(p / DICTIONARY_DIRNAME, "models dir")
                 for p in sorted(sae_root.iterdir()) if p.is_dir()]
    dirs.append((data_home(env) / DICTIONARIES_DIRNAME, "data home"))
    dirs += [(Path(p).expanduser(), f"${DICTIONARY_PATH_ENV}")
             for p in env.get(DICTIONARY_PATH_ENV, "").split(os.pathsep) if p.strip()]
    seen: set[Path] = set()
    out = []
    for path, origin in dirs:
        key = Path(os.path.normpath(Path.cwd() / path))
        if key not in seen:
            seen.add(key)
            out.append((key, origin))
    return out


def find_dictionary(
    sae_sha256: str,
    *,
    labels_dir: str | Path | None = None,
    sae_path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Located | None:
    """The feature dictionary of the SAE whose sha256 is ``sae_sha256``.

    Parameters
    ----------
    sae_sha256 : str
        The SAE file's sha256 (as a store's, a head card's or a dictionary's provenance
        records it).
    labels_dir : str or Path, optional
        A dictionary directory, or a directory of dictionaries, given by the user
        (``--labels``); searched first, and its dictionary must be of this SAE.
    sae_path : str or Path, optional
        The SAE file or directory, when known: dictionaries beside it come next.
    environ : mapping, optional
        The environment (default ``os.environ``): ``AUDITOR_MODELS_DIR``,
        ``XDG_DATA_HOME`` and ``AUDITOR_DICTIONARY_PATH``.

    Returns
    -------
    Located or None
        None when no dictionary of this SAE is found (see :func:`missing_note`).

    Raises
    ------
    ProvenanceMismatch
        ``labels_dir`` holds dictionaries, none of them of this SAE (the message names
        both hashes and the directory).
    StoreError
        ``labels_dir`` holds no dictionary at all.
    """
    sha = str(sae_sha256)
    if labels_dir is not None:
        root = Path(labels_dir).expanduser()
        found = {p: dictionary_sae_sha256(p) for p in _dictionaries_in(root, sha)}
        for path, have in found.items():
            if have == sha:
                return Located(path, "--labels", sha)
        if not found:
            raise StoreError(f"--labels {root}: no feature dictionary there (no {MANIFEST}); "
                             f"{build_command(sae_path, sha, out=root)}", path=root,
                             field="labels")
        others = ", ".join(sorted({str(h) for h in found.values()}))
        raise ProvenanceMismatch(
            f"--labels {root}: the dictionary there is of the SAE with sha256 {others}, "
            f"but these features come from the SAE with sha256 {sha}; name that SAE's "
            f"dictionary, or build one ({build_command(sae_path, sha)})", path=root,
            field="labels")
    for directory, origin in search_dirs(sae_path, environ):
        for path in _dictionaries_in(directory, sha):
            if dictionary_sae_sha256(path) == sha:
                return Located(path, origin, sha)
    return None


def build_command(sae_path: str | Path | None, sae_sha256: str, *,
                  out: str | Path | None = None) -> str:
    """The ``auditor features build`` command line that makes the SAE's dictionary."""
    sae = str(sae_path) if sae_path is not None else f"<the SAE with sha256 {sae_sha256[:16]}…>"
    cmd = f"auditor features build --corpus CORPUS.jsonl --sae {sae}"
    if out is not None:
        cmd += f" --out {out}"
    return f"build one with `{cmd}`"


def missing_note(sae_sha256: str, *, sae_path: str | Path | None = None,
                 environ: Mapping[str, str] | None = None) -> str:
    """What a face prints when no dictionary is found: where it looked, and the command
    that builds one (beside the SAE by default, where it is found next time)."""
    env = os.environ if environ is None else environ
    return (f"no feature labels: no feature dictionary of the SAE with sha256 "
            f"{sae_sha256[:16]}… was found beside the SAE, in the models dir, the data home "
            f"or ${DICTIONARY_PATH_ENV} ({env.get(DICTIONARY_PATH_ENV) or 'unset'}); "
            f"{build_command(sae_path, sae_sha256)}, or name one with --labels DIR")


def sae_of(provenance: Mapping[str, Any], *, sae: str | None = None,
           environ: Mapping[str, str] | None = None) -> tuple[str | None, Path | None]:
    """The sha256 and the local path of the one SAE a provenance record names.

    Parameters
    ----------
    provenance : mapping
        A store's metadata, a predictions file's or a head card's provenance (``saes``:
        key → ``{path, sha256, relative_to?}``).
    sae : str, optional
        The SAE key to take when there are several.
    environ : mapping, optional
        For the models dir a relative path (``relative_to: "models"``) is resolved against.

    Returns
    -------
    sha256, path
        ``(None, None)`` unless exactly one SAE (or ``sae``) is named; the path is None
        when it does not exist here (the dictionary is then found by hash alone).
    """
    from auditor.defaults import models_dir

    saes = provenance.get("saes") or {}
    if sae is not None:
        info = saes.get(sae)
    else:
        info = next(iter(saes.values())) if len(saes) == 1 else None
    if not isinstance(info, Mapping) or not info.get("sha256"):
        return None, None
    raw = info.get("path")
    path: Path | None = None
    if isinstance(raw, str) and raw:
        path = Path(raw).expanduser()
        if not path.is_absolute() and info.get("relative_to") == "models":
            path = models_dir(environ) / path
        if not path.is_absolute() or not path.exists():
            path = None
    return str(info["sha256"]), path


def load_annotations(
    sae_sha256: str | None,
    *,
    labels_dir: str | Path | None = None,
    sae_path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Annotations:
    """Labels and one example context per feature from the SAE's dictionary.

    Parameters
    ----------
    sae_sha256 : str or None
        The SAE's sha256; None (features of several SAEs, or an SAE without a hash) gives
        no labels, with a note saying so.
    labels_dir, sae_path, environ
        As for :func:`find_dictionary`.

    Returns
    -------
    Annotations

    Raises
    ------
    ProvenanceMismatch, StoreError
        From :func:`find_dictionary` (a ``labels_dir`` of another SAE or without a
        dictionary), or a found dictionary whose files are missing or corrupt.
    """
    from auditor.features.files import load_contexts
    from auditor.features.labels import feature_labels

    if sae_sha256 is None:
        return Annotations(note="no feature labels: the features do not come from exactly "
                                "one SAE with a known sha256")
    located = find_dictionary(sae_sha256, labels_dir=labels_dir, sae_path=sae_path,
                              environ=environ)
    if located is None:
        return Annotations(note=missing_note(sae_sha256, sae_path=sae_path, environ=environ))
    labels = feature_labels(located.path)
    contexts = load_contexts(located.path)  # by feature, then rank: the first is the top
    examples: dict[int, str] = {}
    for feature, text in zip(contexts["feature"].to_list(), contexts["text"].to_list(),
                             strict=True):
        examples.setdefault(int(feature), _short(str(text)))
    return Annotations(labels=labels, examples=examples, located=located)


def _short(text: str) -> str:
    """``text`` on one line, at most :data:`EXAMPLE_CHARS`, cut around the «firing» token."""
    text = " ".join(text.split())
    if len(text) <= EXAMPLE_CHARS:
        return text
    at = text.find("«")
    start = max(0, min(at - EXAMPLE_CHARS // 2, len(text) - EXAMPLE_CHARS)) if at >= 0 else 0
    cut = text[start:start + EXAMPLE_CHARS - 2]
    return ("…" if start > 0 else "") + cut + ("…" if start + len(cut) < len(text) else "")
