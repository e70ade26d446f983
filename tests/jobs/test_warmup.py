"""The warmup job: the default model's one-time conversion as a recorded job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from auditor import defaults
from auditor.cancel import CancelToken
from auditor.cli import main
from auditor.errors import JobCancelled
from auditor.jobs import read_job
from auditor.jobs import warmup as jobs
from auditor.lm import gguf


def test_warmup_converts_once_and_records_it(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"GGUF fake")
    calls: list[Path | None] = []

    def convert(*, progress: bool = True, cache_root: Path | None = None) -> Path:
        calls.append(cache_root)
        target = Path(cache_root or tmp_path) / "models" / "converted"
        target.mkdir(parents=True, exist_ok=True)
        return target

    monkeypatch.setattr(defaults, "default_gguf", lambda: fake)
    monkeypatch.setattr(defaults, "default_model_dir", convert)
    monkeypatch.setattr(gguf, "gguf_sha256", lambda path, cache_root=None: "ab" * 32)
    out = tmp_path / "cache"
    token = CancelToken()
    token.cancel()
    with pytest.raises(JobCancelled):
        jobs.run_warmup(out=out, cancel=token)
    assert calls == []
    events: list[Any] = []
    result = jobs.run_warmup(out=out, progress=events.append)
    assert calls == [out] and result.model_dir == str(out / "models" / "converted")
    assert [(e.stage, e.done, e.total, e.final) for e in events][-1] == ("convert", 1, 1, True)
    assert jobs.WarmupResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    assert jobs.run_warmup(out=out) == result and calls == [out]  # recorded: not again
    assert read_job(out)["verb"] == "warmup"  # type: ignore[index]


def test_cli_models_warmup_calls_the_job(monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(jobs, "run_warmup", lambda **kw: jobs.WarmupResult(
        model_dir="/cache/models/x", gguf_sha256="00"))
    assert main(["models", "warmup"]) == 0
    assert "default model ready: /cache/models/x" in capsys.readouterr().out
