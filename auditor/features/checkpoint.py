"""Per-chunk done markers of a dictionary build, with the running statistics.

A build reads its corpus in chunks of documents. After each chunk it saves the running
:class:`~auditor.features.stats.FeatureStats` into a fresh state directory (written
whole, then renamed into place) and then rewrites ``chunks.json``, the marker naming that
directory, how many chunks and documents it holds and the key of the build (what must be
the same for the state to be reused: the options and input of the job). A build killed or
cancelled between chunks resumes from the last marker and ends with exactly the statistics
of an uninterrupted build.

::

    <checkpoint>/chunks.json            {"key", "chunks", "documents", "state"}
    <checkpoint>/state-000003/          arrays.npz (counts, sums, maxima, histograms),
                                        contexts.parquet (top contexts so far)
    <checkpoint>/extract/               the chunk being extracted (temporary)
"""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from auditor._files import atomic_directory, read_json, write_json
from auditor.errors import AuditorError
from auditor.features.stats import FeatureStats

__all__ = ["ChunkCheckpoint", "ChunkState"]

MARKER = "chunks.json"


@dataclass
class ChunkState:
    """What the finished chunks of a build add up to.

    Attributes
    ----------
    chunks, documents : int
        Chunks and documents of the corpus already folded in.
    stats : FeatureStats
        The running statistics after them (merge base included).
    """

    chunks: int
    documents: int
    stats: FeatureStats


class ChunkCheckpoint:
    """The resume state of one dictionary build.

    Parameters
    ----------
    directory : str or Path
        Where the markers and states live (created on the first save).
    key : str
        Identifies the build; a marker left by a build with another key is ignored.
    """

    def __init__(self, directory: str | Path, key: str) -> None:
        self.directory = Path(directory)
        self.key = key

    @property
    def scratch(self) -> Path:
        """A directory for the chunk being extracted (emptied by :meth:`clear`)."""
        return self.directory / "extract"

    def load(self, n_features: int) -> ChunkState | None:
        """The last finished chunk's state, or ``None`` (no marker, another build's, or
        unreadable: the build then starts over)."""
        marker = self.directory / MARKER
        if not marker.is_file():
            return None
        try:
            record = read_json(marker, what="chunk marker")
            if record.get("key") != self.key:
                return None
            state = self.directory / str(record["state"])
            with np.load(state / "arrays.npz", allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
            contexts = pl.read_parquet(state / "contexts.parquet")
            stats = FeatureStats.from_state(n_features, arrays, contexts)
            return ChunkState(chunks=int(record["chunks"]), documents=int(record["documents"]),
                              stats=stats)
        except (AuditorError, OSError, KeyError, ValueError, TypeError,
                pl.exceptions.PolarsError):
            return None

    def save(self, state: ChunkState) -> None:
        """Record that ``state.chunks`` chunks are done: the state first, then the marker."""
        name = f"state-{state.chunks:06d}"
        buffer = io.BytesIO()
        arrays: dict[str, Any] = dict(state.stats.state_arrays())
        np.savez(buffer, **arrays)
        with atomic_directory(self.directory / name, overwrite=True) as tmp:
            (tmp / "arrays.npz").write_bytes(buffer.getvalue())
            state.stats.contexts_frame().write_parquet(tmp / "contexts.parquet")
        write_json(self.directory / MARKER, {"key": self.key, "chunks": state.chunks,
                                             "documents": state.documents, "state": name})
        for old in self.directory.glob("state-*"):
            if old.name != name and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)

    def clear(self) -> None:
        """Remove every marker and state (the build finished or starts over)."""
        shutil.rmtree(self.directory, ignore_errors=True)
