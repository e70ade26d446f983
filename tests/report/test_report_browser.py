"""The HTML report in a real browser: headless Chromium renders it without console errors.

Chromium (Debian package ``chromium``; ``$AUDITOR_CHROMIUM`` names another) is driven over
the DevTools protocol on ``--remote-debugging-pipe`` with the standard library only. When
Chromium is missing the test fails with a clear message where ``scripts/install_chromium.sh``
could have installed it (apt-get runs here: root, or sudo without a password), and is
skipped, saying why, where it could not.

A control page (the same report with an inline script, which the report's
Content-Security-Policy forbids) checks that the console-error detection works. The full-page
screenshot is written under pytest's ``tmp_path`` and its path printed.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from auditor.report import build_report, render_html
from auditor.report.charts import chart_titles
from tests.report.test_report import (
    IDS_A,
    IDS_B,
    ROWS_A,
    ROWS_B,
    make_store,
    synthetic_predictions,
    write_texts,
)

CHROMIUM = os.environ.get("AUDITOR_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1280,2000",
         "--remote-debugging-pipe"]
TIMEOUT = 60.0


def apt_can_run() -> bool:
    """Whether ``scripts/install_chromium.sh`` can install packages here: apt-get, as root
    or through sudo without a password (``apt_can_run`` of ``scripts/_apt.sh``)."""
    if shutil.which("apt-get") is None:
        return False
    if os.geteuid() == 0:
        return True
    return shutil.which("sudo") is not None and subprocess.run(
        ["sudo", "-n", "true"], capture_output=True, check=False, timeout=30).returncode == 0


def _chromium() -> str:
    exe = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if exe is None:
        if not apt_can_run():
            pytest.skip(f"headless Chromium is not installed ({CHROMIUM}) and apt-get cannot "
                        "install it here (no apt-get, or neither root nor sudo without a "
                        "password): install Chromium, or name it with $AUDITOR_CHROMIUM")
        pytest.fail(f"headless Chromium is not installed (expected {CHROMIUM}): run "
                    "'bash scripts/install_chromium.sh' (apt-get install chromium) first",
                    pytrace=False)
    return exe


class DevTools:
    """A minimal DevTools-protocol client over Chromium's ``--remote-debugging-pipe``."""

    def __init__(self, exe: str, profile: Path, log: Path) -> None:
        to_chrome_r, to_chrome_w = os.pipe()
        from_chrome_r, from_chrome_w = os.pipe()
        # Chromium reads commands on fd 3 and writes replies on fd 4: move the child's ends
        # to high numbers first so that bash's 3<&N 4>&M cannot clobber each other.
        child_in = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 20)
        child_out = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 20)
        for fd in (to_chrome_r, from_chrome_w):
            os.close(fd)
        os.set_inheritable(child_in, True)
        os.set_inheritable(child_out, True)
        script = f'exec "$0" "$@" 3<&{child_in} 4>&{child_out} {child_in}<&- {child_out}>&-'
        bash = shutil.which("bash") or "/bin/bash"  # dash only redirects fds 0-9
        self.log = log
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(
                [bash, "-c", script, exe, *FLAGS, f"--user-data-dir={profile}"],
                pass_fds=(child_in, child_out), stdin=subprocess.DEVNULL,
                stdout=err, stderr=err)
        os.close(child_in)
        os.close(child_out)
        self._w = to_chrome_w
        self._r = from_chrome_r
        self._buf = b""
        self._next = 0
        self.events: list[dict[str, Any]] = []

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from Chromium")
            ready, _, _ = select.select([self._r], [], [], left)
            if not ready:
                continue
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"Chromium closed the pipe (exit {self.proc.poll()}):\n{tail}")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def send(self, method: str, params: dict[str, Any] | None = None, *,
             session: str | None = None, timeout: float = TIMEOUT) -> dict[str, Any]:
        self._next += 1
        msg: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session is not None:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            self.events.append(reply)

    def wait_for(self, method: str, *, session: str, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        seen = len(self.events)
        while True:
            for event in self.events[seen:]:
                if event.get("method") == method and event.get("sessionId") == session:
                    return
            seen = len(self.events)
            self.events.append(self._read_message(deadline))

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.send("Browser.close", timeout=10)
        except (OSError, RuntimeError, TimeoutError):
            pass
        finally:
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # only the browser this test started
                self.proc.wait(timeout=15)
            for fd in (self._w, self._r):
                try:
                    os.close(fd)
                except OSError:
                    pass


def _errors(events: list[dict[str, Any]], session: str) -> list[str]:
    """Console errors, uncaught exceptions and error log entries of one page session."""
    out = []
    for e in events:
        if e.get("sessionId") != session:
            continue
        method, params = e.get("method"), e.get("params", {})
        if method == "Runtime.exceptionThrown":
            out.append(f"uncaught: {params['exceptionDetails'].get('text')} "
                       f"{params['exceptionDetails'].get('exception', {}).get('description', '')}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            out.append(f"console.{params['type']}: "
                       + " ".join(str(a.get("value", a.get("description"))) for a in
                                  params.get("args", [])))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            out.append(f"log ({params['entry'].get('source')}): {params['entry'].get('text')}")
    return out


def _requests(events: list[dict[str, Any]], session: str) -> list[str]:
    return [e["params"]["request"]["url"] for e in events
            if e.get("sessionId") == session and e.get("method") == "Network.requestWillBeSent"]


def _open(cdp: DevTools, url: str) -> str:
    target = cdp.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        cdp.send(f"{domain}.enable", session=session)
    cdp.send("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 2000,
                                                    "deviceScaleFactor": 1, "mobile": False},
             session=session)
    cdp.send("Page.navigate", {"url": url}, session=session)
    cdp.wait_for("Page.loadEventFired", session=session)
    return session


