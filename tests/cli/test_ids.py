"""One rule for document ids in every command: the input's `id` column when it has one, else
row numbers; each output says which; training takes labels from a kept column; and when
the two sides do not meet, the error says how each is keyed and the fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from auditor.cli import main
from auditor.store import read_metadata
from auditor.testing import make_random_sae
from tests.heads.conftest import _texts

EXTRACT = ["--pool", "max", "--pool", "mean", "--max-length", "24", "--max-windows", "2"]
TRAIN = ["--representation", "sae-max-log1p", "--folds", "3"]


@pytest.fixture(scope="module")
def setup(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("ids")
    sae = make_random_sae(layer=2, d_sae=128, k=8, seed=3).save(root / "sae")
    rows = _texts(60, 0)  # ids like 'w0-1', a label column
    with_ids = root / "data.jsonl"
    with_ids.write_text("".join(json.dumps(r) + "\n" for r in rows))
    no_ids = root / "plain.jsonl"
    no_ids.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "id"}) + "\n"
                              for r in rows))
    return {"root": root, "model": ["--model", str(tiny_llama_dir), "--sae", str(sae)],
            "with_ids": with_ids, "no_ids": no_ids}


def _extract(setup: dict[str, Any], data: Path, out: Path, *extra: str,
             capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["extract", str(data), "--out", str(out), *setup["model"], *EXTRACT,
                 *extra]) == 0
    return capsys.readouterr().out


def test_the_readme_recipe_trains_as_written(setup: dict[str, Any], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """`extract data.jsonl --keep label`, then `probe train --labels data.jsonl`, or from the
    kept column without --labels."""
    store = tmp_path / "feats"
    printed = _extract(setup, setup["with_ids"], store, "--keep", "label", capsys=capsys)
    assert "ids         column 'id'" in printed
    assert read_metadata(store)["input"]["read"]["id_column"] == "id"
    assert main(["probe", "train", "--features", str(store), "--labels",
                 str(setup["with_ids"]), "--head", "mine", "--out", str(tmp_path / "h1"),
                 *TRAIN]) == 0
    assert "wrote head 'mine'" in capsys.readouterr().out
    # no labels file: the store's kept column, with the TF-IDF baseline from its input
    assert main(["probe", "train", "--features", str(store), "--head", "mine",
                 "--out", str(tmp_path / "h2"), *TRAIN]) == 0
    assert "| tfidf" in capsys.readouterr().out
    assert main(["probe", "eval", str(tmp_path / "h2"), "--features", str(store)]) == 0
    assert "macro_f1" in capsys.readouterr().out


def test_row_numbers_on_both_sides_meet(setup: dict[str, Any], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "feats"
    assert "ids         row numbers" in _extract(setup, setup["no_ids"], store, capsys=capsys)
    assert read_metadata(store)["input"]["read"]["id_column"] is None
    assert main(["probe", "compare", "--features", str(store), "--labels",
                 str(setup["no_ids"]), "--candidates", "sae-max-log1p", "--folds", "3"]) == 0


def test_ids_that_do_not_meet_say_how_each_side_is_keyed(
        setup: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "feats"
    printed = _extract(setup, setup["with_ids"], store, "--id-column", "#row", capsys=capsys)
    assert "ids         row numbers" in printed
    train = ["probe", "train", "--features", str(store), "--labels", str(setup["with_ids"]),
             "--head", "h", *TRAIN]
    assert main([*train, "--out", str(tmp_path / "h1")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "no document of the store has a label" in err
    assert "the store's documents are keyed by row numbers (e.g. '0', '1')" in err
    assert "the labels file's rows by column 'id' (e.g. 's0-0', 'w0-1')" in err
    assert "use --id-column '#row'" in err and "id_column=" not in err
    # the fix it gives works
    assert main([*train, "--out", str(tmp_path / "h2"), "--id-column", "#row"]) == 0
    capsys.readouterr()
    # no labels file and no kept label column: say what the store keeps, and the fix
    assert main(["probe", "train", "--features", str(store), "--head", "h",
                 "--out", str(tmp_path / "h3"), *TRAIN]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "the store keeps no column 'label' (it keeps none)" in err and "use --labels" in err
