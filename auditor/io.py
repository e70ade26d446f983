"""Read user datasets as a lazy stream of :class:`Document`.

Supported inputs
----------------
* JSON Lines: ``.jsonl`` / ``.ndjson``, optionally gzip-compressed (``.gz``; detected by
  the gzip magic bytes, so a compressed file with a plain name also works).
* Parquet: ``.parquet``, streamed record batch by record batch with pyarrow.
* CSV: ``.csv`` (optionally ``.csv.gz``), streamed with the standard library reader; the
  first record is the header.
* A directory of ``.txt`` files: every ``*.txt`` below it, recursively, sorted by relative
  path; hidden files and folders (a name starting with ``.``) are skipped. One file is one
  document whose ``doc_id`` is its relative POSIX path.
* A single ``.txt`` file: one document whose ``doc_id`` is the file name.

File-level problems (missing or unreadable file, malformed JSON, corrupt Parquet, missing
column) raise :class:`~auditor.errors.InputFileError` or :class:`~auditor.errors.ColumnError`
when detected. Row-level problems (null / non-string / empty / too long text, invalid UTF-8,
missing or duplicate id) raise :class:`~auditor.errors.RowError`, or are collected and the
row skipped when ``skip_bad_rows=True``.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import itertools
import json
import os
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from auditor._files import sha256_file
from auditor.errors import ColumnError, ConfigError, InputFileError, RowError

__all__ = [
    "ID_COLUMN",
    "ROW_NUMBERS",
    "SUPPORTED_EXTENSIONS",
    "SUPPORTED_FORMATS",
    "Document",
    "batched",
    "count_documents",
    "describe_ids",
    "input_fingerprint",
    "read_documents",
    "resolve_id_column",
]

T = TypeVar("T")

#: The one rule for document ids, in every command: with ``id_column=None`` a document's id
#: is its ``id`` column when the input has one (JSONL: its first object), else its row
#: number (a ``.txt`` input: its relative path).
ID_COLUMN = "id"
#: ``id_column`` value that keys documents by row number even when the input has ``id``.
ROW_NUMBERS = "#row"

#: Values accepted by ``read_documents(format=...)``.
SUPPORTED_FORMATS: tuple[str, ...] = ("jsonl", "ndjson", "parquet", "csv", "txt")

#: File name endings recognised when ``format`` is not given (plus a directory of ``.txt``).
SUPPORTED_EXTENSIONS: tuple[str, ...] = (
    ".jsonl",
    ".ndjson",
    ".jsonl.gz",
    ".ndjson.gz",
    ".parquet",
    ".csv",
    ".csv.gz",
    ".txt",
)

_PARQUET_BATCH_ROWS = 1024
_GZIP_MAGIC = b"\x1f\x8b"
_UTF8_BOM = codecs.BOM_UTF8
_READ_ERRORS = (OSError, EOFError, zlib.error)


@dataclass(frozen=True)
class Document:
    """One input document.

    Parameters
    ----------
    row : int
        0-based row number in the input: ``line number - 1`` for JSONL, the data-record
        index (header excluded) for CSV, the row index for Parquet, the file index (in sorted
        order) for a directory of ``.txt`` files.
    doc_id : str
        The id column's value as a string, or the row number as a string when no id column
        is used, or the relative path for ``.txt`` inputs.
    text : str
        The document text (non-empty, at most ``max_chars`` characters).
    extra : dict of str to Any
        The passthrough columns requested by the user, by name.
    """

    row: int
    doc_id: str
    text: str
    extra: dict[str, Any]


# A raw record from a format reader: (row, text, id, extra), or a RowError describing why the
# row is unusable (yielded, not raised, so that the stream can continue past a skipped row).
_Record = tuple[int, Any, Any, dict[str, Any]]


def read_documents(
    path: str | Path,
    *,
    text_column: str = "text",
    id_column: str | None = None,
    passthrough: Sequence[str] = (),
    max_chars: int = 1_000_000,
    skip_bad_rows: bool = False,
    errors: list[RowError] | None = None,
    format: str | None = None,
) -> Iterator[Document]:
    """Stream the documents of a dataset file or directory, lazily and in input order.

    File-level checks (the file exists and opens, the format is known, the requested
    columns exist for Parquet / CSV / the first JSONL object) happen when this function is
    called; rows are read and checked only as the returned iterator is consumed, so rows
    already yielded stay valid when a later row fails.

    Parameters
    ----------
    path : str or Path
        A ``.jsonl``/``.ndjson`` (optionally ``.gz``), ``.parquet``, ``.csv`` or ``.txt``
        file, or a directory of ``.txt`` files.
    text_column : str, default 'text'
        Column (JSON key) holding the text. Ignored for ``.txt`` inputs.
    id_column : str or None, default None
        Column holding a document id. ``None``: the ``id`` column when the input has one,
        else the row number (the relative path for ``.txt`` inputs, which have no columns);
        :data:`ROW_NUMBERS` forces row numbers (see :func:`resolve_id_column`).
    passthrough : sequence of str, default ()
        Extra columns copied into :attr:`Document.extra`. A JSONL row lacking one of them
        gets ``None``.
    max_chars : int, default 1_000_000
        Longest accepted text, in characters.
    skip_bad_rows : bool, default False
        Skip rows that raise :class:`RowError` instead of raising; file-level errors still
        raise.
    errors : list of RowError or None, default None
        When ``skip_bad_rows`` is true, each skipped row's error is appended here.
    format : {'jsonl', 'ndjson', 'parquet', 'csv', 'txt'} or None, default None
        Force a format instead of guessing it from the extension.

    Returns
    -------
    Iterator of Document
        The documents, in input order.

    Raises
    ------
    InputFileError
        The file is missing, unreadable, of an unknown type, malformed (bad JSON line,
        corrupt Parquet, broken CSV or gzip), or a directory holds no ``.txt`` file.
    ColumnError
        ``text_column``, ``id_column`` or a passthrough column is not in the input.
    RowError
        A row is unusable: null or non-string text, empty or whitespace-only text, text
        longer than ``max_chars``, invalid UTF-8, a JSON line that is not an object, a
        missing, null or duplicate id (unless ``skip_bad_rows``).
    ConfigError
        ``format`` or ``max_chars`` is invalid.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> p = Path(tempfile.mkdtemp()) / "docs.jsonl"
    >>> _ = p.write_text('{"text": "hello"}\\n{"text": "world"}\\n')
    >>> [(d.doc_id, d.text) for d in read_documents(p)]
    [('0', 'hello'), ('1', 'world')]
    >>> _ = p.write_text('{"id": "a", "text": "hello"}\\n{"id": "b", "text": "world"}\\n')
    >>> [d.doc_id for d in read_documents(p)], [d.doc_id for d in read_documents(
    ...     p, id_column=ROW_NUMBERS)]
    (['a', 'b'], ['0', '1'])
    """
    if max_chars < 1:
        raise ConfigError(f"max_chars must be >= 1, got {max_chars}", field="max_chars")
    src = Path(path)
    fmt = _resolve_format(src, format)
    id_column = _resolve_id(src, fmt, id_column)
    passthrough = tuple(passthrough)
    if fmt == "txt":
        if id_column is not None or passthrough:
            raise ColumnError(
                "plain .txt inputs have no columns; id_column and passthrough must be unset",
                path=src,
                field=id_column if id_column is not None else passthrough[0],
            )
        records = _open_txt(src, max_chars=max_chars)
        id_field: str | None = None
        track_ids = src.is_dir()
    else:
        opener = {"jsonl": _open_jsonl, "parquet": _open_parquet, "csv": _open_csv}[fmt]
        records = opener(src, text_column=text_column, id_column=id_column, passthrough=passthrough)
        id_field = id_column
        track_ids = id_column is not None
    return _documents(
        records,
        src=src,
        text_field=None if fmt == "txt" else text_column,
        id_field=id_field,
        track_ids=track_ids,
        max_chars=max_chars,
        skip_bad_rows=skip_bad_rows,
        errors=errors,
    )


def resolve_id_column(path: str | Path, id_column: str | None = None, *,
                      format: str | None = None) -> str | None:
    """The column :func:`read_documents` takes ids from (None: row numbers).

    Parameters
    ----------
    path : str or Path
        The input.
    id_column : str or None, default None
        As given to :func:`read_documents`: a column name is kept (whether it exists is
        checked when reading), :data:`ROW_NUMBERS` gives None, and None gives
        :data:`ID_COLUMN` when the input has that column (for JSONL: its first object has
        that key), else None.
    format : str, optional
        As for :func:`read_documents`.

    Returns
    -------
    str or None

    Raises
    ------
    InputFileError
        The input cannot be opened or its format is unknown.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> p = Path(tempfile.mkdtemp()) / "docs.jsonl"
    >>> _ = p.write_text('{"text": "hello"}\\n')
    >>> resolve_id_column(p), resolve_id_column(p, "key")
    (None, 'key')
    >>> _ = p.write_text('{"id": 7, "text": "hello"}\\n')
    >>> resolve_id_column(p), resolve_id_column(p, ROW_NUMBERS)
    ('id', None)
    """
    src = Path(path)
    return _resolve_id(src, _resolve_format(src, format), id_column)


def describe_ids(id_column: str | None) -> str:
    """How documents are keyed, for messages: ``column 'id'`` or ``row numbers``.

    Examples
    --------
    >>> describe_ids("id"), describe_ids(None)
    ("column 'id'", 'row numbers')
    """
    return "row numbers" if id_column in (None, ROW_NUMBERS) else f"column {id_column!r}"


def _resolve_id(src: Path, fmt: str, id_column: str | None) -> str | None:
    if id_column == ROW_NUMBERS:
        return None
    if id_column is not None or fmt == "txt":
        return id_column
    return ID_COLUMN if ID_COLUMN in _columns(src, fmt) else None


def _columns(src: Path, fmt: str) -> list[str]:
    """The input's column names (JSONL: the keys of its first object; [] when unreadable,
    which the reader then reports with its row)."""
    if fmt == "parquet":
        pf = _parquet_file(src)
        try:
            return list(pf.schema_arrow.names)
        finally:
            pf.close()
    if fmt == "csv":
        return _read_csv_header(src)
    with _BinaryReader(src) as f:
        try:
            for row, line in enumerate(f):
                if row == 0:
                    line = line.removeprefix(_UTF8_BOM)
                if not line.strip():
                    continue
                try:
                    first = json.loads(line.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    return []
                return list(first) if isinstance(first, dict) else []
        except _READ_ERRORS as e:
            raise InputFileError(f"cannot read file: {e}", path=src) from e
    return []


def input_fingerprint(path: str | Path) -> str:
    """Return a content fingerprint of an input file or directory.

    Parameters
    ----------
    path : str or Path
        A file (hashed byte for byte) or a directory of ``.txt`` files (the same files
        :func:`read_documents` reads).

    Returns
    -------
    str
        ``"sha256:<hex>"``. For a file, the SHA-256 of its bytes; for a directory, the
        SHA-256 of the sorted list of ``<relative path>\\t<file sha256>\\n`` lines.

    Raises
    ------
    InputFileError
        The path does not exist or cannot be read.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> p = Path(tempfile.mkdtemp()) / "a.txt"
    >>> _ = p.write_bytes(b"abc")
    >>> input_fingerprint(p)[:15]
    'sha256:ba7816bf'
    """
    src = Path(path)
    if src.is_dir():
        h = hashlib.sha256()
        for rel, file in _txt_files(src):
            h.update(f"{rel}\t{_sha256_file(file)}\n".encode())
        return f"sha256:{h.hexdigest()}"
    if not src.exists():
        raise InputFileError("no such file or directory", path=src)
    return f"sha256:{_sha256_file(src)}"


def count_documents(path: str | Path, *, format: str | None = None) -> int | None:
    """Count the rows of an input cheaply, for a progress bar; None if that would be costly.

    Counts non-blank JSONL lines (a byte scan, no parsing), reads the Parquet footer, and
    counts ``.txt`` files; returns None for CSV (quoted newlines need a full parse) and on
    any error (the reader reports real problems with their file and row).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.jsonl"
    >>> _ = p.write_text('{"text": "a"}\\n\\n{"text": "b"}\\n')
    >>> count_documents(p)
    2
    """
    src = Path(path)
    try:
        fmt = _resolve_format(src, format)
        if fmt == "jsonl":
            with _BinaryReader(src) as f:  # closes the gzip stream and its file
                return sum(1 for line in f if line.strip())
        if fmt == "parquet":
            return int(_parquet_file(src).metadata.num_rows)
        if fmt == "txt":
            return len(_txt_files(src)) if src.is_dir() else 1
    except (*_READ_ERRORS, ValueError, InputFileError, ConfigError):
        return None  # a truncated gzip, say: the reader names the file and the row reached
    return None


def batched(items: Iterable[T], n: int) -> Iterator[list[T]]:
    """Group an iterable into lists of ``n`` items (the last one may be shorter).

    Parameters
    ----------
    items : iterable
        Any iterable; consumed lazily.
    n : int
        Batch size, at least 1.

    Returns
    -------
    Iterator of list
        Consecutive, non-empty batches.

    Raises
    ------
    ConfigError
        ``n`` is smaller than 1.

    Examples
    --------
    >>> list(batched(range(5), 2))
    [[0, 1], [2, 3], [4]]
    """
    if n < 1:
        raise ConfigError(f"batch size must be >= 1, got {n}", field="n")
    return _batched(iter(items), n)


# --------------------------------------------------------------------------- internals


def _batched(it: Iterator[T], n: int) -> Iterator[list[T]]:
    while batch := list(itertools.islice(it, n)):
        yield batch


def _sha256_file(path: Path) -> str:
    try:
        return sha256_file(path)
    except OSError as e:
        raise InputFileError(f"cannot read file: {e.strerror or e}", path=path) from e


def _resolve_format(src: Path, fmt: str | None) -> str:
    if fmt is not None:
        key = fmt.lower().lstrip(".")
        if key not in SUPPORTED_FORMATS:
            raise ConfigError(
                f"unknown format {fmt!r}; supported: {', '.join(SUPPORTED_FORMATS)}",
                field="format",
            )
        resolved = "jsonl" if key == "ndjson" else key
    elif src.is_dir():
        resolved = "txt"
    else:
        name = src.name.lower()
        if name.endswith(".gz"):
            name = name[:-3]
        suffix = Path(name).suffix
        by_suffix = {
            ".jsonl": "jsonl",
            ".ndjson": "jsonl",
            ".parquet": "parquet",
            ".csv": "csv",
            ".txt": "txt",
        }
        if suffix not in by_suffix:
            raise InputFileError(
                f"unsupported input type {src.suffix or '(no extension)'!r}; supported: "
                f"{', '.join(SUPPORTED_EXTENSIONS)} or a directory of .txt files "
                "(or set format)",
                path=src,
            )
        resolved = by_suffix[suffix]
    if src.is_dir() and resolved != "txt":
        raise InputFileError(
            f"is a directory; only a directory of .txt files is supported, not {resolved}",
            path=src,
        )
    if not src.exists():
        raise InputFileError("no such file or directory", path=src)
    return resolved


def _open_binary(src: Path) -> IO[bytes]:
    """Open a file for binary reading, transparently gunzipping it."""
    try:
        f: IO[bytes] = open(src, "rb")
        try:
            magic = f.read(2)
            f.seek(0)
        except BaseException:
            f.close()
            raise
    except OSError as e:
        raise InputFileError(f"cannot open file: {e.strerror or e}", path=src) from e
    if magic == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=f, mode="rb")  # type: ignore[return-value]  # closing it does not close f
    return f


class _BinaryReader:
    """Context manager owning a (possibly gzip-wrapped) binary file."""

    def __init__(self, src: Path) -> None:
        self.src = src
        self.raw: IO[bytes] | None = None
        self.outer: IO[bytes] | None = None

    def __enter__(self) -> IO[bytes]:
        outer = _open_binary(self.src)
        self.outer = outer
        # GzipFile(fileobj=...) does not close the underlying file: keep a handle to it.
        self.raw = getattr(outer, "fileobj", None) or outer
        return outer

    def __exit__(self, *exc: object) -> None:
        if self.outer is not None:
            self.outer.close()
        if self.raw is not None and self.raw is not self.outer:
            self.raw.close()


def _bad_utf8(src: Path, row: int, data: bytes, base: int, err: UnicodeDecodeError) -> RowError:
    if base == 0 and data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return RowError("the file is UTF-16 (it starts with a UTF-16 byte-order mark); "
                        "auditor reads UTF-8: convert it first, e.g. iconv -f UTF-16 -t UTF-8",
                        path=src, row=row)
    return RowError(
        f"invalid UTF-8 at byte offset {base + err.start} ({err.reason}, byte "
        f"0x{data[err.start]:02x})",
        path=src,
        row=row,
    )


def _loads_json(src: Path, row: int, text: str) -> Any:
    """One JSON line; a malformed one is that row's error (skippable like any bad row).
    Rows count from 0, as everywhere; the message also gives the file's line number."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        return RowError(f"malformed JSON (file line {row + 1}, column {e.colno}): {e.msg}",
                        path=src, row=row)


