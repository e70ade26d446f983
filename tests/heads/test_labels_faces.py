"""Labels in every face: classify --explain, explain, probe predict --explain, report and
heads show print each explained feature's label and an example context from the SAE's
dictionary, found by the SAE's sha256 from another working directory and another home;
without a dictionary each face says how to build one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from auditor.cli import main
from auditor.features.locate import DICTIONARY_PATH_ENV, sae_of
from auditor.store import read_metadata
from tests.features.test_locate import write_dictionary
from tests.heads.conftest import save_domain_head

TEXT = "goal match team score goal rain"
BUILD = "auditor features build --corpus CORPUS.jsonl --sae"


@pytest.fixture(scope="module")
def head_dir(split: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_domain_head(split, tmp_path_factory.mktemp("labelled-head"))


@pytest.fixture(scope="module")
def sae_sha(stores: Any) -> str:
    sha, _ = sae_of(read_metadata(stores["test"][0]))
    assert sha is not None
    return sha


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Another working directory, home and data home than the ones the head was built in."""
    for name in ("cwd", "home", "data"):
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv(DICTIONARY_PATH_ENV, raising=False)
    return tmp_path


def _install(how: str, root: Path, sha: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A dictionary of the SAE put where ``how`` says; the extra CLI arguments it needs."""
    if how == "data home":
        write_dictionary(root / "data" / "auditor" / "dictionaries" / "mine", sha,
                         n_features=128)
        return []
    if how == "env":
        write_dictionary(root / "dicts" / "mine", sha, n_features=128)
        monkeypatch.setenv(DICTIONARY_PATH_ENV, str(root / "dicts"))
        return []
    write_dictionary(root / "given", sha, n_features=128)
    return ["--labels", str(root / "given")]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def _features_of(predictions: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    return [e for row in rows for e in row["domain.explain"]]


@pytest.mark.parametrize("how", ["data home", "env", "--labels"])
def test_every_face_prints_labels_and_examples(
        how: str, head_dir: Path, stores: Any, sae_sha: str, tiny_llama_dir: Path,
        sae_dir: Path, elsewhere: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    extra = _install(how, elsewhere, sae_sha, monkeypatch)
    run = ["--head", str(head_dir), "--model", str(tiny_llama_dir), "--sae", str(sae_dir)]

    out = _run(["classify", TEXT, *run, "--explain", "3", *extra], capsys)
    assert "label-" in out and "e.g. the «tok" in out and BUILD not in out

    out = _run(["explain", TEXT, *run, "--top", "3", *extra], capsys)
    assert "label-" in out and "e.g. the «tok" in out and BUILD not in out
    out = _run(["explain", TEXT, *run, "--top", "3", "--json", *extra], capsys)
    present = json.loads(out)["documents"][0]["domain"]["present"]
    assert present and all(f["label"] == f"label-{f['feature']}" and
                           f["example"] == f"the «tok{f['feature']}» context" for f in present)

    store = stores["test"][0]
    predictions = elsewhere / "cwd" / "p.jsonl"
    out = _run(["probe", "predict", str(head_dir), "--features", str(store), "--out",
                str(predictions), "--explain", "3", *extra], capsys)
    assert "feature labels from" in out
    feats = _features_of(predictions)
    assert feats and all(e["label"] == f"label-{e['feature']}" and
                         e["example"] == f"the «tok{e['feature']}» context" for e in feats)

    out = _run(["report", str(store), "--out", "report", "--predictions", str(predictions),
                "--format", "md", *extra], capsys)
    assert "feature labels from" in out
    md = (elsewhere / "cwd" / "report" / "report.md").read_text()
    assert "label-" in md and "«tok" in md

    out = _run(["heads", "show", str(head_dir), "--features", "3", *extra], capsys)
    assert "label-" in out and "e.g. the «tok" in out and BUILD not in out


def test_without_a_dictionary_every_face_says_how_to_build_one(
        head_dir: Path, stores: Any, tiny_llama_dir: Path, sae_dir: Path, elsewhere: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    run = ["--head", str(head_dir), "--model", str(tiny_llama_dir), "--sae", str(sae_dir)]
    store = stores["test"][0]
    predictions = elsewhere / "cwd" / "p.jsonl"
    for argv in (["classify", TEXT, *run, "--explain", "3"],
                 ["explain", TEXT, *run, "--top", "3"],
                 ["probe", "predict", str(head_dir), "--features", str(store), "--out",
                  str(predictions), "--explain", "3"],
                 ["report", str(store), "--out", "report", "--predictions", str(predictions),
                  "--format", "md"],
                 ["heads", "show", str(head_dir), "--features", "3"]):
        out = _run(argv, capsys)
        assert BUILD in out and "label-" not in out, argv[0]
    assert all(e["label"] is None and e["example"] is None
               for e in _features_of(predictions))


def test_labels_of_another_sae_are_refused(head_dir: Path, sae_sha: str, elsewhere: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    other = write_dictionary(elsewhere / "other", "0" * 64, n_features=128)
    assert main(["heads", "show", str(head_dir), "--labels", str(other)]) != 0
    err = capsys.readouterr().err
    assert sae_sha in err and "0" * 64 in err


def _recard_script() -> Any:
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "scripts" / "recard_heads.py"
    spec = importlib.util.spec_from_file_location("recard_heads", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cards_record_no_machine_paths(head_dir: Path, stores: Any, tmp_path: Path) -> None:
    """A saved head's card and the shipped heads' cards hold no absolute path; a card's
    SAE is found relative to the models dir, else by its sha256."""
    import shutil

    from auditor.defaults import models_dir
    from auditor.heads.head import portable_provenance, resolve_sae

    recard = _recard_script()
    card = json.loads((head_dir / "probe" / "card.json").read_text())
    assert recard._absolute_paths(card) == []
    assert recard.main(["--check"]) == 0  # the shipped heads
    for shipped in sorted((models_dir() / "heads").glob("*/probe/card.json")):
        saes = json.loads(shipped.read_text())["provenance"]["saes"]
        info = next(iter(saes.values()))
        assert info["relative_to"] == "models" and resolve_sae(info) is not None
    # the store records the SAE by absolute path; under a models dir it becomes relative
    metadata = read_metadata(stores["test"][0])
    info = next(iter(metadata["saes"].values()))
    models = tmp_path / "models"
    (models / "sae" / "tiny").mkdir(parents=True)
    shutil.copy(info["path"], models / "sae" / "tiny" / "sae.safetensors")
    moved = {**metadata, "saes": {"k": {**info, "path": str(models / "sae" / "tiny" /
                                                          "sae.safetensors")}}}
    portable = portable_provenance(moved, models_dir=models)["saes"]["k"]
    assert portable["path"] == "sae/tiny/sae.safetensors"
    assert portable["relative_to"] == "models"
    assert resolve_sae(portable, models_dir=models) == models / "sae" / "tiny" / \
        "sae.safetensors"
    lost = {**portable, "path": "gone/sae.safetensors"}  # moved: found by its hash
    assert resolve_sae(lost, models_dir=models) == models / "sae" / "tiny" / "sae.safetensors"
    assert resolve_sae({**lost, "sha256": "0" * 64}, models_dir=models) is None


def test_audit_labels_from_a_dictionary_found_by_hash(
        head_dir: Path, stores: Any, sae_sha: str, tiny_llama_dir: Path, sae_dir: Path,
        elsewhere: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import polars as pl

    _install("env", elsewhere, sae_sha, monkeypatch)
    _run(["audit", str(stores["test"][1]), "--out", "audit", "--head", str(head_dir),
          "--model", str(tiny_llama_dir), "--sae", str(sae_dir), "--explain", "2",
          "--format", "md", "--id-column", "id"], capsys)
    frame = pl.read_parquet(elsewhere / "cwd" / "audit" / "predictions.parquet")
    feats = [e for row in frame["domain.explain"].to_list() for e in row]
    assert feats and all(e["label"] == f"label-{e['feature']}" and
                         e["example"] == f"the «tok{e['feature']}» context" for e in feats)
    assert "«tok" in (elsewhere / "cwd" / "audit" / "report.md").read_text()
