"""The warmup job: convert the embedded default model once, before any job needs it.

The default model ships as a GGUF; its first use converts it to a float32 safetensors
cache (about 90 s and 3.4 GB of memory). A worker, a container build or a user runs this
job once so no extraction pays that inside a task. The cache lives under
``$AUDITOR_CACHE_DIR`` (default ``~/.cache/auditor``); ``out`` is that cache directory
unless given, and ``_job.json`` there records the conversion.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from auditor.cancel import CancelToken, check_cancel
from auditor.jobs._contract import JobOptions, JobResult, run_recorded
from auditor.progress import Progress, ProgressCallback

__all__ = ["WarmupOptions", "WarmupResult", "run_warmup"]


@dataclass(frozen=True)
class WarmupOptions(JobOptions):
    """Settings of the warmup job (none yet beyond ``overwrite``)."""


@dataclass(frozen=True)
class WarmupResult(JobResult):
    """Where the converted default model is."""

    model_dir: str
    gguf_sha256: str


def run_warmup(
    input: None = None,
    *,
    out: str | Path | None = None,
    options: WarmupOptions | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> WarmupResult:
    """Convert the embedded default model's GGUF to its safetensors cache (once).

    Parameters
    ----------
    out
        The cache directory (default: :func:`auditor.lm.cache_dir`, the one every job
        loads the default model from).
    options
        See :class:`WarmupOptions`.
    progress
        One ``convert`` stage.
    cancel
        Checked before the conversion starts (a conversion in progress finishes: it is
        written to a temporary directory and renamed, so a kill leaves nothing half-done).

    Returns
    -------
    WarmupResult
    """
    from auditor import defaults
    from auditor.lm import cache_dir
    from auditor.lm.gguf import gguf_sha256

    options = options or WarmupOptions()
    gguf = defaults.default_gguf()
    root = Path(out) if out is not None else cache_dir()

    def work(_: Path) -> WarmupResult:
        check_cancel(cancel, "the conversion")
        with Progress(progress, job="warmup").stage("convert", total=1) as stage:
            model_dir = defaults.default_model_dir(progress=False, cache_root=root)
            stage.advance(1)
        return WarmupResult(model_dir=str(model_dir),
                            gguf_sha256=gguf_sha256(gguf, cache_root=root))

    return run_recorded("warmup", out=root, options=options, input=None,
                        result_type=WarmupResult, work=work)
