"""Filter steps and the Filter on documents in Python: each step's decisions and reasons,
pipelines from configs and files, and errors that name the step and field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from auditor.errors import ConfigError, InputFileError
from auditor.filter import (
    Batch,
    Dedup,
    FeatureRule,
    Filter,
    HeadThreshold,
    LabelSet,
    Length,
    Step,
    build_steps,
    load_pipeline_file,
    pipeline_config,
)
from auditor.io import Document

EXPLAIN = [{"feature": 7, "contribution": 1.5, "activation": 2.0, "label": "insults"},
           {"feature": 3, "contribution": -0.2, "activation": 0.0, "label": None}]


def _batch(**columns: list[Any]) -> Batch:
    frame = pl.DataFrame(columns, strict=False)
    n = frame.height
    return Batch(frame, [f"d{i}" for i in range(n)], list(range(n)))


def test_length_bounds_are_half_open_and_reasons_carry_the_value() -> None:
    b = _batch(text=["abcd", "abc", "one two three four five", "ab cd"])
    out = Length(min_chars=4, max_words=4).decide(b)
    assert out[0] is None
    assert out[1]["rule"] == "chars >= 4" and out[1]["value"] == 3
    assert out[2]["rule"] == "words < 4" and out[2]["value"] == 5
    assert out[3] is None
    assert Length(max_chars=4).decide(b)[0]["rule"] == "chars < 4"  # 4 is out: [min, max)


def test_head_threshold_drops_at_max_with_label_and_features() -> None:
    b = _batch(text=["a", "b", "c"], **{"safety.p.insult": [0.2, 0.5, None],
                                         "safety.label": ["ok", "insult", None],
                                         "safety.explain": [[], EXPLAIN, []]})
    out = HeadThreshold(head="safety", cls="insult", max=0.5).decide(b)
    assert out[0] is None
    assert out[1]["value"] == 0.5 and out[1]["label"] == "insult"
    assert out[1]["rule"] == "safety.p.insult < 0.5"
    assert [f["feature"] for f in out[1]["features"]] == [7, 3]
    assert out[1]["features"][0]["label"] == "insults"
    assert out[2]["rule"] == "safety.p.insult is missing"


def test_label_set_keep_drop_and_multilabel() -> None:
    b = _batch(text=["a", "b", "c"], **{"topic.label": ["sport", "law", None]})
    assert [r is None for r in LabelSet(head="topic", keep=("sport",)).decide(b)] == \
        [True, False, False]
    assert [r is None for r in LabelSet(head="topic", drop=("law",)).decide(b)] == \
        [True, False, True]
    m = _batch(text=["a", "b"], **{"safety.label": ["hate", None],
                                   "safety.labels": [["hate", "insult"], []]})
    out = LabelSet(head="safety", drop=("insult",)).decide(m)
    assert out[0]["value"] == "insult" and out[1] is None


def test_feature_rule_reads_its_column_and_treats_null_as_not_fired() -> None:
    b = _batch(text=["a", "b", "c"], **{"feature.7434.max": [0.1, 0.9, None]})
    out = FeatureRule(index=7434, max=0.5, label="insults").decide(b)
    assert out[0] is None and out[2] is None
    assert out[1]["features"] == [{"feature": 7434, "pooling": "max", "activation": 0.9,
                                   "label": "insults"}]
    assert FeatureRule(index=3, pooling="mean", sae="l9", min=0.1).column == \
        "feature.l9.3.mean"


def test_exact_and_near_dedup_keep_the_first_and_name_it() -> None:
    texts = ["The cat sat on the mat today, said the report",
             "the CAT sat on the mat today - said the report!",
             "The cat sat on the mat today, said the reporter",
             "Completely unrelated words about the stock market and its moves"]
    exact = Dedup().decide(_batch(text=texts))
    assert exact[0] is None and exact[1]["duplicate_of"] == "d0" and exact[2] is None
    near = Dedup(method="near", threshold=0.5, shingle_size=2).decide(_batch(text=texts))
    assert near[0] is None and near[3] is None
    assert near[2]["duplicate_of"] == "d0" and 0.5 <= near[2]["similarity"] < 1.0


def test_dedup_remembers_across_batches_until_reset() -> None:
    step = Dedup()
    assert step.decide(_batch(text=["same words"]))[0] is None
    assert step.decide(_batch(text=["Same words!"]))[0]["duplicate_of"] == "d0"
    step.reset()
    assert step.decide(_batch(text=["same words"]))[0] is None


class NoDigits(Step):
    """A user's step, by import path."""

    kind = "no-digits"

    def __init__(self, limit: int = 0) -> None:
        self.limit = limit

    def decide(self, batch: Batch) -> list[Any]:
        return [{"rule": f"digits <= {self.limit}"}
                if sum(c.isdigit() for c in t) > self.limit else None for t in batch.texts]


def drop_short(batch: Batch, n: int = 3) -> list[Any]:
    return ["too short" if len(t) < n else None for t in batch.texts]


