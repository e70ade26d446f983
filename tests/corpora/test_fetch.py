"""Offline tests of auditor.corpora.fetch: the registry client is simulated via ``_run``."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from auditor.corpora import fetch
from auditor.errors import ConfigError, InputFileError

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("pkg/__init__.py", "x = 1\n")
    return buf.getvalue()


def _tgz_bytes() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        data = b'{"name": "x"}'
        info = tarfile.TarInfo("package/package.json")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _runner(
    files: dict[str, bytes], *, rc: int = 0, stderr: str = "", calls: list[list[str]]
) -> Runner:
    def run(cmd: Sequence[str], *, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
        calls.append(list(cmd))
        for name, data in files.items():
            (Path(cwd) / name).write_bytes(data)
        return subprocess.CompletedProcess(list(cmd), rc, "", stderr)

    return run


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_cache_root_env_and_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AUDITOR_DATA_CACHE", str(tmp_path / "c"))
    assert fetch.cache_root() == tmp_path / "c"
    monkeypatch.delenv("AUDITOR_DATA_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert fetch.cache_root() == tmp_path / ".cache" / "auditor" / "data"


def test_pypi_download_then_reuse(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(fetch, "_run", _runner({"demo-1.0-py3-none-any.whl": _zip_bytes()},
                                               calls=calls))
    path = fetch.fetch_pypi("demo", "1.0", kind="wheel", cache=tmp_path)
    assert path == tmp_path / "pypi" / "demo-1.0-wheel" / "demo-1.0-py3-none-any.whl"
    assert zipfile.is_zipfile(path)
    assert "demo==1.0" in calls[0] and "--no-deps" in calls[0]
    assert "--only-binary=:all:" in calls[0]
    again = fetch.fetch_pypi("demo", "1.0", kind="wheel", cache=tmp_path)
    assert again == path
    assert len(calls) == 1, "a cached archive must not be downloaded again"
    assert not [p for p in (tmp_path / "pypi").iterdir() if p.name.startswith(".tmp-")]


def test_sdist_uses_no_binary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(fetch, "_run", _runner({"demo-1.0.tar.gz": _tgz_bytes()}, calls=calls))
    path = fetch.fetch_pypi("demo", "1.0", kind="sdist", cache=tmp_path)
    assert path.name == "demo-1.0.tar.gz"
    assert "--no-binary=:all:" in calls[0]


def test_bad_kind_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="kind"):
        fetch.fetch_pypi("demo", "1.0", kind="egg", cache=tmp_path)  # type: ignore[arg-type]


def test_registry_failure_names_package_registry_and_stderr(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[list[str]] = []
    stderr = "noise\n" * 500 + "ERROR: Could not find a version that satisfies demo==9.9"
    # the client leaves a half-written file behind before failing
    monkeypatch.setattr(fetch, "_run", _runner({"demo-9.9-py3-none-any.whl": b"PK\x03\x04"},
                                               rc=1, stderr=stderr, calls=calls))
    with pytest.raises(InputFileError) as info:
        fetch.fetch_pypi("demo", "9.9", kind="wheel", cache=tmp_path)
    msg = str(info.value)
    assert "demo==9.9" in msg and "PyPI" in msg and "registry unreachable?" in msg
    assert "Could not find a version" in msg
    assert len(msg) < 1500, "only the tail of stderr is quoted"
    assert _leftovers(tmp_path) == [], "no partial file may stay in the cache"


def test_npm_failure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(fetch, "_run", _runner({}, rc=1, stderr="npm ERR! code E404",
                                               calls=calls))
    with pytest.raises(InputFileError, match=r"@scope/thing@1\.2\.3 from npm.*E404"):
        fetch.fetch_npm("@scope/thing", "1.2.3", tmp_path)
    assert calls[0][:3] == ["npm", "pack", "@scope/thing@1.2.3"]
    assert _leftovers(tmp_path) == []


def test_debian_download_and_failure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(fetch, "_run", _runner({"hello_2.10-3_amd64.deb": b"!<arch>\nrest"},
                                               calls=calls))
    path = fetch.fetch_debian("hello", tmp_path)
    assert path == tmp_path / "debian" / "hello" / "hello_2.10-3_amd64.deb"
    assert calls[0][:2] == ["apt-get", "download"] and calls[0][-1] == "hello"

    monkeypatch.setattr(fetch, "_run", _runner({}, rc=100, stderr="E: Unable to locate "
                                               "package nosuch", calls=calls))
    with pytest.raises(InputFileError, match=r"nosuch from Debian.*Unable to locate"):
        fetch.fetch_debian("nosuch", tmp_path)


def test_corrupt_download_is_rejected(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[list[str]] = []
    truncated = _zip_bytes()[:20]
    monkeypatch.setattr(fetch, "_run", _runner({"demo-1.0-py3-none-any.whl": truncated},
                                               calls=calls))
    with pytest.raises(InputFileError, match="truncated or corrupt"):
        fetch.fetch_pypi("demo", "1.0", kind="wheel", cache=tmp_path)
    assert _leftovers(tmp_path) == []


def test_empty_download_is_rejected(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(fetch, "_run", _runner({}, calls=calls))
    with pytest.raises(InputFileError, match="produced nothing"):
        fetch.fetch_npm("thing", "1.0", tmp_path)
    monkeypatch.setattr(fetch, "_run", _runner({"thing-1.0.tgz": b""}, calls=calls))
    with pytest.raises(InputFileError, match="empty"):
        fetch.fetch_npm("thing", "1.0", tmp_path)
    assert _leftovers(tmp_path) == []


def test_timeout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def slow(cmd: Sequence[str], *, cwd: Path, timeout: float) -> None:
        (Path(cwd) / "thing-1.0.tgz").write_bytes(b"\x1f\x8b partial")
        raise subprocess.TimeoutExpired(list(cmd), timeout, stderr=b"fetching...")

    monkeypatch.setattr(fetch, "_run", slow)
    with pytest.raises(InputFileError, match=r"thing@1\.0 from npm timed out after 5 s"):
        fetch.fetch_npm("thing", "1.0", tmp_path, timeout=5)
    assert _leftovers(tmp_path) == []


def test_missing_client(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(fetch.shutil, "which", lambda name: None)
    monkeypatch.setattr(fetch, "_run", _runner({}, calls=[]))
    with pytest.raises(InputFileError, match="'npm' client is not installed"):
        fetch.fetch_npm("thing", "1.0", tmp_path)
    monkeypatch.setattr(fetch.shutil, "which", shutil.which)

    def missing(cmd: Sequence[str], *, cwd: Path, timeout: float) -> None:
        raise FileNotFoundError(2, "No such file or directory", cmd[0])

    monkeypatch.setattr(fetch, "_run", missing)
    with pytest.raises(InputFileError, match="'apt-get' client is not installed"):
        fetch.fetch_debian("hello", tmp_path)


def test_broken_cached_file_is_replaced(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    folder = tmp_path / "npm" / "thing-1.0"
    folder.mkdir(parents=True)
    (folder / "thing-1.0.tgz").write_bytes(b"\x1f\x8b garbage")
    calls: list[list[str]] = []
    monkeypatch.setattr(fetch, "_run", _runner({"thing-1.0.tgz": _tgz_bytes()}, calls=calls))
    path = fetch.fetch_npm("thing", "1.0", tmp_path)
    assert len(calls) == 1
    assert tarfile.is_tarfile(path)
    assert [p.name for p in folder.iterdir()] == ["thing-1.0.tgz"]
