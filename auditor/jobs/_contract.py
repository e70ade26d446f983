"""The contract every job keeps: JSON options and results, ``_job.json``, idempotent reruns.

Every verb is ``run_<verb>(input, *, out, options, progress=None, cancel=None)`` returning
a result. Options and results are dataclasses derived from :class:`JobOptions` and
:class:`JobResult`: validated on construction, round-tripping through JSON with
:meth:`Record.to_dict` / :meth:`Record.from_dict` and a schema version, holding nothing
JSON cannot (no ``Path``, frame, cache object or exception); paths inside ``out`` are
strings relative to it.

:func:`run_recorded` wraps a job's work. It writes ``out/_job.json`` when the job starts
(state ``running``) and when it finishes (state ``done``, with the result): the verb,
the options and their hash, the input's fingerprint, the library versions. A rerun with
the same options and input returns the recorded result without recomputing; a rerun of an
unfinished job resumes (each stage keeps its own markers); other options or another input
are refused with :class:`~auditor.errors.JobConflict` unless ``options.overwrite``.

Examples
--------
>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class EchoOptions(JobOptions):
...     word: str = "hi"
>>> EchoOptions.from_dict(EchoOptions(word="yo").to_dict())
EchoOptions(overwrite=False, word='yo')
>>> EchoOptions.from_dict({"schema_version": 1, "word": 3})
Traceback (most recent call last):
...
auditor.errors.ConfigError: field 'word': expected str, got int 3
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from auditor import __version__
from auditor._files import (
    check_writable,
    file_lock,
    read_json,
    sha256_bytes,
    sha256_file,
    write_json,
)
from auditor._versions import library_versions
from auditor.errors import (
    AuditorError,
    ConfigError,
    IncompleteStore,
    JobConflict,
    ProvenanceMismatch,
)

__all__ = [
    "JOB_FILE",
    "JobOptions",
    "JobResult",
    "Record",
    "StageMarkers",
    "fingerprint",
    "json_values",
    "read_job",
    "relative_to",
    "run_recorded",
    "runtime_field",
    "text_input",
    "text_or_dataset",
]

#: The record every job leaves in its output directory.
JOB_FILE = "_job.json"

R = TypeVar("R", bound="Record")
Res = TypeVar("Res", bound="JobResult")


def runtime_field(default: Any = None, **kwargs: Any) -> Any:
    """A dataclass field that does not change a job's output (a batch size, a device, the
    overwrite flag): left out of the options hash, so changing it is not a conflict."""
    metadata = {**kwargs.pop("metadata", {}), "hash": False}
    if "default_factory" in kwargs:
        return field(metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` (from JSON) against the annotation ``tp`` and convert it (lists to
    tuples, dicts to nested records)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, where)
            except ConfigError as e:
                errors.append(e.message)
        raise ConfigError(f"expected {' or '.join(_type_name(o) for o in options)}, got "
                          f"{type(value).__name__} {value!r}", field=where)
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"expected one of {list(typing.get_args(tp))}, got {value!r}",
                              field=where)
        return value
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"expected a list, got {type(value).__name__} {value!r}",
                              field=where)
        args = typing.get_args(tp)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            item = args[0]
        elif origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"expected {len(args)} items, got {len(value)}", field=where)
            return tuple(_convert(v, a, f"{where}[{i}]")
                         for i, (v, a) in enumerate(zip(value, args, strict=True)))
        else:
            item = args[0] if args else Any
        items = [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or tp is tuple else items
    if origin in (dict, Mapping) or tp in (dict,):
        if not isinstance(value, Mapping):
            raise ConfigError(f"expected an object, got {type(value).__name__} {value!r}",
                              field=where)
        args = typing.get_args(tp)
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _convert(v, vt, f"{where}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, Record):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"expected an object, got {type(value).__name__}", field=where)
        return tp.from_dict(value)
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is bool or tp is str:
        if isinstance(value, tp):
            return value
    elif isinstance(tp, type):
        if isinstance(value, tp):
            return value
    else:  # an annotation this checker does not know: trust it
        return value
    raise ConfigError(f"expected {_type_name(tp)}, got {type(value).__name__} {value!r}",
                      field=where)


def _plain(value: Any, where: str) -> Any:
    """``value`` as JSON types; anything JSON cannot hold is an error, not a ``str()``."""
    if isinstance(value, Record):
        return value.to_dict()
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{value!r} is not JSON", field=where)
        return value
    if isinstance(value, list | tuple):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"key {k!r} is not a string", field=where)
            out[k] = _plain(v, f"{where}.{k}")
        return out
    raise ConfigError(f"{type(value).__name__} is not JSON-able (a job's options and "
                      f"results hold only JSON values; paths as strings)", field=where)


def json_values(value: Any) -> Any:
    """``value`` with JSON's types only, for results built from library output: numpy and
    torch scalars and arrays become numbers and lists, tuples lists, paths strings, and
    numbers that are not finite ``None``.

    Examples
    --------
    >>> json_values({"a": (1, float("nan")), "b": float("inf")})
    {'a': [1, None], 'b': None}
    """
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {str(k): json_values(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_values(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        return json_values(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


@dataclass(frozen=True)
class Record:
    """A frozen dataclass that round-trips through JSON with a schema version.

    Subclasses declare fields with JSON-able annotations and may override
    :meth:`validate`, which runs on construction and raises
    :class:`~auditor.errors.ConfigError` naming the field.
    """

    SCHEMA_VERSION: ClassVar[int] = 1

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            value = getattr(self, f.name)
            converted = _convert(value, hints[f.name], f.name)
            if converted is not value:
                object.__setattr__(self, f.name, converted)
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values the type alone does not rule out."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict with ``schema_version``; :meth:`from_dict` inverts it."""
        out: dict[str, Any] = {"schema_version": self.SCHEMA_VERSION}
        for f in fields(self):
            out[f.name] = _plain(getattr(self, f.name), f.name)
        return out

    @classmethod
    def from_dict(cls: type[R], record: Mapping[str, Any]) -> R:
        """Build from :meth:`to_dict` output.

        Raises
        ------
        ConfigError
            Another schema version, an unknown key, or a value of the wrong type; the
            message names the key.
        """
        if not isinstance(record, Mapping):
            raise ConfigError(f"{cls.__name__} must be built from an object, got "
                              f"{type(record).__name__}")
        data = dict(record)
        version = data.pop("schema_version", cls.SCHEMA_VERSION)
        if version != cls.SCHEMA_VERSION:
            raise ConfigError(f"{cls.__name__} schema version {version!r} is not "
                              f"{cls.SCHEMA_VERSION} (written by another auditor version)",
                              field="schema_version")
        known = {f.name for f in fields(cls) if f.init}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} keys: {', '.join(unknown)}",
                              field=unknown[0])
        return cls(**data)

    def to_json(self) -> str:
        """:meth:`to_dict` as canonical JSON (sorted keys)."""
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False)


