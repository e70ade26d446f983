"""Tests of auditor.io: every input format, every bad input, laziness, fingerprints."""

from __future__ import annotations

import csv
import doctest
import gzip
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import auditor.io
from auditor.errors import ColumnError, ConfigError, InputFileError, RowError
from auditor.io import (
    ROW_NUMBERS,
    Document,
    batched,
    count_documents,
    describe_ids,
    input_fingerprint,
    read_documents,
    resolve_id_column,
)

ROWS: list[dict[str, Any]] = [
    {"id": "a", "text": "first document", "label": 1, "src": "x"},
    {"id": "b", "text": "second document", "label": 0, "src": "y"},
    {"id": "c", "text": "third — with ünïcode", "label": 1, "src": "z"},
]


def write_jsonl(path: Path, rows: list[Any], *, gz: bool = False) -> Path:
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    pl.DataFrame(rows).write_parquet(path)
    return path


def expected(*, with_id: bool, extra: bool) -> list[tuple[int, str, str, dict[str, Any]]]:
    out = []
    for i, r in enumerate(ROWS):
        doc_id = r["id"] if with_id else str(i)
        out.append((i, doc_id, r["text"], {"label": r["label"]} if extra else {}))
    return out


def as_tuples(docs: list[Document]) -> list[tuple[int, str, str, dict[str, Any]]]:
    return [(d.row, d.doc_id, d.text, d.extra) for d in docs]


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("name", ["d.jsonl", "d.ndjson", "d.jsonl.gz", "d.parquet", "d.csv"])
def test_round_trip_each_format(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if name.endswith(".parquet"):
        write_parquet(path, ROWS)
    elif name.endswith(".csv"):
        write_csv(path, ROWS)
    else:
        write_jsonl(path, ROWS, gz=name.endswith(".gz"))
    docs = list(read_documents(path, id_column=ROW_NUMBERS))
    assert as_tuples(docs) == expected(with_id=False, extra=False)
    for id_column in ("id", None):  # the input has an id column: the default uses it
        docs = list(read_documents(path, id_column=id_column, passthrough=["label"]))
        got = as_tuples(docs)
        if name.endswith(".csv"):  # CSV values are strings
            got = [(r, i, t, {"label": int(e["label"])}) for r, i, t, e in got]
        assert got == expected(with_id=True, extra=True)
    assert resolve_id_column(path) == "id"
    assert resolve_id_column(path, ROW_NUMBERS) is None


@pytest.mark.parametrize("name", ["d.jsonl", "d.parquet", "d.csv"])
def test_without_an_id_column_ids_are_row_numbers(tmp_path: Path, name: str) -> None:
    rows = [{k: v for k, v in r.items() if k != "id"} for r in ROWS]
    path = tmp_path / name
    if name.endswith(".parquet"):
        write_parquet(path, rows)
    elif name.endswith(".csv"):
        write_csv(path, rows)
    else:
        write_jsonl(path, rows)
    assert resolve_id_column(path) is None
    assert [d.doc_id for d in read_documents(path)] == [str(i) for i in range(len(rows))]
    assert describe_ids(resolve_id_column(path)) == "row numbers"


def test_gzip_detected_by_magic_and_format_override(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "data.bin", ROWS, gz=True)
    docs = list(read_documents(path, format="jsonl"))
    assert [d.text for d in docs] == [r["text"] for r in ROWS]
    path2 = write_jsonl(tmp_path / "plain.jsonl", ROWS, gz=True)
    assert len(list(read_documents(path2))) == 3


def test_custom_text_column_and_integer_ids(tmp_path: Path) -> None:
    rows = [{"body": "hello", "n": 10}, {"body": "world", "n": 11}]
    path = write_parquet(tmp_path / "x.parquet", rows)
    docs = list(read_documents(path, text_column="body", id_column="n"))
    assert [(d.doc_id, d.text) for d in docs] == [("10", "hello"), ("11", "world")]


def test_jsonl_blank_lines_keep_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"text": "a"}\n\n{"text": "b"}\n\n')
    docs = list(read_documents(path))
    assert [(d.row, d.doc_id, d.text) for d in docs] == [(0, "0", "a"), (2, "2", "b")]


def test_jsonl_missing_passthrough_in_later_row_is_none(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "x.jsonl", [{"text": "a", "k": 1}, {"text": "b"}])
    docs = list(read_documents(path, passthrough=["k"]))
    assert [d.extra for d in docs] == [{"k": 1}, {"k": None}]