def _check_columns(
    src: Path,
    available: Sequence[str],
    *,
    text_column: str | None,
    id_column: str | None,
    passthrough: Sequence[str],
    what: str,
) -> None:
    have = set(available)
    wanted = [("text_column", text_column), ("id_column", id_column)]
    wanted += [("passthrough", c) for c in passthrough]
    for role, col in wanted:
        if col is not None and col not in have:
            listing = ", ".join(repr(c) for c in available) or "(none)"
            raise ColumnError(
                f"{role} {col!r} not found; available {what}: {listing}", path=src, field=col
            )


# ----- JSONL


def _open_jsonl(
    src: Path, *, text_column: str, id_column: str | None, passthrough: tuple[str, ...]
) -> Iterator[_Record | RowError]:
    # Eager check: the first non-blank object must have the requested keys.
    with _BinaryReader(src) as f:
        try:
            for row, line in enumerate(f):
                if row == 0:
                    line = line.removeprefix(_UTF8_BOM)
                if not line.strip():
                    continue
                try:
                    first = json.loads(line.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    break  # reported with its row by the stream
                if isinstance(first, dict):
                    _check_columns(
                        src,
                        list(first),
                        text_column=text_column,
                        id_column=id_column,
                        passthrough=passthrough,
                        what=f"keys in the first object (row {row})",
                    )
                break
        except _READ_ERRORS as e:
            raise InputFileError(f"cannot read file: {e}", path=src) from e
    return _iter_jsonl(src, text_column=text_column, id_column=id_column, passthrough=passthrough)


def _iter_jsonl(
    src: Path, *, text_column: str, id_column: str | None, passthrough: tuple[str, ...]
) -> Iterator[_Record | RowError]:
    with _BinaryReader(src) as f:
        offset = 0
        row = -1
        lines = iter(f)
        while True:
            try:
                line = next(lines, None)
            except _READ_ERRORS as e:
                raise InputFileError(
                    f"cannot read the file after row {row} (file line {row + 1}); the rows "
                    f"before it were read: {e}", path=src, row=row + 1
                ) from e
            if line is None:
                return
            row += 1
            base = offset
            offset += len(line)
            if row == 0 and line.startswith(_UTF8_BOM):
                line = line[len(_UTF8_BOM) :]
                base += len(_UTF8_BOM)
            if not line.strip():
                continue  # blank lines are allowed (e.g. a trailing newline)
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as e:
                yield _bad_utf8(src, row, line, base, e)
                continue
            obj = _loads_json(src, row, text)
            if isinstance(obj, RowError):
                yield obj
                continue
            if not isinstance(obj, dict):
                yield RowError(
                    f"JSON line is not an object (got {type(obj).__name__})", path=src, row=row
                )
                continue
            if text_column not in obj:
                yield RowError(
                    f"missing key {text_column!r}; keys: {', '.join(map(repr, obj)) or '(none)'}",
                    path=src,
                    row=row,
                    field=text_column,
                )
                continue
            doc_id = obj.get(id_column) if id_column is not None else None
            yield row, obj[text_column], doc_id, {c: obj.get(c) for c in passthrough}


# ----- Parquet


def _open_parquet(
    src: Path, *, text_column: str, id_column: str | None, passthrough: tuple[str, ...]
) -> Iterator[_Record | RowError]:
    pf = _parquet_file(src)
    try:
        names = list(pf.schema_arrow.names)
    finally:
        pf.close()
    _check_columns(
        src,
        names,
        text_column=text_column,
        id_column=id_column,
        passthrough=passthrough,
        what="columns",
    )
    return _iter_parquet(src, text_column=text_column, id_column=id_column, passthrough=passthrough)


def _parquet_file(src: Path) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(src)
    except (OSError, pa.ArrowException) as e:
        raise InputFileError(f"not a readable Parquet file: {e}", path=src) from e


def _iter_parquet(
    src: Path, *, text_column: str, id_column: str | None, passthrough: tuple[str, ...]
) -> Iterator[_Record | RowError]:
    import pyarrow as pa

    columns = list(dict.fromkeys([text_column, *([id_column] if id_column else []), *passthrough]))
    pf = _parquet_file(src)
    try:
        batches = pf.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=columns)
        row = 0
        while True:
            try:
                batch = next(batches, None)
            except (OSError, pa.ArrowException) as e:
                raise InputFileError(
                    f"corrupt Parquet data near row {row}: {e}", path=src, row=row
                ) from e
            if batch is None:
                return
            data = {name: batch.column(name).to_pylist() for name in columns}
            for i in range(batch.num_rows):
                yield (
                    row + i,
                    data[text_column][i],
                    data[id_column][i] if id_column else None,
                    {c: data[c][i] for c in passthrough},
                )
            row += batch.num_rows
    finally:
        pf.close()


