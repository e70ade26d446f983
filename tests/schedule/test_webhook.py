"""Alerts: a run past its flagged-share or drift threshold marks itself ``alert`` and
POSTs its summary to the webhook (a real HTTP server on 127.0.0.1); a run below them posts
nothing; an unreachable webhook is recorded in the summary, not fatal."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from auditor.jobs.schedule import run_schedule
from tests.schedule.conftest import write_watched


class _Hook:
    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        received = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append({"type": self.headers["Content-Type"],
                                 "json": json.loads(body)})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()


@pytest.fixture
def hook() -> Iterator[_Hook]:
    h = _Hook()
    yield h
    h.server.shutdown()
    h.server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends


def test_alert_posts_the_summary_and_quiet_runs_post_nothing(
        make_spec: Any, hook: _Hook, tmp_path: Path) -> None:
    watch, out = tmp_path / "in", tmp_path / "out"
    # first snapshot: 10 % unsafe, under a 50 % flagged threshold: no alert, no post
    write_watched(watch / "a.jsonl", 10, unsafe=0.1, seed=1)
    quiet = run_schedule(make_spec(alert_flagged=0.5, alert_drift=0.5, webhook=hook.url))
    assert quiet.state == "done" and quiet.alert is False
    assert hook.posts == []
    summary = json.loads((out / quiet.snapshot / "summary.json").read_text())
    assert summary["alert"] is False and summary["webhook"] is None

    # second: all unsafe, flagged share and label drift past both thresholds
    write_watched(watch / "b.jsonl", 10, unsafe=1.0, seed=2)
    loud = run_schedule(make_spec(alert_flagged=0.5, alert_drift=0.5, webhook=hook.url))
    assert loud.alert is True
    assert any("flagged share" in r for r in loud.alert_reasons)
    assert any("safety label shares moved" in r for r in loud.alert_reasons)
    assert len(hook.posts) == 1
    post = hook.posts[0]
    assert post["type"] == "application/json"
    payload = post["json"]
    assert payload["alert"] is True and payload["schedule"] == "nightly"
    assert payload["snapshot"] == loud.snapshot.split("/")[1]
    assert payload["new_sources"][0]["source"] == "b.jsonl"
    assert payload["flagged"]["share"] >= 0.5
    recorded = json.loads((out / loud.snapshot / "summary.json").read_text())
    assert recorded["webhook"]["posted"] is True and recorded["webhook"]["status"] == 204
    html = (out / loud.snapshot / "report.html").read_text()
    assert "ALERT: flagged share" in html
    index = (out / "index.html").read_text()
    assert index.count('class="alert"') == 1


def test_an_unreachable_webhook_is_recorded_not_fatal(make_spec: Any, tmp_path: Path) -> None:
    write_watched(tmp_path / "in" / "a.jsonl", 6, unsafe=1.0, seed=3)
    url = f"http://127.0.0.1:{_closed_port()}/hook"
    result = run_schedule(make_spec(alert_flagged=0.1, webhook=url))
    assert result.state == "done" and result.alert is True
    summary = json.loads((tmp_path / "out" / result.snapshot / "summary.json").read_text())
    hook = summary["webhook"]
    assert hook["url"] == url and hook["posted"] is False and hook["error"]
    assert "not posted" in (tmp_path / "out" / result.snapshot / "report.md").read_text()
