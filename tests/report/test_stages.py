"""The report's stages one by one (what the report job resumes between): the same report as
:func:`build_report`, inputs left untouched, cancel tokens and progress stages."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from auditor.cancel import CancelToken
from auditor.errors import JobCancelled
from auditor.progress import Progress, ProgressEvent
from auditor.report import (
    NearDuplicateFinder,
    add_drift,
    add_texts,
    build_report,
    build_statistics,
    store_doc_ids,
    write_report,
)
from tests.report.test_report import (
    IDS_A,
    IDS_B,
    LABELS_A,
    LABELS_B,
    LONG,
    ROWS_A,
    ROWS_B,
    hand_predictions,
    make_store,
    write_texts,
)


def test_the_stages_compose_to_build_report(tmp_path: Path) -> None:
    store = make_store(tmp_path / "a", ROWS_A, ids=IDS_A)
    previous = build_report(make_store(tmp_path / "b", ROWS_B, ids=IDS_B),
                            predictions=hand_predictions(LABELS_B), generated_at="t0")
    texts = write_texts(tmp_path / "t.jsonl", [("a", LONG), ("b", LONG + " again"),
                                               ("c", "short text"), ("d", "")])
    labels = {0: "zero", 3: "three"}
    whole = build_report(store, predictions=hand_predictions(LABELS_A), texts=texts,
                         previous=previous, feature_labels=labels, id_column="id",
                         generated_at="t1")
    assert store_doc_ids(store) == IDS_A
    events: list[ProgressEvent] = []
    progress = Progress(events.append, job="report", interval=0.0)
    with progress.stage("statistics") as stage:
        first = build_statistics(store, predictions=hand_predictions(LABELS_A),
                                 feature_labels=labels, generated_at="t1", stage=stage)
    assert first["texts"] is None and first["drift"] is None
    kept = copy.deepcopy(first)
    with progress.stage("texts") as stage:
        second = add_texts(first, texts, store_ids=IDS_A, id_column="id", stage=stage)
    third = add_drift(second, previous, feature_labels=labels)
    assert first == kept  # each stage returns a new report
    assert third == whole
    assert [(e.stage, e.done, e.total) for e in events if e.final] == [
        ("statistics", 3, 3), ("texts", 3, 3)]  # the empty text is a bad row
    assert [e for e in events if e.stage == "texts"][-1].counters["bad_rows"] == 1


def test_texts_and_near_duplicates_check_the_cancel_token(tmp_path: Path) -> None:
    store = make_store(tmp_path / "a", ROWS_A, ids=IDS_A)
    report = build_statistics(store)
    many = write_texts(tmp_path / "t.jsonl",
                       [(f"x{i}", f"document number {i} of many") for i in range(300)])
    token = CancelToken()
    token.cancel()
    with pytest.raises(JobCancelled, match="text 256"):
        add_texts(report, many, store_ids=IDS_A, id_column="id", cancel=token)

    finder = NearDuplicateFinder()
    for i in range(3):
        finder.add(f"d{i}", LONG + f" number {i}")
    with pytest.raises(JobCancelled, match="near-duplicate band 0"):
        finder.groups(cancel=token)
    fresh = NearDuplicateFinder()
    for i in range(3):
        fresh.add(f"d{i}", LONG + f" number {i}")
    assert finder.summary() == fresh.summary()  # a cancelled search can be run again


def test_write_report_advances_a_stage_per_file(tmp_path: Path) -> None:
    report = build_report(make_store(tmp_path / "a", ROWS_A, ids=IDS_A),
                          predictions=hand_predictions(LABELS_A))
    events: list[ProgressEvent] = []
    with Progress(events.append, job="report", interval=0.0).stage("render") as stage:
        written = write_report(report, tmp_path / "out", stage=stage)
    charts = len(list((tmp_path / "out" / "charts").glob("*.svg")))
    assert charts > 0 and set(written) == {"html", "json", "md", "charts"}
    assert [e.done for e in events] == [*range(1, charts + 4), charts + 3]
    assert events[-1].final and events[-1].total == charts + 3