# ----- CSV


def _ensure_csv_field_limit() -> None:
    # The default limit (131072 characters) is below max_chars; length is checked per row.
    if csv.field_size_limit() < 2**31 - 1:
        csv.field_size_limit(2**31 - 1)


class _CsvLines:
    """Decode a binary file line by line, remembering where invalid UTF-8 was seen."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.offset = 0
        self.line_no = 0  # physical lines yielded so far (1-based number of the last one)
        self.bad: dict[int, tuple[bytes, int, UnicodeDecodeError]] = {}

    def __iter__(self) -> Iterator[str]:
        for line in self._f:
            self.line_no += 1
            base = self.offset
            self.offset += len(line)
            if self.line_no == 1 and line.startswith(_UTF8_BOM):
                line = line[len(_UTF8_BOM) :]
                base += len(_UTF8_BOM)
            try:
                yield line.decode("utf-8")
            except UnicodeDecodeError as e:
                self.bad[self.line_no] = (line, base, e)
                yield line.decode("utf-8", errors="surrogateescape")

    def first_bad(self, start: int, stop: int) -> tuple[bytes, int, UnicodeDecodeError] | None:
        """Return the first invalid line among physical lines ``start..stop`` and forget them."""
        found = None
        for ln in range(start, stop + 1):
            hit = self.bad.pop(ln, None)
            if hit is not None and found is None:
                found = hit
        return found


def _read_csv_header(src: Path) -> list[str]:
    _ensure_csv_field_limit()
    with _BinaryReader(src) as f:
        lines = _CsvLines(f)
        reader = csv.reader(lines)
        try:
            header = next(reader, None)
        except csv.Error as e:
            raise InputFileError(f"malformed CSV header: {e}", path=src) from e
        except _READ_ERRORS as e:
            raise InputFileError(f"cannot read file: {e}", path=src) from e
        if lines.bad:
            _, base, err = next(iter(lines.bad.values()))
            raise InputFileError(
                f"invalid UTF-8 in the CSV header at byte offset {base + err.start}", path=src
            )
    if not header:
        raise InputFileError("empty CSV file: no header row", path=src)
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        raise InputFileError(f"duplicate CSV column names: {', '.join(dupes)}", path=src)
    return header


def _open_csv(
    src: Path, *, text_column: str, id_column: str | None, passthrough: tuple[str, ...]
) -> Iterator[_Record | RowError]:
    header = _read_csv_header(src)
    _check_columns(
        src,
        header,
        text_column=text_column,
        id_column=id_column,
        passthrough=passthrough,
        what="columns",
    )
    return _iter_csv(
        src, header, text_column=text_column, id_column=id_column, passthrough=passthrough
    )


def _iter_csv(
    src: Path,
    header: list[str],
    *,
    text_column: str,
    id_column: str | None,
    passthrough: tuple[str, ...],
) -> Iterator[_Record | RowError]:
    _ensure_csv_field_limit()
    with _BinaryReader(src) as f:
        lines = _CsvLines(f)
        reader = csv.reader(lines)
        row = -1
        prev_line = 0
        first = True
        while True:
            try:
                values = next(reader, None)
            except csv.Error as e:
                raise InputFileError(
                    f"malformed CSV near line {reader.line_num}: {e}", path=src, row=row + 1
                ) from e
            except _READ_ERRORS as e:
                raise InputFileError(
                    f"cannot read file near line {reader.line_num}: {e}", path=src, row=row + 1
                ) from e
            if values is None:
                return
            start, prev_line = prev_line + 1, reader.line_num
            bad = lines.first_bad(start, prev_line)
            if first:  # the header, already checked
                first = False
                continue
            if not values:
                continue  # blank line
            row += 1
            if bad is not None:
                yield _bad_utf8(src, row, bad[0], bad[1], bad[2])
                continue
            if len(values) != len(header):
                yield RowError(
                    f"has {len(values)} fields, the header has {len(header)}", path=src, row=row
                )
                continue
            rec = dict(zip(header, values, strict=True))
            yield (
                row,
                rec[text_column],
                rec[id_column] if id_column is not None else None,
                {c: rec[c] for c in passthrough},
            )


# ----- txt


def _txt_files(src: Path) -> list[tuple[str, Path]]:
    try:
        found = [
            (p.relative_to(src).as_posix(), p)
            for p in src.rglob("*.txt")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(src).parts)
        ]
    except OSError as e:
        raise InputFileError(f"cannot list directory: {e.strerror or e}", path=src) from e
    if not found:
        raise InputFileError("directory contains no .txt files", path=src)
    return sorted(found)


def _open_txt(src: Path, *, max_chars: int) -> Iterator[_Record | RowError]:
    if src.is_dir():
        files = _txt_files(src)
    else:
        if not os.access(src, os.R_OK):
            raise InputFileError("file is not readable", path=src)
        files = [(src.name, src)]
    return _iter_txt(files, max_chars=max_chars)


def _iter_txt(files: list[tuple[str, Path]], *, max_chars: int) -> Iterator[_Record | RowError]:
    for row, (rel, file) in enumerate(files):
        try:
            size = file.stat().st_size
            if size > 4 * max_chars:  # a UTF-8 character is at most 4 bytes
                yield RowError(
                    f"text is at least {size // 4} characters ({size} bytes), more than "
                    f"max_chars={max_chars}",
                    path=file,
                    row=row,
                )
                continue
            data = file.read_bytes()
        except OSError as e:
            raise InputFileError(f"cannot read file: {e.strerror or e}", path=file) from e
        base = 0
        if data.startswith(_UTF8_BOM):
            data, base = data[len(_UTF8_BOM) :], len(_UTF8_BOM)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            yield _bad_utf8(file, row, data, base, e)
            continue
        yield row, text, rel, {}


# ----- validation common to every format


def _documents(
    records: Iterator[_Record | RowError],
    *,
    src: Path,
    text_field: str | None,
    id_field: str | None,
    track_ids: bool,
    max_chars: int,
    skip_bad_rows: bool,
    errors: list[RowError] | None,
) -> Iterator[Document]:
    seen: dict[str, int] = {}
    txt_dir = text_field is None and src.is_dir()
    for rec in records:
        try:
            if isinstance(rec, RowError):
                raise rec
            where = src / rec[2] if txt_dir else src  # name the file itself for a txt dir
            doc = _validate(
                rec, src=where, text_field=text_field, id_field=id_field, max_chars=max_chars
            )
            if track_ids:
                first = seen.setdefault(doc.doc_id, doc.row)
                if first != doc.row:
                    raise RowError(
                        f"duplicate doc id {doc.doc_id!r}: rows {first} and {doc.row}",
                        path=src,
                        row=doc.row,
                        field=id_field,
                    )
        except RowError as e:
            if not skip_bad_rows:
                raise
            if errors is not None:
                errors.append(e)
            continue
        yield doc


def _validate(
    rec: _Record, *, src: Path, text_field: str | None, id_field: str | None, max_chars: int
) -> Document:
    row, text, raw_id, extra = rec
    if text is None:
        raise RowError("text is null", path=src, row=row, field=text_field)
    if not isinstance(text, str):
        raise RowError(
            f"text must be a string, got {type(text).__name__}", path=src, row=row, field=text_field
        )
    if not text.strip():
        raise RowError("text is empty or whitespace-only", path=src, row=row, field=text_field)
    if len(text) > max_chars:
        raise RowError(
            f"text has {len(text)} characters, more than max_chars={max_chars}",
            path=src,
            row=row,
            field=text_field,
        )
    if id_field is None:
        doc_id = str(row) if raw_id is None else str(raw_id)
    else:
        if raw_id is None or (isinstance(raw_id, str) and not raw_id.strip()):
            raise RowError("id is missing or null", path=src, row=row, field=id_field)
        if isinstance(raw_id, (dict, list)):
            raise RowError(
                f"id must be a scalar, got {type(raw_id).__name__}",
                path=src,
                row=row,
                field=id_field,
            )
        doc_id = str(raw_id)
    return Document(row=row, doc_id=doc_id, text=text, extra=extra)