@dataclass(frozen=True)
class JobOptions(Record):
    """Base of every ``<Verb>Options``.

    Parameters
    ----------
    overwrite
        Replace what ``out`` holds from a run with other options or another input instead
        of refusing. A runtime field: never part of the options hash.
    """

    overwrite: bool = runtime_field(False)

    def options_hash(self) -> str:
        """SHA-256 of the options that shape the output (runtime fields left out)."""
        d = self.to_dict()
        for f in fields(self):
            if not f.metadata.get("hash", True):
                d.pop(f.name, None)
        return sha256_bytes(json.dumps(d, sort_keys=True, allow_nan=False))


@dataclass(frozen=True)
class JobResult(Record):
    """Base of every ``<Verb>Result``: only JSON values, paths relative to ``out``."""


def relative_to(path: str | Path, out: str | Path) -> str:
    """``path`` as a string relative to ``out`` when it lies inside it, else as given."""
    p, root = Path(path), Path(out)
    try:
        return p.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def fingerprint(source: str | Path | Mapping[str, Any] | None) -> str | None:
    """A content fingerprint of a job's input.

    A dataset file or a directory of text files: :func:`auditor.io.input_fingerprint`. A
    feature store: its manifest and done markers (what a finished store holds). A mapping
    of named inputs: the fingerprint of each, hashed together. ``None``: ``None``.
    """
    if source is None:
        return None
    if isinstance(source, Mapping):
        parts = {k: fingerprint(v) for k, v in sorted(source.items())}
        return "sha256:" + sha256_bytes(json.dumps(parts, sort_keys=True))
    from auditor.io import input_fingerprint

    path = Path(source)
    if (path / "store.json").is_file():
        # what the store holds (provenance and done shards), not its run summary's timings
        provenance = read_json(path / "store.json", what="store manifest").get("provenance")
        digest = [f"provenance\t{sha256_bytes(json.dumps(provenance, sort_keys=True))}"]
        done = path / "_done"
        if done.is_dir():
            digest += [f"{m.name}\t{sha256_bytes(m.read_bytes())}"
                       for m in sorted(done.iterdir()) if m.is_file()]
        return "sha256:" + sha256_bytes("\n".join(digest))
    if path.is_dir() and not any(path.glob("*.txt")):
        # a directory artefact (an SAE, a head, a dictionary): its files' hashes
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return "sha256:" + sha256_bytes("\n".join(
            f"{p.relative_to(path).as_posix()}\t{sha256_file(p)}" for p in files))
    return input_fingerprint(path)


