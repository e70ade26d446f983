"""Rows as they are in the input, read in batches and written back in the same format.

The filter keeps every original column and the row order: a JSONL line is written back
byte for byte when kept (a dropped one is re-serialised with the ``reason`` key added), a
CSV record with the same header, a Parquet batch with the same Arrow schema. The
:class:`RowBatch` also carries a Polars frame of the columns the steps read, the ids (the
id column's value, or the row number: the rule every auditor command uses) and the rows'
positions.

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> src = Path(tempfile.mkdtemp()) / "in.jsonl"
>>> _ = src.write_text('{"text": "a", "n": 1}\\n{"text": "b", "n": 2}\\n')
>>> reader = RowReader(src)
>>> reader.columns
['text', 'n']
>>> [(b.rows, b.ids, b.frame["n"].to_list()) for b in reader.batches(columns=["n"])]
[([0, 1], ['0', '1'], [1, 2])]
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import polars as pl

from auditor._files import apply_umask
from auditor.errors import ColumnError, ConfigError, InputFileError

__all__ = ["FORMATS", "PartWriter", "RowBatch", "RowReader", "input_format"]

#: JSONL rows whose keys make the input's columns.
_SCHEMA_ROWS = 1000
#: Formats the filter reads and writes, by output extension.
FORMATS = {"jsonl": ".jsonl", "csv": ".csv", "parquet": ".parquet"}


def input_format(path: str | Path) -> str:
    """``jsonl``, ``csv`` or ``parquet`` from a file name (``.jsonl``, ``.ndjson``, their
    ``.gz``, ``.csv``, ``.csv.gz``, ``.parquet``).

    Raises
    ------
    InputFileError
        Another kind of file (or a directory).
    """
    src = Path(path)
    name = src.name.lower().removesuffix(".gz")
    for suffix, fmt in ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".csv", "csv"),
                        (".parquet", "parquet")):
        if name.endswith(suffix) and not (fmt == "parquet" and src.name.endswith(".gz")):
            return fmt
    raise InputFileError("the filter reads JSONL (.jsonl/.ndjson, optionally .gz), CSV or "
                         "Parquet files and writes the same format back", path=src)


@dataclass
class RowBatch:
    """Consecutive input rows.

    Parameters
    ----------
    rows
        Each row's 0-based position in the input (a JSONL row is a line).
    frame
        The columns asked for (a column a JSONL row lacks is null there).
    ids
        Each row's document id.
    raw
        The rows as read, for writing back: JSONL lines (bytes), CSV records (lists of
        strings) or a ``pyarrow.RecordBatch``.
    """

    rows: list[int]
    frame: pl.DataFrame
    ids: list[str]
    raw: Any

    def __len__(self) -> int:
        return self.frame.height


def _open(src: Path) -> IO[bytes]:
    f = open(src, "rb")  # handed to the caller, who closes it
    if f.read(2) == b"\x1f\x8b":
        f.seek(0)
        return gzip.GzipFile(fileobj=f)  # type: ignore[return-value]
    f.seek(0)
    return f


class RowReader:
    """Read a JSONL, CSV or Parquet file in batches of rows, keeping every column.

    Parameters
    ----------
    path
        The input file.
    text_column, id_column
        Where the text is, and the id column (``None``: ids are row numbers).

    Raises
    ------
    InputFileError
        Unknown format, unreadable file, a malformed first JSONL line.
    ColumnError
        The text or id column is not in the input.
    """

    def __init__(self, path: str | Path, *, text_column: str = "text",
                 id_column: str | None = None) -> None:
        self.path = Path(path)
        self.format = input_format(self.path)
        self.text_column = text_column
        self.id_column = id_column
        if not self.path.is_file():
            raise InputFileError("no such file", path=self.path)
        self.columns = self._columns()
        for name, what in ((text_column, "text"), (id_column, "id")):
            if name is not None and name not in self.columns:
                raise ColumnError(f"no {what} column {name!r}; the input has: "
                                  f"{', '.join(self.columns) or '(no columns)'}",
                                  path=self.path, field=name)

    def _columns(self) -> list[str]:
        if self.format == "parquet":
            return list(self._parquet().schema_arrow.names)
        with _open(self.path) as f:
            if self.format == "csv":
                text = io.TextIOWrapper(f, encoding="utf-8-sig", newline="")
                try:
                    return next(csv.reader(text), [])
                except (UnicodeDecodeError, csv.Error) as err:
                    raise InputFileError(f"cannot read the CSV header: {err}",
                                         path=self.path) from err
            # JSONL rows may differ in keys: the columns are those of the first rows
            keys: dict[str, None] = {}
            seen = 0
            for row, raw in enumerate(f):
                line = raw[len(codecs.BOM_UTF8):] if row == 0 and \
                    raw.startswith(codecs.BOM_UTF8) else raw
                if line.strip():
                    try:
                        keys.update(dict.fromkeys(self._loads(line, row)))
                    except InputFileError:
                        if not seen:
                            raise
                        break  # named when the rows are read, after the shards before it
                    seen += 1
                    if seen == _SCHEMA_ROWS:
                        break
        return list(keys)

    def _parquet(self) -> Any:
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(self.path)
        except Exception as err:  # pyarrow raises several types for a corrupt file
            raise InputFileError(f"not a readable Parquet file: {err}", path=self.path) from err

    def _loads(self, line: bytes, row: int) -> dict[str, Any]:
        try:
            value = json.loads(line)
        except UnicodeDecodeError as err:
            raise InputFileError(f"row {row} (line {row + 1}): invalid UTF-8 at byte "
                                 f"{err.start}", path=self.path, row=row) from err
        except json.JSONDecodeError as err:
            raise InputFileError(f"row {row} (line {row + 1}): malformed JSON: {err.msg} at "
                                 f"column {err.colno}", path=self.path, row=row) from err
        if not isinstance(value, dict):
            raise InputFileError(f"row {row} (line {row + 1}): a JSON line must be an "
                                 f"object, got {type(value).__name__}", path=self.path,
                                 row=row)
        return value

    def batches(self, *, columns: Sequence[str] = (), batch_rows: int = 1000,
                skip: int = 0) -> Iterator[RowBatch]:
        """Batches of at most ``batch_rows`` rows, in order, from row ``skip`` on.

        ``columns`` are the original columns the frame holds, besides the text (and id)
        column. Raises :class:`InputFileError` at a malformed row (the rows before it were
        yielded).
        """
        if batch_rows < 1:
            raise ConfigError("batch_rows must be >= 1", field="batch_rows")
        wanted = list(dict.fromkeys([self.text_column,
                                     *([self.id_column] if self.id_column else []),
                                     *(c for c in columns if c in self.columns)]))
        read = {"jsonl": self._jsonl, "csv": self._csv, "parquet": self._parquet_batches}
        yield from read[self.format](wanted, batch_rows, skip)

    def _ids(self, values: list[Any] | None, rows: list[int]) -> list[str]:
        """The id rule of :func:`auditor.io.read_documents`: the id column's value as a
        string, else the row number."""
        if values is None:
            return [str(r) for r in rows]
        out = []
        for row, v in zip(rows, values, strict=True):
            if v is None or (isinstance(v, str) and not v.strip()) or isinstance(v, dict | list):
                raise InputFileError(f"row {row}: missing or non-scalar id in column "
                                     f"{self.id_column!r}", path=self.path, row=row)
            out.append(str(v))
        return out

    def _make(self, rows: list[int], records: list[dict[str, Any]], wanted: list[str],
              raw: Any) -> RowBatch:
        frame = pl.DataFrame({c: pl.Series(c, [r.get(c) for r in records], strict=False)
                              for c in wanted})
        ids = self._ids([r.get(self.id_column) for r in records] if self.id_column else None,
                        rows)
        return RowBatch(rows, frame, ids, raw)

    def _jsonl(self, wanted: list[str], batch_rows: int, skip: int) -> Iterator[RowBatch]:
        # A row is a line (0-based), as in auditor.io: a blank line keeps its number but is
        # no document, and is not written back.
        lines: list[bytes] = []
        records: list[dict[str, Any]] = []
        rows: list[int] = []
        with _open(self.path) as f:
            for row, line in enumerate(f):
                if row < skip:
                    continue
                if row == 0 and line.startswith(codecs.BOM_UTF8):
                    line = line[len(codecs.BOM_UTF8):]
                if not line.strip():
                    continue
                records.append(self._loads(line, row))
                lines.append(line if line.endswith(b"\n") else line + b"\n")
                rows.append(row)
                if len(lines) == batch_rows:
                    yield self._make(rows, records, wanted, lines)
                    lines, records, rows = [], [], []
        if lines:
            yield self._make(rows, records, wanted, lines)

    def _csv(self, wanted: list[str], batch_rows: int, skip: int) -> Iterator[RowBatch]:
        from auditor.io import _ensure_csv_field_limit

        _ensure_csv_field_limit()
        header = self.columns
        records: list[list[str]] = []
        start = skip
        with _open(self.path) as f:
            text = io.TextIOWrapper(f, encoding="utf-8-sig", newline="")
            reader = csv.reader(text)
            try:
                next(reader, None)
                for row, rec in enumerate(reader):
                    if row < skip:
                        continue
                    if len(rec) != len(header):
                        raise InputFileError(f"row {row}: {len(rec)} fields, the header has "
                                             f"{len(header)}", path=self.path, row=row)
                    records.append(rec)
                    if len(records) == batch_rows:
                        yield self._csv_batch(start, records, wanted)
                        start += len(records)
                        records = []
            except UnicodeDecodeError as err:
                raise InputFileError(f"invalid UTF-8 after row {start + len(records)}",
                                     path=self.path, row=start + len(records)) from err
            except csv.Error as err:
                raise InputFileError(f"malformed CSV near row {start + len(records)}: {err}",
                                     path=self.path, row=start + len(records)) from err
        if records:
            yield self._csv_batch(start, records, wanted)

    def _csv_batch(self, start: int, records: list[list[str]], wanted: list[str]) -> RowBatch:
        index = {c: self.columns.index(c) for c in wanted}
        dicts = [{c: r[j] for c, j in index.items()} for r in records]
        return self._make(list(range(start, start + len(records))), dicts, wanted, records)

    def _parquet_batches(self, wanted: list[str], batch_rows: int, skip: int
                         ) -> Iterator[RowBatch]:
        pf = self._parquet()
        start = 0
        try:
            for rb in pf.iter_batches(batch_size=batch_rows):
                if start + rb.num_rows <= skip:
                    start += rb.num_rows
                    continue
                if start < skip:
                    rb = rb.slice(skip - start)
                    start = skip
                frame = pl.from_arrow(rb.select(wanted))
                assert isinstance(frame, pl.DataFrame)
                rows = list(range(start, start + rb.num_rows))
                ids = self._ids(frame[self.id_column].to_list() if self.id_column else None,
                                rows)
                yield RowBatch(rows, frame, ids, rb)
                start += rb.num_rows
        except OSError as err:
            raise InputFileError(f"corrupt Parquet data after row {start}: {err}",
                                 path=self.path, row=start) from err


def _with_key(line: bytes, key: str, value: Any) -> bytes:
    """A JSON object line with one more key at its end, the original bytes kept: the
    closing brace is replaced by ``, "key": value}`` (the reader checked it is an object).

    >>> _with_key(b'{"a": 1}\\n', "reason", {"step": "x"})
    b'{"a": 1, "reason": {"step": "x"}}\\n'
    >>> _with_key(b'{ }\\n', "r", 1)
    b'{"r": 1}\\n'
    """
    body = line.rstrip()
    assert body.endswith(b"}")
    head = body[:-1].rstrip()
    extra = json.dumps({key: value}, ensure_ascii=False, default=str).encode()[1:-1]
    sep = b"" if head.endswith(b"{") else b", "
    return head + sep + extra + b"}\n"


class PartWriter:
    """One output part (``part-00000.jsonl`` …), written to a temporary file and moved
    into place by :meth:`commit`, so a crash never leaves a partial part.

    Parameters
    ----------
    path
        The part's final path.
    reader
        The input's reader (format, header, schema).
    reason_column
        The column that holds each row's drop reason (JSON), or ``None`` for kept rows.
    """

    def __init__(self, path: Path, reader: RowReader, *, reason_column: str | None) -> None:
        self.path = path
        self.reader = reader
        self.reason_column = reason_column
        self.rows = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        apply_umask(tmp)
        self._tmp = Path(tmp)
        self._file: Any = None
        self._csv: Any = None
        self._parquet: Any = None
        if reader.format == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            schema = reader._parquet().schema_arrow
            if reason_column is not None:
                schema = schema.append(pa.field(reason_column, pa.string()))
            self._parquet = pq.ParquetWriter(self._tmp, schema, compression="zstd")
        else:
            self._file = open(self._tmp, "wb")  # closed by commit/abort
            if reader.format == "csv":
                self._text = io.TextIOWrapper(self._file, encoding="utf-8", newline="")
                self._csv = csv.writer(self._text)
                self._csv.writerow(reader.columns + ([reason_column] if reason_column else []))

    def write(self, batch: RowBatch, take: Sequence[int],
              reasons: Sequence[dict[str, Any]] | None = None) -> None:
        """Write the rows at positions ``take`` of ``batch`` (with their ``reasons``)."""
        if not take:
            return
        encoded = [json.dumps(r, ensure_ascii=False, default=str) for r in reasons] \
            if reasons is not None and self.reader.format != "jsonl" else None
        if self.reader.format == "parquet":
            import pyarrow as pa

            part = batch.raw.take(pa.array(take, type=pa.int64()))
            if encoded is not None:
                part = part.append_column(self.reason_column, pa.array(encoded, pa.string()))
            self._parquet.write_batch(part)
        elif self.reader.format == "csv":
            for j, i in enumerate(take):
                rec = batch.raw[i]
                self._csv.writerow([*rec, encoded[j]] if encoded is not None else rec)
        else:
            for j, i in enumerate(take):
                line = batch.raw[i]
                if reasons is not None and self.reason_column is not None:
                    line = _with_key(line, self.reason_column, reasons[j])
                self._file.write(line)
        self.rows += len(take)

    def commit(self) -> Path:
        """Close and move the part into place (an empty part is written too: every input
        shard has its kept and dropped parts)."""
        if self._parquet is not None:
            self._parquet.close()
        else:
            if self._csv is not None:
                self._text.flush()
                self._text.detach()
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the temporary file."""
        try:
            if self._parquet is not None:
                self._parquet.close()
            elif self._file is not None and not self._file.closed:
                self._file.close()
        finally:
            self._tmp.unlink(missing_ok=True)
