"""The filter job on files, without a model: kept + dropped = input exactly in every
format, reasons on every drop, shards, resume (also of deduplication across shards),
errors that lose nothing, and the memory bound."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from auditor.cancel import CancelToken
from auditor.errors import ColumnError, ConfigError, InputFileError, JobCancelled, JobConflict
from auditor.jobs.extract import ExtractOptions
from auditor.jobs.filter import FilterOptions, run_filter

PIPELINE = ({"type": "length", "min_chars": 12}, {"type": "dedup"})
KEEP = "lang != 'de' and score >= 2"


def _rows(n: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        text = f"document number {i} talks about item {i % 7}" if i % 5 else "short"
        if i % 11 == 3:
            text = "A repeated line, the same in many rows."
        rows.append({"id": f"r{i}", "text": text, "lang": "de" if i % 4 == 1 else "en",
                     "score": i % 6, "tags": [f"t{i % 3}"], "meta": {"i": i}})
    return rows


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".parquet":
        pl.DataFrame(rows).write_parquet(path)
    else:
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "text", "lang", "score"])
            for r in rows:
                w.writerow([r["id"], r["text"], r["lang"], r["score"]])
    return path


def _read(paths: list[Path], fmt: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in paths:
        if fmt == "jsonl":
            out += [json.loads(line) for line in p.read_text().splitlines()]
        elif fmt == "parquet":
            out += pl.read_parquet(p).to_dicts()
        else:
            with open(p, newline="") as f:
                out += list(csv.DictReader(f))
    return out


def _options(**kw: Any) -> FilterOptions:
    base: dict[str, Any] = {"steps": PIPELINE, "keep": None, "shard_rows": 20,
                            "batch_rows": 7, "extract": ExtractOptions(id_column="id")}
    base.update(kw)
    return FilterOptions(**base)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".csv"])
def test_kept_plus_dropped_is_the_input_with_every_column(tmp_path: Path, suffix: str
                                                          ) -> None:
    rows = _rows(53)
    data = _write(tmp_path / f"in{suffix}", rows)
    keep = "lang != 'de'" if suffix == ".csv" else KEEP  # CSV values are strings
    result = run_filter(data, out=tmp_path / "out", options=_options(keep=keep))
    fmt = suffix[1:]
    assert len(result.kept) == len(result.dropped) == 3  # 53 rows / 20 per shard
    kept = _read([tmp_path / "out" / p for p in result.kept], fmt)
    dropped = _read([tmp_path / "out" / p for p in result.dropped], fmt)
    assert all(isinstance(d["reason"], str if fmt != "jsonl" else dict) for d in dropped)
    reasons = [d.pop("reason") for d in dropped]
    reasons = [json.loads(r) if isinstance(r, str) else r for r in reasons]
    seen: set[str] = set()
    expected = {}  # each row's first failing step, computed here independently
    for r in (_read([data], fmt) if fmt == "csv" else rows):
        if len(r["text"]) < 12:
            expected[r["id"]] = "length chars >= 12"
        elif r["text"] in seen:
            expected[r["id"]] = "exact duplicates"
        else:
            seen.add(r["text"])
            if r["lang"] == "de" or (fmt != "csv" and r["score"] < 2):
                expected[r["id"]] = f"keep {keep}"
    assert {d["id"]: r["step"] for d, r in zip(dropped, reasons, strict=True)} == expected
    if fmt != "csv":
        lang = next(r for d, r in zip(dropped, reasons, strict=True) if d["lang"] == "de"
                    and d["score"] >= 2 and r["kind"] == "keep")
        assert lang["rule"] == "lang != 'de'" and lang["value"] == {"lang": "de"}
    original = _read([data], fmt) if fmt == "csv" else rows
    assert len(kept) + len(dropped) == len(original) == result.documents
    # each side keeps input order, and together they are the input, row for row
    order = {r["id"]: i for i, r in enumerate(original)}
    assert [order[r["id"]] for r in kept] == sorted(order[r["id"]] for r in kept)
    assert sorted(kept + dropped, key=lambda r: order[r["id"]]) == original
    summary = json.loads((tmp_path / "out" / "filter.json").read_text())
    assert summary["kept"] == len(kept) == result.kept_documents
    assert sum(summary["dropped_by_step"].values()) == len(dropped)
    assert summary["dropped_by_step"]["length chars >= 12"] == sum(
        1 for r in original if len(r["text"]) < 12)
    assert summary["dropped_by_step"]["exact duplicates"] == sum(
        1 for r in original if r["text"].startswith("A repeated")) - 1
    for fmt_ in ("html", "json", "md"):
        assert (tmp_path / "out" / f"report.{fmt_}").is_file()
    assert "exact duplicates" in (tmp_path / "out" / "report.html").read_text()


def test_jsonl_lines_are_kept_byte_for_byte(tmp_path: Path) -> None:
    lines = ['{"text":"kept exactly as written",  "x":1.50}',
             '{"z": [1, {"a": null}], "text": "another kept line ok"}']
    data = tmp_path / "in.jsonl"
    data.write_text("\n".join(lines) + "\n\n")
    result = run_filter(data, out=tmp_path / "o", options=_options(extract=ExtractOptions()))
    assert (tmp_path / "o" / result.kept[0]).read_text() == "\n".join(lines) + "\n"


def test_resume_after_cancel_equals_a_straight_run(tmp_path: Path) -> None:
    data = _write(tmp_path / "in.jsonl", _rows(80))
    straight = run_filter(data, out=tmp_path / "a", options=_options(keep=KEEP))
    checks = {"n": 0}

    def poll() -> bool:  # cancelled at the 8th batch (rows 49-55): in shard 2
        checks["n"] += 1
        return checks["n"] > 7

    with pytest.raises(JobCancelled):
        run_filter(data, out=tmp_path / "b", options=_options(keep=KEEP),
                   cancel=CancelToken(poll, poll_interval=0))
    done = sorted(p.name for p in (tmp_path / "b" / "_stages").glob("shard-*.json"))
    assert done == ["shard-00000.json", "shard-00001.json"]  # committed before the cancel
    assert not list((tmp_path / "b" / "kept").glob(".*"))  # no temporary part left
    resumed = run_filter(data, out=tmp_path / "b", options=_options(keep=KEEP))
    assert resumed.to_dict() == straight.to_dict()
    for rel in (*straight.kept, *straight.dropped, "filter.json"):
        a = (tmp_path / "a" / rel).read_bytes()
        b = (tmp_path / "b" / rel).read_bytes()
        assert a == b or (rel == "filter.json" and json.loads(a) == json.loads(b)), rel


def test_a_malformed_row_is_named_and_finished_shards_stay(tmp_path: Path) -> None:
    rows = [json.dumps(r) for r in _rows(30)]
    rows[25] = '{"id": "r25", "text": broken'
    data = tmp_path / "in.jsonl"
    data.write_text("\n".join(rows) + "\n")
    with pytest.raises(InputFileError, match=r"in.jsonl.*row 25 \(line 26\): malformed JSON"):
        run_filter(data, out=tmp_path / "o", options=_options())
    assert (tmp_path / "o" / "kept" / "part-00000.jsonl").is_file()
    assert not (tmp_path / "o" / "kept" / "part-00001.jsonl").exists()
    rows[25] = json.dumps(_rows(30)[25])
    data.write_text("\n".join(rows) + "\n")
    with pytest.raises(JobConflict):  # another input: the partial output is not mixed in
        run_filter(data, out=tmp_path / "o", options=_options())
    result = run_filter(data, out=tmp_path / "o", options=_options(overwrite=True))
    assert result.documents == 30


def test_bad_inputs_and_options_are_named(tmp_path: Path) -> None:
    data = _write(tmp_path / "in.jsonl", _rows(5))
    with pytest.raises(ColumnError, match="no text column 'body'"):
        run_filter(data, out=tmp_path / "o", options=_options(
            extract=ExtractOptions(text_column="body")))
    with pytest.raises(ConfigError, match=r"'lnag'.*did you mean lang"):
        run_filter(data, out=tmp_path / "o", options=_options(keep="lnag == 'de'"))
    with pytest.raises(ConfigError, match="already has a column 'lang'"):
        run_filter(data, out=tmp_path / "o", options=_options(reason_column="lang"))
    with pytest.raises(ConfigError, match="neither a column of the input nor an installed "
                                          "head"):
        run_filter(data, out=tmp_path / "o", options=_options(keep="toxicity.p.bad < 0.5"))
    with pytest.raises(InputFileError, match="the filter reads JSONL"):
        run_filter(tmp_path, out=tmp_path / "o", options=_options())
    with pytest.raises(ConfigError, match="keep expression or pipeline steps"):
        run_filter(data, out=tmp_path / "o", options=FilterOptions())
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"text": "ok fine words here"}\n{"text": "\xff\xfe"}\n')
    with pytest.raises(InputFileError, match=r"row 1 .*invalid UTF-8"):
        run_filter(bad, out=tmp_path / "o2", options=_options(extract=ExtractOptions()))
    assert not (tmp_path / "o" / "_job.json").exists()  # refusals leave no record


def test_streaming_memory_is_bounded_by_the_batch_not_the_input(tmp_path: Path) -> None:
    """A ~150 MB input through a length + dedup pipeline in a child process: its peak RSS
    grows by far less than the input (reading it whole would add at least its size)."""
    data = tmp_path / "big.jsonl"
    line = "word " * 300
    with open(data, "w") as f:
        for i in range(100_000):
            f.write(json.dumps({"id": i, "text": f"{i} {line}", "pad": "x" * 10}) + "\n")
    size = data.stat().st_size
    assert size > 150e6
    script = textwrap.dedent(f"""
        import resource, json
        from auditor.jobs.filter import FilterOptions, run_filter
        from auditor.jobs.extract import ExtractOptions
        opts = FilterOptions(steps=({{"type": "length", "min_chars": 10}}, {{"type": "dedup"}}),
                             shard_rows=20000, batch_rows=500, formats=("json",))
        small = {str(tmp_path / "small.jsonl")!r}
        open(small, "w").write(open({str(data)!r}).readline())
        run_filter(small, out={str(tmp_path / "o-small")!r}, options=opts)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        r = run_filter({str(data)!r}, out={str(tmp_path / "o")!r}, options=opts)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(json.dumps({{"base": base, "peak": peak, "docs": r.documents}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parents[2])
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    assert measured["docs"] == 100_000
    assert measured["peak"] - measured["base"] < size / 4, (measured, size)