def read_job(out: str | Path, *, job_file: str = JOB_FILE) -> dict[str, Any] | None:
    """The ``_job.json`` record in ``out``, or ``None`` when there is none."""
    path = Path(out) / job_file
    if not path.is_file():
        return None
    return read_json(path, what="job record")


def _record(verb: str, options: JobOptions, input_fp: str | None, state: str,
            result: JobResult | None = None) -> dict[str, Any]:
    return {
        "verb": verb, "state": state, "auditor_version": __version__,
        "options": options.to_dict(), "options_hash": options.options_hash(),
        "input_fingerprint": input_fp,
        "libraries": library_versions(),
        "python": sys.version.split()[0],
        **({"result": result.to_dict()} if result is not None else {}),
    }


def run_recorded(
    verb: str,
    *,
    out: str | Path,
    options: JobOptions,
    input: str | Path | Mapping[str, Any] | None,
    result_type: type[Res],
    work: Callable[[Path], Res],
    clear: Callable[[Path], None] | None = None,
    job_file: str = JOB_FILE,
) -> Res:
    """Run ``work(out)`` under the job contract, or return the result recorded in ``out``.

    Parameters
    ----------
    verb
        The job's name, recorded and compared.
    out
        The job's output directory (created).
    options
        The job's options; their hash decides whether a recorded run is this run.
    input
        What the job reads (fingerprinted; see :func:`fingerprint`).
    result_type
        The result class, to rebuild a recorded result.
    work
        Does the job, resuming from its own markers, and returns the result.
    clear
        Removes what a run with other options left in ``out`` when ``options.overwrite``
        (default: everything in ``out``).
    job_file
        The record's name: one rank of a job filled by several processes keeps its own
        (``_job.rank-1-of-3.json``); the job's own record is ``_job.json``.

    Raises
    ------
    JobConflict
        ``out`` holds a run of another verb, with other options or of another input, and
        ``options.overwrite`` is false; or another process is running a job into ``out``
        (each job record has its lock, held for the whole run).
    """
    root = check_writable(out)  # before anything is read, loaded or computed
    with file_lock(root / f".{job_file}.lock", blocking=False) as held:
        if not held:
            raise JobConflict("another run of a job is writing to this output right now; "
                              "wait for it, or cancel it", path=root)
        return _run_locked(verb, root, options, input, result_type, work, clear, job_file)


def _run_locked(verb: str, root: Path, options: JobOptions,
                input: str | Path | Mapping[str, Any] | None, result_type: type[Res],
                work: Callable[[Path], Res], clear: Callable[[Path], None] | None,
                job_file: str) -> Res:
    input_fp = fingerprint(input)
    previous = read_job(root, job_file=job_file)
    if previous is not None:
        differs = _differences(previous, verb, options, input_fp)
        if not differs and previous.get("state") == "done" and "result" in previous:
            try:
                return result_type.from_dict(previous["result"])
            except AuditorError:
                pass  # a record from an older schema: recompute
        elif differs:
            if not options.overwrite:
                raise JobConflict(f"holds a {previous.get('verb')!r} job run with other "
                                  f"{', '.join(differs)}; set overwrite to replace it",
                                  path=root)
            (clear or _clear_all)(root)
    write_json(root / job_file, _record(verb, options, input_fp, "running"))
    try:
        result = work(root)
    except (ProvenanceMismatch, JobConflict, IncompleteStore):
        # refused because out holds another run's output, or its input store is not
        # whole: this run owns nothing in out
        if previous is None:
            (root / job_file).unlink(missing_ok=True)
        else:
            write_json(root / job_file, previous)
        raise
    write_json(root / job_file, _record(verb, options, input_fp, "done", result))
    return result


