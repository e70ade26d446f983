"""Finding a feature dictionary by the SAE's sha256: each place, their order, a --labels
directory of another SAE, the note when there is none, $AUDITOR_DICTIONARY_PATH."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest

from auditor.errors import ProvenanceMismatch, StoreError
from auditor.features.files import FORMAT, VERSION, write_dictionary_files
from auditor.features.locate import (
    DICTIONARY_PATH_ENV,
    find_dictionary,
    load_annotations,
    missing_note,
    sae_of,
)
from auditor.features.stats import CONTEXT_SCHEMA

SHA = "a" * 64
OTHER = "b" * 64


def write_dictionary(root: Path, sae_sha256: str, *, n_features: int = 8,
                     tag: str = "") -> Path:
    """A small valid dictionary of the SAE ``sae_sha256``: feature ``f`` is labelled
    ``f"{tag}label-{f}"``, its top context is ``f"the «tok{f}» context"``."""
    features = pl.DataFrame({
        "feature": pl.Series(range(n_features), dtype=pl.UInt32),
        "auto_label": [f"{tag}label-{f}" for f in range(n_features)],
        "p50": pl.Series([1.0 + f for f in range(n_features)], dtype=pl.Float32),
    })
    rows = [{"feature": f, "rank": r, "activation": 5.0 - r, "doc_id": f"d{f}",
             "position": 1, "token_id": f, "token": f"tok{f}",
             "text": f"{'the' if r == 0 else 'another'} «tok{f}» context",
             "source": "test"}
            for f in range(n_features) for r in (1, 0)]  # written out of rank order
    contexts = pl.DataFrame(rows, schema=CONTEXT_SCHEMA)
    manifest = {"format": FORMAT, "version": VERSION,
                "provenance": {"sae": {"sha256": sae_sha256, "d_sae": n_features}}}
    write_dictionary_files(root, features, contexts, manifest)
    return root


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An environment whose models dir and data home are empty directories."""
    (tmp_path / "models").mkdir()
    (tmp_path / "data").mkdir()
    return {"AUDITOR_MODELS_DIR": str(tmp_path / "models"),
            "XDG_DATA_HOME": str(tmp_path / "data")}


def _sae_file(tmp_path: Path) -> Path:
    sae = tmp_path / "somewhere" / "my-sae" / "sae.safetensors"
    sae.parent.mkdir(parents=True)
    sae.write_bytes(b"weights")
    return sae


def test_beside_the_sae(tmp_path: Path, env: dict[str, str]) -> None:
    sae = _sae_file(tmp_path)
    write_dictionary(sae.parent / "dictionary", SHA)
    found = find_dictionary(SHA, sae_path=sae, environ=env)
    assert found is not None and found.path == sae.parent / "dictionary"
    assert found.origin == "beside the SAE"
    # also given the SAE's directory, and as <file>.dictionary
    assert find_dictionary(SHA, sae_path=sae.parent, environ=env) == found
    write_dictionary(sae.parent / "sae.safetensors.dictionary", SHA)
    assert find_dictionary(SHA, sae_path=sae, environ=env).path.name == \
        "sae.safetensors.dictionary"


def test_matched_by_hash_not_by_place(tmp_path: Path, env: dict[str, str]) -> None:
    sae = _sae_file(tmp_path)
    write_dictionary(sae.parent / "dictionary", OTHER)  # beside, but of another SAE
    assert find_dictionary(SHA, sae_path=sae, environ=env) is None
    good = write_dictionary(Path(env["AUDITOR_MODELS_DIR"]) / "dictionaries" / "x", SHA)
    found = find_dictionary(SHA, sae_path=sae, environ=env)
    assert found is not None and found.path == good and found.origin == "models dir"


def test_models_dir_layouts(env: dict[str, str]) -> None:
    models = Path(env["AUDITOR_MODELS_DIR"])
    in_sae = write_dictionary(models / "sae" / "some-sae" / "dictionary", SHA)
    found = find_dictionary(SHA, environ=env)  # no SAE path: found by hash alone
    assert found is not None and found.path == in_sae and found.origin == "models dir"
    by_sha = write_dictionary(models / "dictionaries" / SHA, SHA)
    assert find_dictionary(SHA, environ=env).path == by_sha  # dictionaries/<sha> first


def test_data_home(env: dict[str, str]) -> None:
    home = write_dictionary(Path(env["XDG_DATA_HOME"]) / "auditor" / "dictionaries" / "d",
                            SHA)
    found = find_dictionary(SHA, environ=env)
    assert found is not None and found.path == home and found.origin == "data home"