def test_csv_quoted_newlines_and_long_fields(tmp_path: Path) -> None:
    long_text = "y" * 200_000  # above the csv module's default field limit
    rows = [{"text": "line one\nline two", "k": "1"}, {"text": long_text, "k": "2"}]
    path = write_csv(tmp_path / "x.csv", rows)
    docs = list(read_documents(path, passthrough=["k"]))
    assert [d.text for d in docs] == [rows[0]["text"], long_text]
    assert [d.row for d in docs] == [0, 1]


def test_directory_of_txt(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    (root / "b.txt").write_text("bee")
    (root / "a.txt").write_text("ay")
    (root / "sub" / "c.txt").write_text("sea")
    (root / "notes.md").write_text("ignored")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "h.txt").write_text("ignored")
    docs = list(read_documents(root, text_column="whatever"))
    assert [(d.row, d.doc_id, d.text) for d in docs] == [
        (0, "a.txt", "ay"),
        (1, "b.txt", "bee"),
        (2, "sub/c.txt", "sea"),
    ]


def test_single_txt_file(tmp_path: Path) -> None:
    path = tmp_path / "one.txt"
    path.write_text("just one\ndocument\n")
    docs = list(read_documents(path))
    assert as_tuples(docs) == [(0, "one.txt", "just one\ndocument\n", {})]


def test_txt_rejects_columns(tmp_path: Path) -> None:
    path = tmp_path / "one.txt"
    path.write_text("x")
    with pytest.raises(ColumnError):
        read_documents(path, passthrough=["label"])


# --------------------------------------------------------------------------- file-level errors


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    with pytest.raises(InputFileError) as info:
        read_documents(path)
    assert str(path) in str(info.value)
    assert info.value.path == str(path)


def test_unknown_extension_lists_supported(tmp_path: Path) -> None:
    path = tmp_path / "data.xlsx"
    path.write_bytes(b"PK")
    with pytest.raises(InputFileError) as info:
        read_documents(path)
    msg = str(info.value)
    for ext in (".jsonl", ".parquet", ".csv", ".txt"):
        assert ext in msg
    assert str(path) in msg


def test_unknown_format_argument(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "x.jsonl", ROWS)
    with pytest.raises(ConfigError, match="unknown format"):
        read_documents(path, format="xml")


def test_malformed_json_names_file_and_row(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"text": "ok"}\n{"text": "broken"\n{"text": "never"}\n')
    it = read_documents(path)
    assert next(it).text == "ok"
    with pytest.raises(RowError) as info:
        next(it)
    assert info.value.row == 1
    assert str(path) in str(info.value) and "row 1" in str(info.value)
    assert "file line 2" in str(info.value)  # rows count from 0, the file's lines from 1


def test_malformed_json_is_a_bad_row_that_can_be_skipped(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"text": "ok"}\nnot json\n{"text": "after"}\n')
    errors: list[RowError] = []
    docs = list(read_documents(path, skip_bad_rows=True, errors=errors))
    assert [d.text for d in docs] == ["ok", "after"] and [d.row for d in docs] == [0, 2]
    assert [e.row for e in errors] == [1] and "malformed JSON" in errors[0].message


def test_a_truncated_gzip_names_the_file_and_the_row_reached(tmp_path: Path) -> None:
    import gzip

    data = gzip.compress(b"".join(b'{"text": "line %d of the file"}\n' % i
                                  for i in range(5000)))
    path = tmp_path / "x.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    assert count_documents(path) is None  # no crash: the reader reports it
    read = []
    with pytest.raises(InputFileError, match="cannot read the file after row") as info:
        for doc in read_documents(path):
            read.append(doc.row)
    assert info.value.row == len(read) and read == list(range(len(read))) and read


def test_corrupt_parquet(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    path.write_bytes(b"this is not parquet at all" * 10)
    with pytest.raises(InputFileError) as info:
        read_documents(path)
    assert str(path) in str(info.value)


def test_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl.gz"
    data = gzip.compress(b'{"text": "a"}\n' * 1000)
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFileError) as info:
        list(read_documents(path))
    assert str(path) in str(info.value)


@pytest.mark.parametrize("name", ["x.parquet", "x.csv", "x.jsonl"])
def test_missing_text_column_lists_available(tmp_path: Path, name: str) -> None:
    rows = [{"body": "hello", "id": "1"}]
    path = tmp_path / name
    if name.endswith(".parquet"):
        write_parquet(path, rows)
    elif name.endswith(".csv"):
        write_csv(path, rows)
    else:
        write_jsonl(path, rows)
    with pytest.raises(ColumnError) as info:
        read_documents(path)  # detected at open, before iterating
    err = info.value
    assert err.field == "text"
    assert str(path) in str(err) and "'body'" in str(err) and "'id'" in str(err)


@pytest.mark.parametrize("kw", [{"id_column": "nope"}, {"passthrough": ["nope"]}])
def test_missing_id_or_passthrough_column(tmp_path: Path, kw: dict[str, Any]) -> None:
    path = write_parquet(tmp_path / "x.parquet", ROWS)
    with pytest.raises(ColumnError) as info:
        read_documents(path, **kw)
    assert info.value.field == "nope"


def test_empty_dir_and_empty_csv(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileError, match=r"no \.txt"):
        read_documents(tmp_path / "empty")
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(InputFileError, match="header"):
        read_documents(tmp_path / "e.csv")


def test_directory_with_non_txt_format(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="directory"):
        read_documents(tmp_path, format="jsonl")


# --------------------------------------------------------------------------- row-level errors

BAD_JSONL_ROWS: list[tuple[str, str, str | None]] = [
    # (line, message fragment, field)
    ('{"text": null}', "null", "text"),
    ('{"text": 42}', "string", "text"),
    ('{"text": ""}', "empty", "text"),
    ('{"text": "   \\n\\t"}', "whitespace", "text"),
    ('{"text": "' + "x" * 50 + '"}', "50 characters, more than max_chars=20", "text"),
    ("[1, 2, 3]", "not an object", None),
    ('{"body": "no text key"}', "missing key", "text"),
]


@pytest.mark.parametrize(("line", "fragment", "field"), BAD_JSONL_ROWS)
def test_bad_jsonl_rows_name_file_row_field(
    tmp_path: Path, line: str, fragment: str, field: str | None
) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"text": "good one"}\n{"text": "good two"}\n' + line + "\n")
    it = read_documents(path, max_chars=20)
    assert [next(it).text, next(it).text] == ["good one", "good two"]  # laziness
    with pytest.raises(RowError) as info:
        next(it)
    err = info.value
    assert err.row == 2 and err.field == field
    assert fragment in str(err) and str(path) in str(err) and "row 2" in str(err)


