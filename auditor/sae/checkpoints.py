"""Resumable checkpoints of an SAE training run, in ``out/checkpoints/step-N/``.

A checkpoint holds the SAE in auditor's format, the optimizer moments and latent
statistics as safetensors, and ``state.json`` (step, data position, history, the run's
identity). Nothing is pickled. A checkpoint is written into a temporary sibling and renamed
into place, so a reader sees whole checkpoints only; the oldest are pruned.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from auditor._files import atomic_write_text
from auditor.errors import StoreError
from auditor.sae.trainer import Trainer

__all__ = ["CHECKPOINTS_DIRNAME", "checkpoint_dirs", "load_checkpoint", "save_checkpoint",
           "write_record"]

CHECKPOINTS_DIRNAME = "checkpoints"
_STATE = "state.json"
_OPTIMIZER = "optimizer.safetensors"


def write_record(path: Path, data: Mapping[str, Any]) -> None:
    """Write a run's JSON record atomically (NaN metrics of a degenerate run are kept as
    JSON's ``NaN`` rather than refused)."""
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def checkpoint_dirs(out: Path) -> list[tuple[int, Path]]:
    """The whole checkpoints in ``out``, as ``(step, directory)`` by step."""
    root = out / CHECKPOINTS_DIRNAME
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        name = path.name
        if path.is_dir() and name.startswith("step-") and name[5:].isdigit() \
                and (path / _STATE).is_file():
            found.append((int(name[5:]), path))
    return sorted(found)


def save_checkpoint(out: Path, trainer: Trainer, *, step: int, state: dict[str, Any],
                    input_scale: float, model_name: str | None, keep: int) -> Path:
    """Write the checkpoint of ``step`` and keep only the ``keep`` most recent."""
    root = out / CHECKPOINTS_DIRNAME
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step}"
    tmp = root / f".step-{step}.{os.getpid()}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    trainer.to_sae(input_scale=input_scale, model_name=model_name).save(tmp)
    save_file(trainer.optimizer_tensors(), str(tmp / _OPTIMIZER),
              metadata={"format": "auditor-train-state"})
    write_record(tmp / _STATE, state)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for _, old in checkpoint_dirs(out)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, trainer: Trainer) -> dict[str, Any]:
    """Load a checkpoint into ``trainer``; return its ``state.json``.

    Raises
    ------
    StoreError
        The checkpoint cannot be read or does not fit the run.
    """
    from auditor.sae.formats import load_sae

    try:
        state = json.loads((path / _STATE).read_text(encoding="utf-8"))
        tensors = load_file(str(path / _OPTIMIZER))
    except (OSError, ValueError, SafetensorError) as exc:
        raise StoreError(f"cannot read training checkpoint: {exc}", path=path) from exc
    trainer.load_weights(load_sae(path, format="auditor"), renormalise=False)
    trainer.load_optimizer(tensors, path / _OPTIMIZER)
    trainer.adam_step = int(state["adam_step"])
    threshold = state.get("threshold")
    trainer.threshold = None if threshold is None else float(threshold)
    return dict(state)
