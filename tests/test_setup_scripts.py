"""scripts/install_torch.sh (the torch step of scripts/setup.sh) and the apt-based installers
of scripts/test.sh, run for real with a stand-in for pip, apt-get and Chromium: nothing is
installed or downloaded."""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "install_torch.sh"


def _executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def python(tmp_path: Path) -> Path:
    """This interpreter, except that ``-m pip …`` is logged to ``pip.log`` (and fails when
    its call number is in ``$FAIL_PIP``) instead of run."""
    return _executable(tmp_path / "python", f"""#!/usr/bin/env bash
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then
  shift 2
  echo "$*" >> {tmp_path / "pip.log"}
  n=$(wc -l < {tmp_path / "pip.log"})
  case " ${{FAIL_PIP:-}} " in *" $n "*) exit 1;; esac
  exit 0
fi
exec {sys.executable} "$@"
""")


def _run(python: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], list[str], float]:
    started = time.perf_counter()
    done = subprocess.run(["bash", str(SCRIPT), str(python)], capture_output=True, text=True,
                          timeout=60, check=False, cwd=python.parent,
                          env={**os.environ, "AUDITOR_TORCH_VERSION": "9.9.9", **env})
    log = python.parent / "pip.log"
    calls = log.read_text().splitlines() if log.exists() else []
    return done, calls, time.perf_counter() - started


@pytest.fixture
def index(tmp_path: Path) -> Iterator[str]:
    """A wheel index that answers (an HTTP server over a directory holding ``torch/``)."""
    (tmp_path / "index" / "whl" / "torch").mkdir(parents=True)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a: Quiet(*a, directory=str(tmp_path / "index")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/whl"
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_cpu_index_is_asked_first(python: Path, index: str) -> None:
    done, calls, _ = _run(python, AUDITOR_TORCH_INDEX=index + "/")
    assert done.returncode == 0, done.stderr
    (call,) = calls
    assert f"--index-url {index}/ torch==9.9.9" in call and "--timeout 5" in call
    assert "installed torch" in done.stdout and "build)" in done.stdout


def test_an_unreachable_index_falls_back_to_the_plain_install_quickly(python: Path) -> None:
    done, calls, seconds = _run(
        python, AUDITOR_TORCH_INDEX=f"http://127.0.0.1:{_closed_port()}/whl/cpu")
    assert done.returncode == 0, done.stderr
    assert calls == ["install --quiet torch==9.9.9"]
    assert "cannot be reached" in done.stderr and "CUDA" in done.stderr
    assert seconds < 20


def test_a_silent_index_is_given_up_after_the_timeout(python: Path) -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        done, calls, seconds = _run(python, AUDITOR_TORCH_INDEX=f"http://127.0.0.1:{port}/cpu",
                                    AUDITOR_TORCH_TIMEOUT="1")
    assert done.returncode == 0, done.stderr
    assert calls == ["install --quiet torch==9.9.9"] and "within 1 s" in done.stderr
    assert seconds < 15


def test_an_index_without_the_wheel_falls_back(python: Path, index: str) -> None:
    done, calls, _ = _run(python, AUDITOR_TORCH_INDEX=index, FAIL_PIP="1")
    assert done.returncode == 0, done.stderr
    assert len(calls) == 2 and "--index-url" in calls[0]
    assert calls[1] == "install --quiet torch==9.9.9"


def test_pypi_skips_the_index_and_an_installed_torch_skips_everything(python: Path) -> None:
    done, calls, _ = _run(python, AUDITOR_TORCH_INDEX="pypi")
    assert (done.returncode, calls, done.stderr) == (0, ["install --quiet torch==9.9.9"], "")
    import torch

    (python.parent / "pip.log").unlink()
    done, calls, _ = _run(python, AUDITOR_TORCH_VERSION=torch.__version__.split("+")[0])
    assert done.returncode == 0 and calls == [] and "already installed" in done.stdout


# ----------------------------------------------------------------------------- apt-get


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    """A PATH with the few programs the installers use, and no apt-get, sudo or Chromium."""
    path = tmp_path / "bin"
    path.mkdir()
    for tool in ("dirname", "id", "env", "mktemp", "tail", "rm", "cat"):
        found = shutil.which(tool)
        assert found is not None
        (path / tool).symlink_to(found)
    return path


def _install_chromium(bin_dir: Path, chromium: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/bash", str(REPO / "scripts" / "install_chromium.sh")],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={"PATH": str(bin_dir), "AUDITOR_CHROMIUM": str(chromium)})


def test_without_apt_get_chromium_is_skipped_with_a_message(bin_dir: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    done = _install_chromium(bin_dir, tmp_path / "chromium")
    assert done.returncode == 0
    assert "skipped: apt-get is not available" in done.stderr
    assert "test_report_browser.py) is skipped" in done.stderr
    # ... and the browser test skips, saying why, instead of failing
    from tests.report import test_report_browser as browser

    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(browser, "CHROMIUM", str(tmp_path / "chromium"))
    assert not browser.apt_can_run()
    with pytest.raises(pytest.skip.Exception, match="apt-get cannot install it here"):
        browser._chromium()


@pytest.mark.parametrize("works", [True, False], ids=["installs", "apt-get fails"])
def test_chromium_is_installed_with_apt_get(bin_dir: Path, tmp_path: Path,
                                            works: bool) -> None:
    chromium = tmp_path / "chromium"
    log = tmp_path / "apt.log"
    _executable(bin_dir / "sudo", '#!/bin/bash\n[ "$1" = -n ] && shift\nexec "$@"\n')
    _executable(bin_dir / "apt-get", f"""#!/bin/bash
echo "$*" >> {log}
if [ "$1" = install ]; then
  {'' if works else 'echo "E: Unable to locate package chromium" >&2; exit 100'}
  printf '#!/bin/bash\\necho Chromium 1.0\\n' > {chromium}; /bin/chmod +x {chromium}
fi
""")
    done = _install_chromium(bin_dir, chromium)
    assert done.returncode == 0
    assert log.read_text().splitlines() == [
        "update -qq", "install -y -qq --no-install-recommends chromium fonts-dejavu-core"]
    if works:
        assert "ready: Chromium 1.0" in done.stdout
    else:
        assert "apt-get could not install chromium" in done.stderr
        assert "Unable to locate package" in done.stderr and "will fail" in done.stderr
    assert _install_chromium(bin_dir, Path("/bin/true")).stdout == ""  # present: nothing
