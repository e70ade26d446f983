"""Build samples/audit-sample.jsonl: a few hundred real texts for the README's main command.

Test splits only (so the sample never overlaps what auditor's SAE was trained on), a fixed
seed, texts cut to at most 1,500 characters at paragraph boundaries. Every row carries its
source and licence; samples/README.md has the table. Run after the corpora are fetchable:

    .venv/bin/python scripts/build_samples.py
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

from auditor.corpora import SOURCES, chunk_text, load

ROOT = Path(__file__).resolve().parents[1]
PLAN = {  # source: documents
    "insults": 80,        # social-media comments, ~1/4 insulting
    "spamassassin": 70,   # e-mails, spam and ham
    "newsgroups": 50,     # Usenet posts (lowercased letters only, as shipped)
    "brown": 40,          # edited American English prose
    "fortunes": 30,       # German, Russian and Portuguese
    "debian_docs": 30,    # technical documentation
}


def main() -> None:
    rng = random.Random(0)
    rows: list[dict[str, str]] = []
    for source, n in PLAN.items():
        docs = [d for d in load(source, split="test") if len(d["text"].strip()) >= 20]
        rng.shuffle(docs)
        for d in docs[:n]:
            text = chunk_text(d["text"], max_chars=1500)[0]
            rows.append({"id": f"{source}-{d['id']}", "source": source,
                         "label": str(d.get("label", "")), "text": text,
                         "licence": SOURCES[source].licence})
    rng.shuffle(rows)
    out = ROOT / "samples" / "audit-sample.jsonl"
    with out.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"wrote {out}: {len(rows)} rows", dict(Counter(r["source"] for r in rows)))


if __name__ == "__main__":
    main()
