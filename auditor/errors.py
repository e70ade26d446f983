"""The one exception tree of auditor.

Every error auditor raises on purpose derives from :class:`AuditorError`. Intermediate
bases let callers catch at the level they care about; the CLI maps each branch to one
exit code (see :data:`EXIT_CODES`) and the HTTP API to one status (:data:`HTTP_STATUS`).
Every error serialises with :meth:`AuditorError.to_dict` (a queued job's failure travels
as JSON) and comes back as the same class with :func:`error_from_dict`.

::

    AuditorError
    ├── ConfigError                 invalid settings or arguments
    │   └── ProbeInputError         data a probe cannot fit (also a ValueError, as
    │                               scikit-learn's checks expect)
    ├── InputError                  the user's dataset
    │   ├── InputFileError          unreadable / malformed file (JSONL, Parquet, CSV, …)
    │   ├── ColumnError             a named column is missing
    │   └── RowError                one row is unusable (empty, huge, bad UTF-8, wrong type)
    ├── ModelError                  the language model
    │   ├── ModelLoadError          cannot load model or tokenizer
    │   └── HookError               a hook point does not exist on this model
    ├── SAEError                    a sparse autoencoder
    │   ├── SAEFormatError          unknown layout / missing file / bad config
    │   ├── SAEWeightsError         missing tensor, wrong shape, NaN, corrupt file
    │   ├── UnsafeFileError         the file would need unpickling to load
    │   └── SAEModelMismatch        SAE width does not fit the model's d_model
    └── StoreError                  the Parquet feature store
        ├── ShardMissing            a shard named in the store is not on disk
        ├── CorruptShard            a shard cannot be read, has the wrong schema or bytes
        ├── IncompleteStore         the store's extraction did not finish
        └── ProvenanceMismatch      shards from different model / SAE / layer are mixed
    └── JobError                    running a job
        ├── JobConflict             OUT holds a job run with other options or input
        └── JobCancelled            the job's cancel token was set; finished work is kept

Context travels as keyword-only attributes (``path``, ``row``, ``field``, ``tensor``) so a
caller can report it without parsing the message.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "EXIT_CODES",
    "HTTP_STATUS",
    "AuditorError",
    "ColumnError",
    "ConfigError",
    "CorruptShard",
    "HookError",
    "IncompleteStore",
    "InputError",
    "InputFileError",
    "JobCancelled",
    "JobConflict",
    "JobError",
    "ModelError",
    "ModelLoadError",
    "ProbeInputError",
    "ProvenanceMismatch",
    "RowError",
    "SAEError",
    "SAEFormatError",
    "SAEModelMismatch",
    "SAEWeightsError",
    "ShardMissing",
    "StoreError",
    "UnsafeFileError",
    "error_from_dict",
    "exit_code_for",
    "format_error",
    "http_status_for",
]


class AuditorError(Exception):
    """Base of every error auditor raises on purpose."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        row: int | None = None,
        field: str | None = None,
        tensor: str | None = None,
    ) -> None:
        self.message = message
        self.path = None if path is None else str(path)
        self.row = row
        self.field = field
        self.tensor = tensor
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.path is not None:
            where.append(self.path)
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.field is not None:
            where.append(f"field {self.field!r}")
        if self.tensor is not None:
            where.append(f"tensor {self.tensor!r}")
        return f"{', '.join(where)}: {self.message}" if where else self.message

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record: ``type`` (the class name), ``message``, the context fields,
        ``exit_code`` and ``http_status``; :func:`error_from_dict` inverts it."""
        return {"type": type(self).__name__, "message": self.message, "path": self.path,
                "row": self.row, "field": self.field, "tensor": self.tensor,
                "exit_code": exit_code_for(self), "http_status": http_status_for(self)}


class ConfigError(AuditorError):
    """A setting or argument has an invalid value."""


class ProbeInputError(ConfigError, ValueError):
    """A probe was given data or settings it cannot use (one class, a Y that is not a 0/1
    indicator matrix, sparse input to a centring probe, thresholds of the wrong shape).

    A :class:`~auditor.errors.ConfigError` (the auditor tree: exit code 2, HTTP 400) that
    is also a :class:`ValueError`: scikit-learn's estimator checks and meta-estimators
    (``cross_val_predict``, ``GridSearchCV``'s ``error_score``) expect a ``ValueError``
    for bad input, so the probes stay conformant estimators.
    """


class InputError(AuditorError):
    """The input dataset cannot be used as given."""


class InputFileError(InputError):
    """An input file cannot be read or is malformed."""


class ColumnError(InputError):
    """A column named by the user is not in the input."""


class RowError(InputError):
    """One input row is unusable (empty, too long, invalid UTF-8, wrong type)."""


class ModelError(AuditorError):
    """The language model cannot be used as asked."""


class ModelLoadError(ModelError):
    """The model or its tokenizer cannot be loaded."""


class HookError(ModelError):
    """A requested hook point does not exist on this model."""


class SAEError(AuditorError):
    """A sparse autoencoder cannot be used as asked."""


class SAEFormatError(SAEError):
    """The SAE's files are in no known layout, or a required file or config key is missing."""


class SAEWeightsError(SAEError):
    """An SAE tensor is missing, has the wrong shape, holds NaN/inf, or the file is corrupt."""


class UnsafeFileError(SAEError):
    """Loading the file would need unpickling arbitrary objects, which auditor refuses."""


class SAEModelMismatch(SAEError):
    """The SAE's input width does not match the model's hidden size."""


class StoreError(AuditorError):
    """The feature store is incomplete, corrupt or inconsistent."""


class ShardMissing(StoreError):
    """A feature shard named in the store is not on disk."""


class CorruptShard(StoreError):
    """A feature shard cannot be read or does not have the feature-store schema."""


class IncompleteStore(StoreError):
    """The store's extraction did not finish: it holds only some of its input's shards."""


class ProvenanceMismatch(StoreError):
    """Shards or artifacts from different models, SAEs or layers are being mixed."""


class JobError(AuditorError):
    """A job cannot run or did not finish as asked."""


class JobConflict(JobError):
    """The output directory holds a job run with other options or another input."""


class JobCancelled(JobError):
    """The job's cancel token was set; every finished shard, step or stage stays valid and a
    rerun with the same options resumes from there."""


# One exit code per branch, most specific first (the CLI walks the MRO).
EXIT_CODES: dict[type[AuditorError], int] = {
    ConfigError: 2,
    InputError: 3,
    ModelError: 4,
    SAEError: 5,
    StoreError: 6,
    JobConflict: 7,
    JobCancelled: 130,  # as for an interrupt: the run was stopped on request
    JobError: 8,
    AuditorError: 1,
}

# One HTTP status per branch: the caller's fault is 4xx, a conflict with what is on disk
# 409, a cancelled job 499 (client closed request, as nginx uses it), the rest 500.
HTTP_STATUS: dict[type[AuditorError], int] = {
    ConfigError: 400,
    InputError: 422,
    ModelError: 422,
    SAEError: 422,
    ProvenanceMismatch: 409,
    StoreError: 500,
    JobConflict: 409,
    JobCancelled: 499,
    JobError: 500,
    AuditorError: 500,
}


def _lookup(table: dict[type[AuditorError], int], error: AuditorError, default: int) -> int:
    for cls in type(error).__mro__:
        if cls in table:
            return table[cls]
    return default


def exit_code_for(error: AuditorError) -> int:
    """Return the CLI exit code of ``error``'s branch of the tree."""
    return _lookup(EXIT_CODES, error, 1)


def http_status_for(error: AuditorError) -> int:
    """Return the HTTP status of ``error``'s branch of the tree."""
    return _lookup(HTTP_STATUS, error, 500)


def _classes() -> dict[str, type[AuditorError]]:
    found: dict[str, type[AuditorError]] = {}
    todo: list[type[AuditorError]] = [AuditorError]
    while todo:
        cls = todo.pop()
        found[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return found


def error_from_dict(record: Mapping[str, Any]) -> AuditorError:
    """Rebuild an error from :meth:`AuditorError.to_dict`; an unknown ``type`` (say, from
    a newer auditor) becomes the nearest known base, :class:`AuditorError`.

    Examples
    --------
    >>> err = error_from_dict(RowError("empty text", path="a.jsonl", row=3).to_dict())
    >>> type(err).__name__, str(err)
    ('RowError', 'a.jsonl, row 3: empty text')
    """
    cls = _classes().get(str(record.get("type")), AuditorError)
    return cls(str(record.get("message", "")), path=record.get("path"), row=record.get("row"),
               field=record.get("field"), tensor=record.get("tensor"))


def format_error(record: Mapping[str, Any]) -> str:
    """One line for an error record (:meth:`AuditorError.to_dict`), as ``str(error)``."""
    return str(error_from_dict(record))
