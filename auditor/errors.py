"""The one exception tree of auditor.

Every error auditor raises on purpose derives from :class:`AuditorError`. Intermediate
bases let callers catch at the level they care about; the CLI maps each branch to one
exit code (see :data:`EXIT_CODES`) and the HTTP API to one status.

::

    AuditorError
    ├── ConfigError                 invalid settings or arguments
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
        ├── CorruptShard            a shard cannot be read or has the wrong schema
        └── ProvenanceMismatch      shards from different model / SAE / layer are mixed

Context travels as keyword-only attributes (``path``, ``row``, ``field``, ``tensor``) so a
caller can report it without parsing the message.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "EXIT_CODES",
    "AuditorError",
    "ColumnError",
    "ConfigError",
    "CorruptShard",
    "HookError",
    "InputError",
    "InputFileError",
    "ModelError",
    "ModelLoadError",
    "ProvenanceMismatch",
    "RowError",
    "SAEError",
    "SAEFormatError",
    "SAEModelMismatch",
    "SAEWeightsError",
    "ShardMissing",
    "StoreError",
    "UnsafeFileError",
    "exit_code_for",
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


class ConfigError(AuditorError):
    """A setting or argument has an invalid value."""


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


class ProvenanceMismatch(StoreError):
    """Shards or artifacts from different models, SAEs or layers are being mixed."""


# One exit code per branch, most specific first (the CLI walks the MRO).
EXIT_CODES: dict[type[AuditorError], int] = {
    ConfigError: 2,
    InputError: 3,
    ModelError: 4,
    SAEError: 5,
    StoreError: 6,
    AuditorError: 1,
}


def exit_code_for(error: AuditorError) -> int:
    """Return the CLI exit code of ``error``'s branch of the tree."""
    for cls in type(error).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return 1