def test_env_var_with_several_dirs(tmp_path: Path, env: dict[str, str]) -> None:
    first, second = tmp_path / "p1", tmp_path / "p2"
    write_dictionary(first / "other", OTHER)
    wanted = write_dictionary(second / "mine", SHA)
    env[DICTIONARY_PATH_ENV] = os.pathsep.join([str(first), "", str(second)])
    found = find_dictionary(SHA, environ=env)
    assert found is not None and found.path == wanted
    assert found.origin == f"${DICTIONARY_PATH_ENV}"
    # a directory on the path may be a dictionary itself
    env[DICTIONARY_PATH_ENV] = str(wanted)
    assert find_dictionary(SHA, environ=env).path == wanted


def test_order(tmp_path: Path, env: dict[str, str]) -> None:
    """--labels, beside the SAE, models dir, data home, $AUDITOR_DICTIONARY_PATH."""
    sae = _sae_file(tmp_path)
    places = [
        ("$AUDITOR_DICTIONARY_PATH", tmp_path / "extra" / "d"),
        ("data home", Path(env["XDG_DATA_HOME"]) / "auditor" / "dictionaries" / "d"),
        ("models dir", Path(env["AUDITOR_MODELS_DIR"]) / "dictionaries" / SHA),
        ("beside the SAE", sae.parent / "dictionary"),
    ]
    env[DICTIONARY_PATH_ENV] = str(tmp_path / "extra")
    for origin, path in places:  # each new one, earlier in the order, wins
        write_dictionary(path, SHA)
        found = find_dictionary(SHA, sae_path=sae, environ=env)
        assert found is not None and (found.origin, found.path) == (origin, path)
    given = write_dictionary(tmp_path / "given", SHA)
    found = find_dictionary(SHA, labels_dir=given, sae_path=sae, environ=env)
    assert found is not None and (found.origin, found.path) == ("--labels", given)


def test_labels_dir_of_another_sae_names_both_hashes(tmp_path: Path,
                                                     env: dict[str, str]) -> None:
    sae = _sae_file(tmp_path)
    write_dictionary(sae.parent / "dictionary", SHA)  # a right one elsewhere is no excuse
    wrong = write_dictionary(tmp_path / "wrong", OTHER)
    with pytest.raises(ProvenanceMismatch) as err:
        find_dictionary(SHA, labels_dir=wrong, sae_path=sae, environ=env)
    assert SHA in err.value.message and OTHER in err.value.message
    assert str(wrong) in err.value.message and err.value.field == "labels"
    with pytest.raises(StoreError, match="auditor features build"):
        find_dictionary(SHA, labels_dir=tmp_path / "empty", environ=env)
    # a directory of dictionaries: the SAE's one is picked by hash
    write_dictionary(tmp_path / "many" / "one", OTHER)
    mine = write_dictionary(tmp_path / "many" / "two", SHA)
    assert find_dictionary(SHA, labels_dir=tmp_path / "many", environ=env).path == mine


def test_missing_gives_the_build_command(tmp_path: Path, env: dict[str, str]) -> None:
    sae = _sae_file(tmp_path)
    assert find_dictionary(SHA, sae_path=sae, environ=env) is None
    notes = load_annotations(SHA, sae_path=sae, environ=env)
    assert notes.labels == {} and notes.located is None
    assert notes.note == missing_note(SHA, sae_path=sae, environ=env)
    assert f"auditor features build --corpus CORPUS.jsonl --sae {sae}" in notes.note
    assert "--labels DIR" in notes.note and SHA[:16] in notes.note
    assert notes.info() == {"path": None, "origin": None, "note": notes.note}
    # without a known SAE path the command still says which SAE
    assert f"sha256 {SHA[:16]}" in missing_note(SHA, environ=env)


def test_annotations_label_and_top_example(env: dict[str, str]) -> None:
    write_dictionary(Path(env["AUDITOR_MODELS_DIR"]) / "dictionaries" / SHA, SHA)
    notes = load_annotations(SHA, environ=env)
    assert notes.label(3) == "label-3" and notes.example(3) == "the «tok3» context"
    assert notes.note is None and notes.info()["origin"] == "models dir"
    assert load_annotations(None, environ=env).note is not None  # no single SAE


def test_sae_of_resolves_relative_to_models_dir(tmp_path: Path, env: dict[str, str]) -> None:
    models = Path(env["AUDITOR_MODELS_DIR"])
    (models / "sae" / "s").mkdir(parents=True)
    (models / "sae" / "s" / "sae.safetensors").write_bytes(b"w")
    card = {"saes": {"l9": {"path": "sae/s/sae.safetensors", "relative_to": "models",
                            "sha256": SHA}}}
    assert sae_of(card, environ=env) == (SHA, models / "sae" / "s" / "sae.safetensors")
    gone = {"saes": {"l9": {"path": "/no/such/sae.safetensors", "sha256": SHA}}}
    assert sae_of(gone, environ=env) == (SHA, None)  # found by hash alone then
    two = {"saes": {"a": {"sha256": SHA}, "b": {"sha256": OTHER}}}
    assert sae_of(two, environ=env) == (None, None)
    assert sae_of(two, sae="b", environ=env) == (OTHER, None)
