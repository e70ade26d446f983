"""GGUF conversion cache: error paths, markers, rebuilds and cross-process locking.

The heavy transformers conversion is replaced by a tiny converter passed through the
private ``_converter`` parameter; the cache, lock and marker logic under test is real.
The real conversion of the default model is tested in ``tests/test_defaults.py``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import pytest

from auditor.errors import ModelLoadError
from auditor.lm import gguf as gguf_mod
from auditor.lm.gguf import (
    COMPLETE_MARKER,
    convert_gguf,
    converted_dirs,
    gguf_sha256,
    is_gguf_file,
    read_marker,
)


def _fake_gguf(path: Path, payload: bytes = b"fake weights") -> Path:
    path.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + payload)
    return path


def fake_converter(gguf_file: Path, out_dir: Path, progress: bool) -> None:
    """Stand-in for the transformers conversion: logs each run and, when the two-process
    test asks for it, holds the lock until every child has started (with a deadline)."""
    del progress
    log = Path(os.environ["AUDITOR_TEST_CONVERT_LOG"])
    with log.open("a", encoding="utf-8") as handle:
        handle.write(f"{os.getpid()}\n")
    started = os.environ.get("AUDITOR_TEST_STARTED")
    if started:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(_runs(Path(started))) < 2:
            time.sleep(0.01)  # poll the condition; the deadline bounds a broken run
    (out_dir / "config.json").write_text(json.dumps({"source": gguf_file.name}))
    (out_dir / "model.safetensors").write_bytes(b"\0" * 64)


def failing_converter(gguf_file: Path, out_dir: Path, progress: bool) -> None:
    del gguf_file, progress
    (out_dir / "partial").write_bytes(b"x")
    raise RuntimeError("conversion crashed")


def _convert_in_child(gguf_file: str, cache_root: str, out: str, barrier: Any) -> None:
    barrier.wait(timeout=60)  # both children reach the call together
    with open(os.environ["AUDITOR_TEST_STARTED"], "a", encoding="utf-8") as handle:
        handle.write(f"{os.getpid()}\n")  # the converter waits for both of these
    result = convert_gguf(gguf_file, cache_root=Path(cache_root), _converter=fake_converter)
    Path(out).write_text(str(result), encoding="utf-8")


@pytest.fixture
def convert_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "convert.log"
    monkeypatch.setenv("AUDITOR_TEST_CONVERT_LOG", str(log))
    return log


def _runs(log: Path) -> list[str]:
    return log.read_text(encoding="utf-8").split() if log.exists() else []


# --------------------------------------------------------------------------- errors
def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelLoadError, match="does not exist") as info:
        convert_gguf(missing, cache_root=tmp_path / "cache")
    assert info.value.path == str(missing)
    assert str(missing) in str(info.value)


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="directory"):
        convert_gguf(tmp_path, cache_root=tmp_path / "cache")


def test_non_gguf_file_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"PK\x03\x04 this is a zip, not a gguf")
    assert not is_gguf_file(bogus)
    with pytest.raises(ModelLoadError, match="not a GGUF file") as info:
        convert_gguf(bogus, cache_root=tmp_path / "cache")
    assert info.value.path == str(bogus)
    assert not (tmp_path / "cache" / "models").exists()


def test_missing_dependencies_say_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_find_spec = gguf_mod.importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        return None if name == "gguf" else real_find_spec(name)

    monkeypatch.setattr(gguf_mod.importlib.util, "find_spec", find_spec)
    source = _fake_gguf(tmp_path / "m.gguf")
    with pytest.raises(ModelLoadError, match="pip install gguf accelerate"):
        convert_gguf(source, cache_root=tmp_path / "cache")


# --------------------------------------------------------------------------- cache
def test_converts_once_then_reuses(tmp_path: Path, convert_log: Path) -> None:
    source = _fake_gguf(tmp_path / "m.gguf")
    root = tmp_path / "cache"
    first = convert_gguf(source, cache_root=root, _converter=fake_converter, progress=False)
    second = convert_gguf(source, cache_root=root, _converter=fake_converter, progress=False)
    assert first == second == root / "models" / gguf_sha256(source, cache_root=root)[:16]
    assert len(_runs(convert_log)) == 1
    assert (first / "config.json").is_file()
    marker = read_marker(first)
    assert marker is not None
    assert marker["source_sha256"] == gguf_sha256(source, cache_root=root)
    assert marker["transformers_version"]
    assert marker["created"]
    assert converted_dirs(cache_root=root) == [first]
    # No temporary directories are left behind.
    assert sorted(p.name for p in (root / "models").iterdir()) == [first.name, f"{first.name}.lock"]


def test_one_time_message_on_stderr(
    tmp_path: Path, convert_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _fake_gguf(tmp_path / "m.gguf")
    convert_gguf(source, cache_root=tmp_path / "c", _converter=fake_converter)
    assert "one-time" in capsys.readouterr().err
    convert_gguf(source, cache_root=tmp_path / "c", _converter=fake_converter)
    assert capsys.readouterr().err == ""


def test_dir_without_marker_is_rebuilt(tmp_path: Path, convert_log: Path) -> None:
    source = _fake_gguf(tmp_path / "m.gguf")
    root = tmp_path / "cache"
    target = convert_gguf(source, cache_root=root, _converter=fake_converter, progress=False)
    (target / COMPLETE_MARKER).unlink()
    (target / "leftover.bin").write_bytes(b"half-written")
    assert converted_dirs(cache_root=root) == []
    again = convert_gguf(source, cache_root=root, _converter=fake_converter, progress=False)
    assert again == target
    assert len(_runs(convert_log)) == 2
    assert not (target / "leftover.bin").exists()
    assert read_marker(target) is not None


def test_marker_of_another_source_is_rebuilt(tmp_path: Path, convert_log: Path) -> None:
    source = _fake_gguf(tmp_path / "m.gguf")
    root = tmp_path / "cache"
    target = convert_gguf(source, cache_root=root, _converter=fake_converter, progress=False)
    marker = json.loads((target / COMPLETE_MARKER).read_text())
    (target / COMPLETE_MARKER).write_text(json.dumps({**marker, "source_sha256": "0" * 64}))
    convert_gguf(source, cache_root=root, _converter=fake_converter, progress=False)
    assert len(_runs(convert_log)) == 2


def test_failed_conversion_leaves_nothing(tmp_path: Path) -> None:
    source = _fake_gguf(tmp_path / "m.gguf")
    root = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="crashed"):
        convert_gguf(source, cache_root=root, _converter=failing_converter, progress=False)
    assert [p.name for p in (root / "models").iterdir() if not p.name.endswith(".lock")] == []


def test_sha256_is_cached_by_path_size_and_mtime(tmp_path: Path) -> None:
    import hashlib

    source = _fake_gguf(tmp_path / "m.gguf")
    root = tmp_path / "cache"
    digest = gguf_sha256(source, cache_root=root)
    assert digest == hashlib.sha256(source.read_bytes()).hexdigest()
    sidecars = list((root / "hashes").glob("*.json"))
    assert len(sidecars) == 1
    # Same path, size and mtime: the sidecar is trusted (proved by planting another value).
    record = json.loads(sidecars[0].read_text())
    sidecars[0].write_text(json.dumps({**record, "sha256": "a" * 64}))
    assert gguf_sha256(source, cache_root=root) == "a" * 64
    # Different content (and mtime): re-hashed.
    _fake_gguf(source, b"other weights!")
    os.utime(source, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert gguf_sha256(source, cache_root=root) == hashlib.sha256(source.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- processes
def test_two_processes_convert_once(
    tmp_path: Path, convert_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUDITOR_TEST_STARTED", str(tmp_path / "started.log"))
    source = _fake_gguf(tmp_path / "m.gguf")
    root = tmp_path / "cache"
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    outs = [tmp_path / f"result{i}.txt" for i in range(2)]
    children = [
        context.Process(target=_convert_in_child, args=(str(source), str(root), str(out), barrier))
        for out in outs
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=120)
    assert [child.exitcode for child in children] == [0, 0]
    paths = [out.read_text(encoding="utf-8") for out in outs]
    assert paths[0] == paths[1]
    target = Path(paths[0])
    assert len(_runs(convert_log)) == 1
    assert read_marker(target) is not None
    assert sorted(p.name for p in target.iterdir()) == [
        COMPLETE_MARKER,
        "config.json",
        "model.safetensors",
    ]
