"""Shared fixtures: a tiny random Llama + random SAE, and labelled train/test stores of a
keyword-separable two-class task (weather vs sport, imbalanced 2:1)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from auditor.extract import ExtractConfig
from auditor.heads import load_split
from auditor.jobs import ExtractOptions, ExtractResult, run_extract
from auditor.testing import make_random_sae

WEATHER = "rain cloud storm wind snow thunder cold forecast umbrella sky".split()
SPORT = "goal match team score player coach league ball season win".split()
FILLER = "the a and then we saw it was very".split()
CONFIG = ExtractConfig(poolings=("max", "mean"), max_length=24, max_windows=2, raw_mean=True)


def extract_to(data: Path, out: Path, *, model: Path, sae: Path, config: ExtractConfig,
               **options: Any) -> ExtractResult:
    """Extract ``data`` (ids in column ``id``) with ``config``'s settings into ``out``."""
    opts = ExtractOptions(model=str(model), saes=(str(sae),), id_column="id", **options)
    return run_extract(str(data), out=out, options=opts.with_config(config.to_dict()))


def _texts(n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "weather" if i % 3 else "sport"  # imbalanced: 1/3 sport
        words = WEATHER if label == "weather" else SPORT
        text = " ".join(rng.choice(words if rng.random() < 0.6 else FILLER)
                        for _ in range(rng.randint(6, 30)))
        rows.append({"id": f"{label[0]}{seed}-{i}", "text": text, "label": label})
    return rows


@pytest.fixture(scope="module")
def sae():
    return make_random_sae(layer=2, d_sae=128, k=8, seed=3)


@pytest.fixture(scope="module")
def sae_dir(sae, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sae.save(tmp_path_factory.mktemp("sae") / "s")


def extract_splits(make_rows: Callable[[int, int], list[dict[str, Any]]], root: Path, *,
                   model: Path, sae_dir: Path, passthrough: tuple[str, ...]
                   ) -> dict[str, tuple[Path, Path, list[dict[str, Any]]]]:
    """Write a 90-row train and a 45-row test JSONL from ``make_rows(n, seed)`` and extract
    each into a store; per split: (store, data file, rows)."""
    out = {}
    for split, n, seed in (("train", 90, 0), ("test", 45, 1)):
        rows = make_rows(n, seed)
        data = root / f"{split}.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        extract_to(data, root / f"{split}.store", model=model, sae=sae_dir, config=CONFIG,
                   passthrough=tuple(passthrough))
        out[split] = (root / f"{split}.store", data, rows)
    return out


@pytest.fixture(scope="module")
def stores(tiny_llama_dir: Path, sae_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    splits = extract_splits(_texts, tmp_path_factory.mktemp("heads-data"), model=tiny_llama_dir,
                            sae_dir=sae_dir, passthrough=("label",))
    return {split: (store, data, {r["id"]: r["text"] for r in rows})
            for split, (store, data, rows) in splits.items()}


@pytest.fixture(scope="module")
def split(stores):
    store, _, texts = stores["train"]
    return load_split(store, "label", texts=texts)




def save_domain_head(split: Any, directory: Path) -> Path:
    """The sport-vs-weather head most tests apply (``domain``, positive class ``sport``),
    trained on ``split`` and saved to ``directory / "domain"``."""
    from auditor.heads import save_head, train_head

    head = train_head("domain", split, candidate="sae-max-log1p", folds=3,
                      positive_class="sport")
    return save_head(head, directory / "domain")
