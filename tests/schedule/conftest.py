"""Fixtures of the scheduled-report tests: a tiny model, a tiny SAE and a tiny ``safety``
head (``unsafe`` = sport words, ``safe`` = weather words; ``unsafe`` is flagged by the
report's default flag rules), and watched JSONL files of a chosen label mix."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import pytest

from auditor.heads import load_split, save_head, train_head
from auditor.schedule import ScheduleSpec
from auditor.testing import make_random_sae
from tests.heads.conftest import FILLER, SPORT, WEATHER, extract_splits


def _rows(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "safe" if i % 2 else "unsafe"
        words = WEATHER if label == "safe" else SPORT
        text = " ".join(rng.choice(words if rng.random() < 0.7 else FILLER)
                        for _ in range(rng.randint(6, 20)))
        rows.append({"id": f"{label}{seed}-{i}", "text": text, "label": label})
    return rows


@pytest.fixture(scope="session")
def sched_sae_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_random_sae(layer=2, d_sae=128, k=8, seed=3).save(
        tmp_path_factory.mktemp("sched-sae") / "s")


@pytest.fixture(scope="session")
def safety_head(tiny_llama_dir: Path, sched_sae_dir: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``safety`` head (safe / unsafe) for the tiny model and SAE, saved to disk."""
    root = tmp_path_factory.mktemp("sched-head")
    splits = extract_splits(_rows, root, model=tiny_llama_dir, sae_dir=sched_sae_dir,
                            passthrough=("label",))
    store, _, rows = splits["train"]
    split = load_split(store, "label", texts={r["id"]: r["text"] for r in rows})
    head = train_head("safety", split, candidate="sae-max-log1p", folds=3,
                      positive_class="unsafe")
    return save_head(head, root / "heads" / "safety")


def write_watched(path: Path, n: int, *, unsafe: float, seed: int) -> Path:
    """``n`` JSONL rows, a share ``unsafe`` of them sport texts, written atomically (a
    hidden temporary file renamed into place, as the watched directory expects)."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        words = SPORT if i < round(n * unsafe) else WEATHER
        text = " ".join(rng.choice(words) for _ in range(rng.randint(6, 14)))
        lines.append(json.dumps({"id": f"r{i}", "text": text}) + "\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(lines))
    os.replace(tmp, path)
    return path


@pytest.fixture
def make_spec(tiny_llama_dir: Path, sched_sae_dir: Path, safety_head: Path, tmp_path: Path):
    """Factory of a schedule on the tiny pipeline watching ``tmp_path/in``."""
    def make(**kw: Any) -> ScheduleSpec:
        base: dict[str, Any] = dict(
            name="nightly", every="1h", watch=str(tmp_path / "in"), out=str(tmp_path / "out"),
            heads=(str(safety_head),), model=str(tiny_llama_dir), saes=(str(sched_sae_dir),),
            explain=2, label_shift_threshold=0.2)
        base.update(kw)
        return ScheduleSpec(**base)

    return make