def test_custom_steps_by_import_path() -> None:
    f = Filter([{"type": "custom", "path": "tests.filter.test_steps:NoDigits",
                 "args": {"limit": 1}},
                {"type": "custom", "path": "tests.filter.test_steps:drop_short",
                 "args": {"n": 4}}])
    kept = list(f.run(["abc 12", "abcd", "ab", "a1 bcd"]))
    assert kept == ["abcd", "a1 bcd"]
    reasons = [r for _, r in f.dropped]
    assert reasons[0]["rule"] == "digits <= 1" and reasons[0]["kind"] == "custom"
    assert reasons[1]["rule"] == "too short"
    with pytest.raises(ConfigError, match="cannot import"):
        Filter([{"type": "custom", "path": "tests.filter.nope:X"}])
    with pytest.raises(ConfigError, match=r"package.module:Name"):
        Filter([{"type": "custom", "path": "no_colon"}])


def test_filter_run_keeps_documents_as_given_and_counts_every_drop() -> None:
    docs: list[Any] = [{"text": "keep me please", "n": 1}, {"text": ""}, {"body": "x"},
                       "a plain string kept", Document(row=0, doc_id="z", text="no",
                                                       extra={"n": 5})]
    f = Filter([{"type": "length", "min_chars": 3}], batch_size=2)
    kept = list(f.run(docs))
    assert kept == [docs[0], docs[3]]
    assert [r["step"] for _, r in f.dropped] == ["input", "input", "length chars >= 3"]
    assert f.dropped[0][1]["value"] == "empty" and f.dropped[1][1]["value"] == "missing"
    stats = f.stats.to_dict()
    assert stats["documents"] == 5 and stats["kept"] == 2 and stats["dropped"] == 3


def test_keep_expression_reasons_name_the_failed_clause_and_head_features() -> None:
    docs = [{"text": "fine", "safety.p.insult": 0.1, "safety.label": "ok",
             "safety.explain": []},
            {"text": "bad", "safety.p.insult": 0.9, "safety.label": "insult",
             "safety.explain": EXPLAIN}]
    f = Filter(keep="safety.p.insult < 0.5 and len(text) > 1")
    assert [d["text"] for d in f.run(docs)] == ["fine"]
    reason = f.dropped[0][1]
    assert reason["rule"] == "safety.p.insult < 0.5"
    assert reason["value"] == {"safety.p.insult": 0.9}
    assert reason["heads"][0]["label"] == "insult"
    assert reason["heads"][0]["features"][0]["feature"] == 7


def test_steps_reading_scores_need_a_scorer() -> None:
    f = Filter([{"type": "head", "head": "safety", "class": "insult", "max": 0.5}])
    with pytest.raises(ConfigError, match="pass a scorer"):
        list(f.run(["some text"]))


def test_a_typo_in_a_column_is_refused_with_close_matches() -> None:
    f = Filter(keep="sorce == 'web'")
    with pytest.raises(ConfigError, match="source"):
        list(f.run([{"text": "x", "source": "web"}]))


def test_build_steps_errors_name_the_step_and_field() -> None:
    with pytest.raises(ConfigError, match=r"step 2 \(head\): unknown field\(s\) maxx"):
        build_steps([{"type": "length", "min_chars": 1},
                     {"type": "head", "head": "s", "class": "c", "maxx": 1}])
    with pytest.raises(ConfigError, match=r"step 1 \(head\): .*give min, max"):
        build_steps([{"type": "head", "head": "s", "class": "c"}])
    with pytest.raises(ConfigError, match="pooling must be one of"):
        build_steps([{"type": "feature", "index": 1, "pooling": "median", "max": 1}])
    with pytest.raises(ConfigError, match=r"min .* must be below max"):
        build_steps([{"type": "feature", "index": 1, "min": 2, "max": 1}])
    with pytest.raises(ConfigError, match="two pipeline steps are named"):
        build_steps([{"type": "dedup"}, {"type": "dedup"}])
    with pytest.raises(ConfigError, match=r"give one a name|a filter needs"):
        Filter([])


def test_pipeline_files_round_trip(tmp_path: Path) -> None:
    yaml_file = tmp_path / "p.yaml"
    yaml_file.write_text("steps:\n  - {type: length, min_chars: 3}\n"
                         "  - {type: head, head: safety, class: insult, max: 0.5}\n"
                         "  - {type: dedup, method: near, threshold: 0.7}\n")
    steps = build_steps(load_pipeline_file(yaml_file))
    config = pipeline_config(steps)
    assert config[1] == {"type": "head", "head": "safety", "class": "insult", "max": 0.5}
    json_file = tmp_path / "p.json"
    json_file.write_text(json.dumps(config))
    assert pipeline_config(build_steps(load_pipeline_file(json_file))) == config
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [unclosed\n")
    with pytest.raises(InputFileError, match=r"bad.yaml.*not a valid pipeline file"):
        load_pipeline_file(bad)
    (tmp_path / "tag.yaml").write_text("!!python/object/apply:os.system ['true']\n")
    with pytest.raises(InputFileError):  # safe_load: no object construction
        load_pipeline_file(tmp_path / "tag.yaml")
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(ConfigError, match="non-empty list of steps"):
        load_pipeline_file(tmp_path / "empty.json")
