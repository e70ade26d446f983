"""Build the SAE training corpus: a shuffled genre mix of real text from package registries.

Writes ``<out>/sae-corpus.jsonl`` (one ``{"id", "text", "source", "label"}`` per line) and
``<out>/sae-corpus.card.json`` (per-source counts, characters, versions, licences).

Only TRAIN splits are used, so probes evaluated on the TEST splits (newsgroups, reuters,
the 20 % hash hold-out of spamassassin, …) never see text the SAE was trained on. Long
documents are cut into chunks of at most ``--max-chars`` at paragraph boundaries, chunks
shorter than ``--min-chars`` are dropped, and each source is capped at ``--cap`` chunks,
drawn round-robin across its labels so no genre or class dominates.

Usage::

    python scripts/build_corpora.py [--out data] [--cap 2500] [--seed 0]

A second, disjoint corpus (fresh text for continuing a trained SAE, whose held-out split
no earlier run has seen) excludes every document of the first::

    python scripts/build_corpora.py --name sae-corpus-2 --exclude data/sae-corpus.jsonl

and ``--exclude`` repeats, so a third leaves out both::

    python scripts/build_corpora.py --name sae-corpus-3 --exclude data/sae-corpus.jsonl \
        --exclude data/sae-corpus-2.jsonl

The labelled mixes the v2 heads train on (:mod:`auditor.corpora.mixes`) are written with
``--mix`` instead, with a card of sources, versions, licences, gaps and counts::

    python scripts/build_corpora.py --mix safety_v2 --mix topic_v2 --mix quality_v2

The archives are downloaded into the cache (``$AUDITOR_DATA_CACHE`` or
``~/.cache/auditor/data``) on first use; the output folder is not committed.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from auditor.corpora import SOURCES, chunk_text, load
from auditor.corpora.sources import archive_versions
from auditor.errors import RowError
from auditor.io import input_fingerprint, read_documents

__all__ = ["SAE_SOURCES", "build", "build_mix_corpus", "main", "read_excluded",
           "sample_balanced"]

#: Sources mixed into the SAE corpus (insults is probe-only).
SAE_SOURCES: tuple[str, ...] = (
    "brown", "newsgroups", "reuters", "spamassassin", "debian_docs", "fortunes",
)

REPO = Path(__file__).resolve().parent.parent


def sample_balanced(
    docs: Sequence[dict[str, str]], *, cap: int, rng: random.Random
) -> list[dict[str, str]]:
    """Take up to ``cap`` documents, round-robin across labels, each label shuffled.

    Parameters
    ----------
    docs
        Candidate documents (each with an optional ``"label"``).
    cap
        Most documents to return.
    rng
        Source of randomness (seeded by the caller).

    Returns
    -------
    list of dict
        The chosen documents, in round-robin order.
    """
    by_label: dict[str, list[dict[str, str]]] = collections.defaultdict(list)
    for doc in docs:
        by_label[doc.get("label", "")].append(doc)
    queues = []
    for label in sorted(by_label):
        group = by_label[label]
        rng.shuffle(group)
        queues.append(group)
    out: list[dict[str, str]] = []
    depth = 0
    while len(out) < cap and queues:
        queues = [q for q in queues if depth < len(q)]
        for q in queues:
            if len(out) >= cap:
                break
            out.append(q[depth])
        depth += 1
    return out


def _base_id(chunk_id: str) -> str:
    # Chunks of one document are "<doc id>#<k>"; exclusion works on whole documents.
    return chunk_id.split("#", 1)[0]


def read_excluded(paths: Iterable[Path]) -> set[tuple[str, str]]:
    """``(source, document id)`` of every document in the given corpus files.

    Raises
    ------
    auditor.errors.InputError
        A file is missing or malformed, or a row lacks a string ``id`` or ``source``; the
        error names the file, the row and the field.
    """
    seen: set[tuple[str, str]] = set()
    for path in paths:
        for doc in read_documents(path, id_column="id", passthrough=("source",)):
            source = doc.extra["source"]
            if not isinstance(source, str):
                raise RowError("source is missing or not a string", path=path, row=doc.row,
                               field="source")
            seen.add((source, _base_id(doc.doc_id)))
    return seen


def _chunks(
    docs: Iterable[dict[str, str]], *, max_chars: int, min_chars: int
) -> list[dict[str, str]]:
    out = []
    for doc in docs:
        pieces = chunk_text(doc["text"], max_chars=max_chars)
        for k, piece in enumerate(pieces):
            if len(piece) < min_chars:
                continue
            rec = {"id": doc["id"] if len(pieces) == 1 else f"{doc['id']}#{k}",
                   "text": piece, "source": doc["source"]}
            if "label" in doc:
                rec["label"] = doc["label"]
            out.append(rec)
    return out


def build(
    out_dir: Path,
    *,
    sources: Sequence[str] = SAE_SOURCES,
    cap: int = 2500,
    max_chars: int = 1500,
    min_chars: int = 20,
    seed: int = 0,
    cache: Path | None = None,
    name: str = "sae-corpus",
    exclude: Sequence[Path] = (),
) -> dict[str, Any]:
    """Build the corpus and its card into ``out_dir``; return the card.

    Parameters
    ----------
    out_dir
        Output folder (created).
    sources
        Source names to mix; their ``"train"`` split only.
    cap
        Most chunks per source.
    max_chars, min_chars
        Longest chunk; shortest chunk kept.
    seed
        Seed of the sampling and the final shuffle.
    cache
        Archive cache folder; the default cache when ``None``.
    name
        Output stem: ``<name>.jsonl`` and ``<name>.card.json``.
    exclude
        Corpus files whose documents (every chunk of them) are left out, so the new corpus
        shares no document with them.

    Returns
    -------
    dict
        The card written to ``<name>.card.json``.
    """
    rng = random.Random(seed)
    excluded = read_excluded(exclude)
    mixed: list[dict[str, str]] = []
    per_source: dict[str, Any] = {}
    for source in sources:
        started = time.monotonic()
        src = SOURCES[source]
        archives = src.archives(cache)
        train_docs = [d for d in load(source, split="train", cache=cache)]
        chunks = [c for c in _chunks(train_docs, max_chars=max_chars, min_chars=min_chars)
                  if (c["source"], _base_id(c["id"])) not in excluded]
        chosen = sample_balanced(chunks, cap=cap, rng=rng)
        mixed.extend(chosen)
        versions = archive_versions(src, archives)
        per_source[source] = {
            "registry": src.registry,
            "packages": list(src.packages),
            "versions": versions,
            "archives": [a.name for a in archives],
            "licence": src.licence,
            "description": src.description,
            "train_documents": len(train_docs),
            "train_chunks": len(chunks),
            "documents": len(chosen),
            "chars": sum(len(d["text"]) for d in chosen),
            "labels": dict(sorted(collections.Counter(d.get("label", "") for d in chosen)
                                  .items())),
        }
        print(f"{source:13s} train docs {len(train_docs):6d}  chunks {len(chunks):6d}  "
              f"kept {len(chosen):5d}  ({time.monotonic() - started:.1f} s)", file=sys.stderr)
    rng.shuffle(mixed)
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = out_dir / f"{name}.jsonl"
    tmp = corpus.with_name(corpus.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for doc in mixed:
            fh.write(json.dumps(doc, ensure_ascii=False) + "\n")
    os.replace(tmp, corpus)
    card = {
        "corpus": corpus.name,
        # the same fingerprint `auditor sae train --corpus` records for its cache
        "fingerprint": input_fingerprint(corpus),
        "documents": len(mixed),
        "chars": sum(len(d["text"]) for d in mixed),
        "split": "train",
        "cap_per_source": cap,
        "max_chars": max_chars,
        "min_chars": min_chars,
        "seed": seed,
        "excluded_corpora": [str(p) for p in exclude],
        "excluded_documents": len(excluded),
        "sampling": "per source: train split, chunked at paragraph boundaries, round-robin "
                    "across labels up to the cap; then one global shuffle",
        "sources": per_source,
    }
    card_path = out_dir / f"{name}.card.json"
    tmp_card = card_path.with_name(card_path.name + ".tmp")
    tmp_card.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp_card, card_path)
    return card


def build_mix_corpus(out: Path, name: str, *, seed: int = 0) -> dict[str, Any]:
    """Write one labelled mix of :data:`auditor.corpora.mixes.MIXES` (the v2 heads' data).

    Writes ``<out>/<name>.{train,test}.jsonl`` (rows ``id, text, label, source`` and, where
    known, ``fine_label, lang, generator``) and ``<out>/<name>.card.json``: the mix's parts,
    every source's packages, versions and licence, the gaps, the weak labels and the counts
    per split, label, source and language.

    Parameters
    ----------
    out
        Output folder (created).
    name
        A key of ``MIXES``.
    seed
        Seeds the sampling and the weak-label junk.

    Returns
    -------
    dict
        The card.
    """
    from auditor.corpora.mixes import MIXES, build_mix, mix_counts

    mix = MIXES[name]
    out.mkdir(parents=True, exist_ok=True)
    sources: dict[str, Any] = {}
    for source in sorted({p.source for p in mix.parts}):
        src = SOURCES[source]
        sources[source] = {"registry": src.registry,
                           "versions": archive_versions(src, src.archives(None)),
                           "licence": src.licence, "description": src.description}
    card: dict[str, Any] = {**mix.to_dict(), "seed": seed, "sources": sources, "splits": {}}
    for split in ("train", "test"):
        docs = build_mix(mix, split=split, seed=seed)
        path = out / f"{name}.{split}.jsonl"
        path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs),
                        encoding="utf-8")
        card["splits"][split] = mix_counts(docs)
    (out / f"{name}.card.json").write_text(json.dumps(card, indent=1, ensure_ascii=False)
                                           + "\n", encoding="utf-8")
    return card


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "data")
    parser.add_argument("--cap", type=int, default=2500)
    parser.add_argument("--max-chars", type=int, default=1500)
    parser.add_argument("--min-chars", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--sources", nargs="+", default=list(SAE_SOURCES),
                        choices=sorted(SOURCES))
    parser.add_argument("--name", default="sae-corpus",
                        help="output stem: <out>/<name>.jsonl and <name>.card.json")
    parser.add_argument("--exclude", type=Path, action="append", default=[],
                        help="corpus .jsonl whose documents to leave out (repeatable)")
    parser.add_argument("--mix", action="append", default=[],
                        help="instead of the SAE corpus, write this labelled mix of "
                             "auditor.corpora.mixes (repeatable): <out>/<mix>.{train,test}"
                             ".jsonl and <mix>.card.json")
    args = parser.parse_args(argv)
    if args.mix:
        for name in args.mix:
            mix_card = build_mix_corpus(args.out, name, seed=args.seed)
            print(f"wrote {name}: " + ", ".join(
                f"{split} {c['documents']} {c['labels']}"
                for split, c in mix_card["splits"].items()))
        return 0
    card = build(args.out, sources=args.sources, cap=args.cap, max_chars=args.max_chars,
                 min_chars=args.min_chars, seed=args.seed, cache=args.cache,
                 name=args.name, exclude=args.exclude)
    print(f"wrote {card['documents']} documents ({card['chars']:,} chars) to "
          f"{args.out / (args.name + '.jsonl')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