def test_invalid_utf8_jsonl_gives_row_and_byte_offset(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    first = b'{"text": "ok"}\n'
    bad = b'{"text": "bad \xff byte"}\n'
    path.write_bytes(first + bad)
    docs: list[Document] = []
    with pytest.raises(RowError) as info:
        for doc in read_documents(path):
            docs.append(doc)
    assert [d.text for d in docs] == ["ok"]
    err = info.value
    assert err.row == 1
    offset = len(first) + bad.index(b"\xff")
    assert f"byte offset {offset}" in str(err)
    assert str(path) in str(err)


def test_invalid_utf8_csv_gives_row_and_byte_offset(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    head = b"id,text\n1,fine\n"
    bad = b'2,"multi\nline \xfe here"\n'
    path.write_bytes(head + bad + b"3,after\n")
    errors: list[RowError] = []
    docs = list(read_documents(path, id_column="id", skip_bad_rows=True, errors=errors))
    assert [d.doc_id for d in docs] == ["1", "3"]
    assert [d.row for d in docs] == [0, 2]
    assert len(errors) == 1 and errors[0].row == 1
    offset = len(head) + bad.index(b"\xfe")
    assert f"byte offset {offset}" in str(errors[0])


def test_invalid_utf8_txt(tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    (root / "a.txt").write_text("fine")
    (root / "b.txt").write_bytes(b"abc\xc3(")
    errors: list[RowError] = []
    docs = list(read_documents(root, skip_bad_rows=True, errors=errors))
    assert [d.doc_id for d in docs] == ["a.txt"]
    assert errors[0].row == 1 and "byte offset 3" in str(errors[0])
    assert str(root / "b.txt") in str(errors[0])


def test_txt_too_long(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("z" * 100)
    with pytest.raises(RowError, match="max_chars=10"):
        list(read_documents(path, max_chars=10))
    with pytest.raises(RowError, match="100 characters"):
        list(read_documents(path, max_chars=50))


def test_csv_wrong_field_count(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("id,text\n1,a\n2,b,extra\n")
    with pytest.raises(RowError, match="3 fields") as info:
        list(read_documents(path))
    assert info.value.row == 1


def test_null_text_parquet(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "x.parquet", [{"text": "a"}, {"text": None}])
    with pytest.raises(RowError, match="null") as info:
        list(read_documents(path))
    assert info.value.row == 1 and info.value.field == "text"


def test_missing_and_null_ids(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "x.jsonl",
        [{"id": "a", "text": "x"}, {"text": "no id"}, {"id": None, "text": "null id"}],
    )
    errors: list[RowError] = []
    docs = list(read_documents(path, id_column="id", skip_bad_rows=True, errors=errors))
    assert [d.doc_id for d in docs] == ["a"]
    assert [(e.row, e.field) for e in errors] == [(1, "id"), (2, "id")]


def test_duplicate_ids_name_both_rows(tmp_path: Path) -> None:
    path = write_parquet(
        tmp_path / "x.parquet",
        [{"id": "a", "text": "x"}, {"id": "b", "text": "y"}, {"id": "a", "text": "z"}],
    )
    with pytest.raises(RowError) as info:
        list(read_documents(path, id_column="id"))
    err = info.value
    assert err.row == 2 and err.field == "id"
    assert "rows 0 and 2" in str(err) and "'a'" in str(err)


def test_skip_bad_rows_collects_errors(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(
        b'{"text": "one"}\n{"text": ""}\n{"text": 5}\n\xff\n{"text": "five"}\n[1]\n{"text": "s"}\n'
    )
    errors: list[RowError] = []
    docs = list(read_documents(path, skip_bad_rows=True, errors=errors))
    assert [(d.row, d.text) for d in docs] == [(0, "one"), (4, "five"), (6, "s")]
    assert [e.row for e in errors] == [1, 2, 3, 5]
    assert all(isinstance(e, RowError) and e.path == str(path) for e in errors)
    # Without an errors list, bad rows are still skipped.
    assert len(list(read_documents(path, skip_bad_rows=True))) == 3


def test_skip_bad_rows_still_raises_file_errors(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "x.parquet", [{"body": "a"}])
    with pytest.raises(ColumnError):
        read_documents(path, skip_bad_rows=True)


def test_laziness_reads_rows_as_consumed(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b"}\n')
    it = read_documents(path)
    assert next(it).text == "a"
    # Appending after the iterator started is visible: rows are read on demand.
    with open(path, "a") as f:
        f.write('{"text": "c"}\n')
    assert [d.text for d in it] == ["b", "c"]


def test_max_chars_must_be_positive(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "x.jsonl", ROWS)
    with pytest.raises(ConfigError):
        read_documents(path, max_chars=0)


# --------------------------------------------------------------------------- fingerprint


def test_fingerprint_file(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "x.jsonl", ROWS)
    fp = input_fingerprint(path)
    assert fp.startswith("sha256:") and len(fp) == len("sha256:") + 64
    assert input_fingerprint(str(path)) == fp
    path.write_bytes(path.read_bytes() + b"\n")
    assert input_fingerprint(path) != fp


def test_fingerprint_large_file_streams(tmp_path: Path) -> None:
    import hashlib

    data = bytes(range(256)) * (3 * 4096 + 17)  # > 3 MiB, not a multiple of the block
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    assert input_fingerprint(path) == "sha256:" + hashlib.sha256(data).hexdigest()


def test_fingerprint_directory(tmp_path: Path) -> None:
    root = tmp_path / "d"
    (root / "s").mkdir(parents=True)
    (root / "a.txt").write_text("a")
    (root / "s" / "b.txt").write_text("b")
    fp = input_fingerprint(root)
    assert fp == input_fingerprint(root)
    (root / "s" / "b.txt").write_text("B")
    fp2 = input_fingerprint(root)
    assert fp2 != fp
    (root / "s" / "b.txt").rename(root / "s" / "c.txt")  # same content, new name
    assert input_fingerprint(root) != fp2


def test_fingerprint_missing(tmp_path: Path) -> None:
    with pytest.raises(InputFileError):
        input_fingerprint(tmp_path / "nope")


# --------------------------------------------------------------------------- batched


def test_batched() -> None:
    assert list(batched(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(batched([], 2)) == []
    assert list(batched(iter("ab"), 5)) == [["a", "b"]]
    with pytest.raises(ConfigError):
        batched([1], 0)


def test_batched_is_lazy() -> None:
    def gen() -> Any:
        yield 1
        yield 2
        raise RuntimeError("consumed too far")

    it = batched(gen(), 2)
    assert next(it) == [1, 2]


def test_doctests() -> None:
    result = doctest.testmod(auditor.io)
    assert result.attempted > 0 and result.failed == 0


def test_no_torch_import() -> None:
    import subprocess
    import sys

    code = "import sys, auditor.io, auditor.store; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_utf16_file_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"text": "hello"}\n', encoding="utf-16")
    with pytest.raises(RowError, match="the file is UTF-16") as info:
        list(read_documents(path))
    assert info.value.row == 0 and "iconv" in str(info.value)