def _eval(cdp: DevTools, session: str, expression: str) -> Any:
    result = cdp.send("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                      session=session)
    return result["result"].get("value")


@pytest.fixture(scope="module")
def report_html(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A report with every section: 3 heads, flagged documents, texts, drift."""
    base = tmp_path_factory.mktemp("browser")
    previous = build_report(make_store(base / "a", ROWS_A, ids=IDS_A),
                            predictions=synthetic_predictions(IDS_A, seed=1))
    store = make_store(base / "b", ROWS_B, ids=IDS_B, n_tokens=[3, 9, 12, 7])
    texts = write_texts(base / "texts.jsonl", [
        ("e", "An <script>alert(1)</script> attempt, shown as text."),
        ("f", "Rain is expected tomorrow morning, with clearing skies by noon."),
        ("g", "rain is expected tomorrow morning with clearing skies by noon"),
        ("h", "Children played football in the park until it got dark."),
        ("z", ""),
    ])
    report = build_report(store, predictions=synthetic_predictions(IDS_B, seed=2), texts=texts,
                          id_column="id", previous=previous, title="Browser check report",
                          feature_labels={0: "fox <script>alert(1)</script>", 1: "rain <b>",
                                          3: "$price$ {x}"},
                          feature_examples={1: ["It will rain", "wet weather"]})
    path = base / "report.html"
    path.write_text(render_html(report), encoding="utf-8")
    return path, report


def test_report_renders_in_headless_chromium(report_html: tuple[Path, dict[str, Any]],
                                             tmp_path: Path) -> None:
    exe = _chromium()
    path, report = report_html
    charts = chart_titles(report)
    # tokens, active features; labels + scores for 3 heads; drift labels for 3 heads + features
    assert len(charts) == 2 + 3 * 2 + 3 + 1
    control = tmp_path / "control.html"
    control.write_text(path.read_text().replace("</body>", "<script>1</script></body>"))
    profile = tmp_path / "profile"
    profile.mkdir()

    cdp = DevTools(exe, profile, tmp_path / "chromium.log")
    try:
        version = cdp.send("Browser.getVersion")
        session = _open(cdp, path.as_uri())
        title = _eval(cdp, session, "document.title")
        h1 = _eval(cdp, session, "document.querySelector('h1').textContent")
        svgs = _eval(cdp, session, "document.querySelectorAll('svg').length")
        sizes = _eval(cdp, session, "[...document.querySelectorAll('figure.chart svg')]"
                                    ".map(s => [s.getBoundingClientRect().width, "
                                    "s.getBoundingClientRect().height])")
        dom = _eval(cdp, session, "document.documentElement.outerHTML")
        scripts = _eval(cdp, session, "document.scripts.length")
        height = _eval(cdp, session, "document.documentElement.scrollHeight")
        cdp.send("Emulation.setDeviceMetricsOverride",
                 {"width": 1280, "height": min(int(height), 16000), "deviceScaleFactor": 1,
                  "mobile": False}, session=session)
        shot = cdp.send("Page.captureScreenshot", {"format": "png"}, session=session)
        errors = _errors(cdp.events, session)
        requests = _requests(cdp.events, session)

        control_session = _open(cdp, control.as_uri())
        control_errors = _errors(cdp.events, control_session)
    finally:
        cdp.close()

    screenshot = tmp_path / "report.png"
    screenshot.write_bytes(base64.b64decode(shot["data"]))
    print(f"\n{version.get('product')}: screenshot of the report at {screenshot}")

    assert title == h1 == "Browser check report"
    assert svgs == dom.count("<svg") == len(charts)
    assert len(sizes) == len(charts) and all(w > 200 and h > 80 for w, h in sizes), sizes
    assert scripts == 0
    assert "fox &lt;script&gt;alert(1)&lt;/script&gt;" in dom  # a label's markup stays text
    assert "Drift against the previous report" in dom and "Flagged documents" in dom
    assert errors == [], errors
    assert all(u.startswith("file://") for u in requests), requests
    # the detector works: the CSP refuses the control page's inline script, an error
    assert any("Content Security Policy" in e for e in control_errors), control_errors
    assert screenshot.stat().st_size > 20_000 and height > 2000