def _differences(previous: Mapping[str, Any], verb: str, options: JobOptions,
                 input_fp: str | None) -> list[str]:
    differs = []
    if previous.get("verb") != verb:
        differs.append("verb")
    if previous.get("auditor_version") != __version__:
        # another release may compute other numbers: its record is not this job's
        differs.append(f"auditor version ({previous.get('auditor_version')})")
    if previous.get("options_hash") != options.options_hash():
        old = previous.get("options") or {}
        new = options.to_dict()
        keys = sorted(k for k in set(old) | set(new)
                      if old.get(k) != new.get(k) and k != "overwrite")
        differs.append(f"options ({', '.join(keys) or 'hash'})")
    if previous.get("input_fingerprint") != input_fp:
        differs.append("input")
    return differs


def _clear_all(root: Path) -> None:
    for child in root.iterdir():
        if child.name.startswith("._job") and child.name.endswith(".lock"):
            continue  # held by this run
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


class StageMarkers:
    """Done markers of a job's stages, in ``out/_stages/<name>.json``.

    A stage that finished leaves a marker with the options hash it ran with; a rerun skips
    it. Markers of a run with other options never count.
    """

    def __init__(self, out: str | Path, options: JobOptions) -> None:
        self.directory = Path(out) / "_stages"
        self._hash = options.options_hash()

    def done(self, name: str) -> dict[str, Any] | None:
        """The record the stage left when it finished with these options, or ``None``."""
        path = self.directory / f"{name}.json"
        if not path.is_file():
            return None
        try:
            record = read_json(path, what="stage marker")
        except AuditorError:
            return None
        if record.get("options_hash") != self._hash:
            return None
        return dict(record.get("record") or {})

    def mark(self, name: str, record: Mapping[str, Any] | None = None) -> None:
        """Record that stage ``name`` finished (atomically)."""
        write_json(self.directory / f"{name}.json",
                   {"stage": name, "options_hash": self._hash,
                    "record": _plain(dict(record or {}), name)})


def text_input(texts: Sequence[str], *, out: str | Path) -> str:
    """Write literal texts as a job's input: ``out/input.jsonl`` with ids ``text`` (one
    text) or ``text-0``, ``text-1``, … and return its path (a job then reads it with
    ``id_column="id"``)."""
    root = Path(out)
    ids = ["text"] if len(texts) == 1 else [f"text-{i}" for i in range(len(texts))]
    lines = "".join(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n"
                    for i, t in zip(ids, texts, strict=True))
    from auditor._files import atomic_write_text

    return str(atomic_write_text(root / "input.jsonl", lines))


#: Endings that make a command-line source a dataset path rather than a text.
DATASET_SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet", ".csv", ".txt", ".gz")


def text_or_dataset(source: str, *, out: str | Path, text: bool = False) -> tuple[str, bool]:
    """Read a source that is either a literal text or a dataset path, by one stated rule.

    An existing file or directory is a dataset; so is a name ending in a dataset suffix
    (``.jsonl``, ``.parquet``, ``.csv``, ``.txt``, ``.gz`` …), which must then exist.
    Anything else is a text, written as the job's one-row input (:func:`text_input`);
    ``text=True`` takes ``source`` as a text whatever it looks like.

    Returns
    -------
    path, literal
        The dataset to read, and whether it is the written text.

    Raises
    ------
    InputError
        ``source`` is empty or blank, or names a dataset file that does not exist.

    Examples
    --------
    >>> import tempfile
    >>> text_or_dataset("you are kind", out=tempfile.mkdtemp())[1]
    True
    >>> text_or_dataset("nope.jsonl", out=tempfile.mkdtemp())
    Traceback (most recent call last):
    ...
    auditor.errors.InputFileError: nope.jsonl: no such dataset file (a literal text that \
ends like a file name needs text=True)
    """
    from auditor.errors import InputError, InputFileError

    if not source.strip():
        raise InputError("an empty text: give a text to classify or a dataset path",
                         field="source")
    if not text:
        path = Path(source)
        if path.exists():
            return source, False
        if path.suffix.lower() in DATASET_SUFFIXES:
            raise InputFileError("no such dataset file (a literal text that ends like a "
                                 "file name needs text=True)", path=source)
    return text_input([source], out=out), True
