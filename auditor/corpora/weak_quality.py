"""Weak labels for text quality: documented heuristic rules, and junk derived from real text.

Two things live here, both deterministic and offline:

* :func:`quality_rules` — Gopher/C4-style document rules (Rae et al. 2021, "Scaling
  Language Models", appendix A; Raffel et al. 2020, the C4 clean-up rules), each a named
  test listed in :data:`RULES`, returning the rules a text fires. :func:`rules_label` turns
  them into a rules-only classifier over the quality head's classes: the baseline a trained
  head must beat.
* :data:`GENERATORS` — seeded junk generators that derive weakly labelled junk from a real
  document: ``boilerplate`` (navigation menus, cookie banners, footers), ``keyword_stuffing``
  (a few of the document's own words repeated with shop phrases), ``garbage`` (mojibake,
  random characters, repeated lines, encoded blobs) and ``low_information`` (fragments, page
  furniture). The labels are *generated*, not human judgements: a head trained on them
  learns these generators, and its card must say so.

Examples
--------
>>> sorted(GENERATORS)
['boilerplate', 'garbage', 'keyword_stuffing', 'low_information']
>>> text = "The committee met on Monday and agreed to fund the new library. " * 3
>>> junk = derive_junk(text, kind="garbage", key="doc-1", seed=0)
>>> junk == derive_junk(text, kind="garbage", key="doc-1", seed=0)
True
>>> rules_label("Click here!!! FREE $$$ money, click here to unsubscribe")
'spam'
"""

from __future__ import annotations

import collections
import hashlib
import random
import re
import string
from collections.abc import Callable, Sequence
from typing import Any

from auditor.errors import ConfigError

__all__ = [
    "GENERATORS",
    "QUALITY_CLASSES",
    "RULES",
    "derive_junk",
    "quality_rules",
    "rules_baseline",
    "rules_label",
]

#: The quality head's classes: ``ok`` (ham of many genres), ``spam`` (real spam mail) and
#: four weakly labelled junk kinds made by :data:`GENERATORS`.
QUALITY_CLASSES: tuple[str, ...] = (
    "ok", "spam", "boilerplate", "keyword_stuffing", "garbage", "low_information",
)

#: Rule name → what it tests (thresholds from Gopher's quality filter and C4's clean-up,
#: plus the mojibake and spam-phrase tests added here).
RULES: dict[str, str] = {
    "too_few_words": "fewer than 50 words (Gopher)",
    "mean_word_length": "mean word length outside 3-10 characters (Gopher)",
    "symbol_ratio": "'#' and ellipses per word above 0.1 (Gopher)",
    "bullet_lines": "more than 90 % of lines start with a bullet (Gopher)",
    "ellipsis_lines": "more than 30 % of lines end with an ellipsis (Gopher)",
    "alpha_words": "fewer than 80 % of words contain a letter (Gopher)",
    "stop_words": "fewer than 2 of the, be, to, of, and, that, have, with (Gopher; English)",
    "duplicate_lines": "more than 30 % of lines are repeats (Gopher)",
    "top_ngram": "the most frequent word 2-gram covers more than 20 % of characters "
                 "(Gopher)",
    "duplicate_ngrams": "repeated word 5-grams cover more than 15 % of characters (Gopher)",
    "non_alpha": "more than 25 % of non-space characters are neither letters nor digits",
    "mojibake": "a replacement character or UTF-8 read as Windows-1252 (e.g. 'Ã©', 'â€')",
    "terminal_punctuation": "fewer than half the lines of three or more words end in "
                            "terminal punctuation (C4)",
    "lorem_ipsum": "contains 'lorem ipsum' (C4)",
    "javascript": "mentions javascript (C4)",
    "policy": "cookie / privacy-policy / terms-of-use / all-rights-reserved phrases (C4)",
    "spam_phrases": "two or more spam phrases (click here, unsubscribe, free, $$$, act now, "
                    "...)",
}

_STOP = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
_BULLET = re.compile(r"^\s*([-*•‣◦·>]|\d+[.)])\s")
_WORD = re.compile(r"\S+")
_MOJIBAKE = re.compile("\ufffd|Ã[\u0080-\u00bf©¨§¼½¶]|â€|Â[\u00a0-\u00bf]")
_POLICY = re.compile(r"cookie|privacy policy|terms of (use|service)|all rights reserved",
                     re.IGNORECASE)
_SPAM = re.compile(r"click here|unsubscribe|\bfree\b|\$\$\$|act now|limited (time )?offer|"
                   r"100% (free|guaranteed)|order now|credit card|earn \$|viagra|"
                   r"make money|risk[- ]free|winner", re.IGNORECASE)


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def _ngram_chars(words: Sequence[str], n: int) -> tuple[int, int]:
    """(characters in the most frequent n-gram's occurrences, in repeated n-grams)."""
    grams = [tuple(w.lower() for w in words[i:i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0, 0
    counts = collections.Counter(grams)
    top, top_n = counts.most_common(1)[0]
    top_chars = sum(len(w) for w in top) * top_n if top_n > 1 else 0
    dup_chars = sum(sum(len(w) for w in g) * (c - 1) for g, c in counts.items() if c > 1)
    return top_chars, dup_chars


def quality_rules(text: str) -> list[str]:
    """The :data:`RULES` that ``text`` fires, in the table's order.

    Parameters
    ----------
    text
        One document.

    Returns
    -------
    list of str
        Names of the rules that fire (empty: the text passes every rule).

    Examples
    --------
    >>> quality_rules("buy shoes buy shoes buy shoes buy shoes buy shoes")
    ['too_few_words', 'stop_words', 'top_ngram', 'duplicate_ngrams', 'terminal_punctuation']
    """
    words = _words(text)
    n = len(words)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    chars = sum(len(w) for w in words) or 1
    fired: list[str] = []
    if n < 50:
        fired.append("too_few_words")
    mean = chars / n if n else 0.0
    if n and not 3 <= mean <= 10:
        fired.append("mean_word_length")
    if n and (text.count("#") + text.count("...") + text.count("…")) / n > 0.1:
        fired.append("symbol_ratio")
    if lines and sum(bool(_BULLET.match(ln)) for ln in lines) / len(lines) > 0.9:
        fired.append("bullet_lines")
    if lines and sum(ln.endswith(("...", "…")) for ln in lines) / len(lines) > 0.3:
        fired.append("ellipsis_lines")
    if n and sum(any(c.isalpha() for c in w) for w in words) / n < 0.8:
        fired.append("alpha_words")
    if len({w.lower().strip(string.punctuation) for w in words} & _STOP) < 2:
        fired.append("stop_words")
    if lines and (len(lines) - len(set(lines))) / len(lines) > 0.3:
        fired.append("duplicate_lines")
    top2, _ = _ngram_chars(words, 2)
    _, dup5 = _ngram_chars(words, 5)
    if top2 / chars > 0.2:
        fired.append("top_ngram")
    if dup5 / chars > 0.15:
        fired.append("duplicate_ngrams")
    visible = [c for c in text if not c.isspace()]
    if visible and sum(not c.isalnum() for c in visible) / len(visible) > 0.25:
        fired.append("non_alpha")
    if _MOJIBAKE.search(text):
        fired.append("mojibake")
    long_lines = [ln for ln in lines if len(ln.split()) >= 3]
    if long_lines and sum(ln.endswith((".", "!", "?", '"', "'", ":", ")")) for ln in
                          long_lines) / len(long_lines) < 0.5:
        fired.append("terminal_punctuation")
    if "lorem ipsum" in text.lower():
        fired.append("lorem_ipsum")
    if "javascript" in text.lower():
        fired.append("javascript")
    if _POLICY.search(text):
        fired.append("policy")
    if len(_SPAM.findall(text)) >= 2:
        fired.append("spam_phrases")
    return fired


def rules_label(text: str) -> str:
    """A rules-only classifier over :data:`QUALITY_CLASSES` (the baseline for the head).

    A decision list on :func:`quality_rules`: spam phrases → ``spam``; policy /
    javascript / lorem-ipsum / bullet-list text → ``boilerplate``; mojibake, mostly
    non-letters or odd word lengths → ``garbage``; repeated n-grams or lines → ``keyword_stuffing``;
    under 50 words without stop words → ``low_information``; else ``ok``.

    Parameters
    ----------
    text
        One document.

    Returns
    -------
    str
        One of :data:`QUALITY_CLASSES`.
    """
    fired = set(quality_rules(text))
    if "spam_phrases" in fired:
        return "spam"
    if fired & {"policy", "javascript", "lorem_ipsum", "bullet_lines"}:
        return "boilerplate"
    if fired & {"mojibake", "non_alpha", "mean_word_length", "alpha_words"}:
        return "garbage"
    if fired & {"top_ngram", "duplicate_ngrams", "duplicate_lines"}:
        return "keyword_stuffing"
    if {"too_few_words", "stop_words"} <= fired:
        return "low_information"
    return "ok"


# ----------------------------------------------------------------------------- generators

_MENU = ("Home", "About", "About us", "Contact", "Blog", "News", "Products", "Services",
         "Shop", "Login", "Sign in", "Register", "FAQ", "Help", "Support", "Careers",
         "Events", "Gallery", "Archive", "Search", "Sitemap", "Press", "Downloads")
_BANNERS = (
    "We use cookies to improve your experience. By continuing to browse this site you "
    "agree to our use of cookies. Accept | Decline | Cookie settings",
    "This website uses cookies and similar technologies. Learn more in our Cookie Policy.",
    "You need to enable JavaScript to run this app.",
    "Please enable JavaScript in your browser to view this page.",
    "Your browser is out of date. Update your browser for more security and speed.",
    "Subscribe to our newsletter! Enter your email address: [ Subscribe ]",
)
_FOOTERS = (
    "© {year} {name}. All rights reserved.", "Privacy Policy | Terms of Use | Sitemap",
    "Terms of Service · Privacy · Accessibility · Contact", "Powered by {name} CMS",
    "Follow us: Facebook Twitter Instagram LinkedIn YouTube", "Back to top ↑",
    "Share this: Facebook | Twitter | Email | Print", "Skip to main content",
    "« Previous | Next »", "Page {page} of {pages}", "Posted in Uncategorized | Leave a "
    "comment", "Tags: {kw}, {kw2}",
)
_SHOP = ("best {kw}", "cheap {kw}", "buy {kw} online", "{kw} sale", "{kw} near me",
         "top {kw} {year}", "{kw} reviews", "discount {kw}", "{kw} free shipping",
         "{kw} deals", "{kw} {kw2}", "best {kw2} {kw}", "{kw} for sale", "order {kw} now")
_LOW = ("Click here.", "Read more", "Loading...", "Page not found.", "N/A", "TBD", "ok",
        "See above.", "No comments yet.", "Untitled", "(no subject)", "Continue reading →",
        "More info", "Thanks!", "+1", "bump", "test", "Coming soon", "Error 404",
        "Login to reply")
_MOJIBAKE_MAP = {"'": "â€™", '"': "â€œ", "e": "Ã©", "a": "Ã¡", "-": "â€“", "o": "Ã³",
                 " ": "Â "}
_STOPWORDS_SHORT = frozenset(
    "a an the and or but of to in on at for with by from is are was were be been it this "
    "that these those as not no he she they we you i his her their our your its".split())


def _rng(key: str, seed: int, kind: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}\x00{kind}\x00{key}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _sentences(text: str) -> list[str]:
    parts = re.split(r"(?<=[.!?])\s+|\n+", text)
    return [p.strip() for p in parts if len(p.split()) >= 3]


def _keywords(text: str, rng: random.Random, k: int) -> list[str]:
    """``k`` content words of ``text`` (lower-cased letters only), fall-backs if none."""
    words = sorted({w.lower() for w in re.findall(r"[^\W\d_]{4,}", text)} - _STOPWORDS_SHORT)
    if len(words) < k:
        words += ["product", "online", "service", "offer", "quality", "price"]
    return rng.sample(words, k)


def boilerplate(text: str, rng: random.Random) -> str:
    """Navigation, banners and footers around at most one sentence of ``text``."""
    kw, kw2 = _keywords(text, rng, 2)
    name = kw.capitalize()
    fill = {"year": rng.randint(2005, 2025), "name": name, "kw": kw, "kw2": kw2,
            "page": rng.randint(1, 9), "pages": rng.randint(10, 40)}
    sep = rng.choice((" | ", " · ", "  ", " > ", " / "))
    lines = [sep.join(rng.sample(_MENU, rng.randint(4, 9)))]
    if rng.random() < 0.6:
        lines.append(rng.choice(_BANNERS))
    sents = _sentences(text)
    if sents and rng.random() < 0.6:
        lines.append(rng.choice(sents)[:160])
    if rng.random() < 0.5:
        lines.append("\n".join(f"{rng.choice(('•', '-', '*', '>'))} {m}"
                               for m in rng.sample(_MENU, rng.randint(3, 7))))
    for footer in rng.sample(_FOOTERS, rng.randint(2, 4)):
        lines.append(footer.format(**fill))
    return "\n".join(lines)


def keyword_stuffing(text: str, rng: random.Random) -> str:
    """A few of ``text``'s own words repeated in shop phrases, with a sentence or two."""
    kws = _keywords(text, rng, 3)
    year = rng.randint(2010, 2025)
    phrases = []
    for _ in range(rng.randint(12, 30)):
        kw, kw2 = rng.sample(kws, 2)
        phrases.append(rng.choice(_SHOP).format(kw=kw, kw2=kw2, year=year))
    sents = _sentences(text)
    if sents:
        for _ in range(rng.randint(0, 2)):
            phrases.insert(rng.randrange(len(phrases)), rng.choice(sents)[:200])
    joiner = rng.choice((", ", " ", " | ", ". ", "\n"))
    return joiner.join(phrases)


def garbage(text: str, rng: random.Random) -> str:
    """Machine garbage made from ``text``: mojibake, random characters, repeated lines,
    an encoded blob or markup soup (one, chosen by ``rng``)."""
    base = text[:800]
    kind = rng.choice(("mojibake", "noise", "repeat", "blob", "markup"))
    if kind == "mojibake":
        chars = [(_MOJIBAKE_MAP[c] if c in _MOJIBAKE_MAP and rng.random() < 0.35 else c)
                 for c in base]
        return "".join(chars)
    if kind == "noise":
        alphabet = string.ascii_letters + string.digits + string.punctuation + "¤¦§¬°±µ¶"
        rate = rng.uniform(0.25, 0.6)
        return "".join(rng.choice(alphabet) if not c.isspace() and rng.random() < rate
                       else c for c in base)
    if kind == "repeat":
        sents = _sentences(base) or [base[:80]]
        line = rng.choice(sents)[:120]
        return "\n".join([line] * rng.randint(6, 20))
    if kind == "blob":
        raw = base.encode("utf-8")
        rng_bytes = bytes(rng.randrange(256) for _ in range(rng.randint(60, 300)))
        import base64

        blob = base64.b64encode(raw[:200] + rng_bytes).decode("ascii")
        return "\n".join(blob[i:i + 76] for i in range(0, len(blob), 76))
    tags = ("div", "span", "td", "tr", "p", "font", "li", "a")
    words = base.split()[: rng.randint(8, 30)] or ["x"]
    out = []
    for w in words:
        tag = rng.choice(tags)
        out.append(f"<{tag} class=\"c{rng.randint(1, 99)}\">{w}</{tag}>")
        if rng.random() < 0.3:
            out.append(rng.choice(("&nbsp;", "&#160;", "{{ var }}", "<br/>", "</div></div>",
                                   "%20", "\\u00a0", "NaN", "undefined", "null")))
    return "".join(out)


def low_information(text: str, rng: random.Random) -> str:
    """A short fragment: page furniture, a few of ``text``'s words, or numbers."""
    kind = rng.choice(("furniture", "fragment", "numbers", "title"))
    words = text.split()
    if kind == "furniture":
        return " ".join(rng.sample(_LOW, rng.randint(1, 3)))
    if kind == "fragment" and words:
        start = rng.randrange(max(1, len(words) - 6))
        return " ".join(words[start:start + rng.randint(2, 6)]) + rng.choice(
            ("...", "", " …", " - Read more"))
    if kind == "numbers":
        return " ".join(rng.choice((str(rng.randint(0, 9999)), f"{rng.randint(1, 28):02d}."
                                    f"{rng.randint(1, 12):02d}.{rng.randint(1990, 2025)}",
                                    f"{rng.random():.3f}", "-", "|"))
                        for _ in range(rng.randint(2, 10)))
    first = " ".join(words[: rng.randint(2, 5)]) if words else "Untitled"
    return f"{first.strip(string.punctuation + ' ')}{rng.choice(('', ':', ' -', ' |'))}"


#: Junk kind (a quality class) → generator ``(text, rng) -> str``.
GENERATORS: dict[str, Callable[[str, random.Random], str]] = {
    "boilerplate": boilerplate,
    "garbage": garbage,
    "keyword_stuffing": keyword_stuffing,
    "low_information": low_information,
}


def derive_junk(text: str, *, kind: str, key: str, seed: int = 0) -> str:
    """Junk of ``kind`` derived from the real document ``text``, the same for the same
    ``key`` (the document's id) and ``seed``.

    Parameters
    ----------
    text
        A real document the junk borrows words from.
    kind : {'boilerplate', 'garbage', 'keyword_stuffing', 'low_information'}
        The generator.
    key
        A stable id of the document (seeds the generator with ``seed`` and ``kind``).
    seed
        Varies the junk across builds.

    Returns
    -------
    str
        The junk text (never empty).

    Raises
    ------
    ConfigError
        ``kind`` is not a generator.
    """
    try:
        gen = GENERATORS[kind]
    except KeyError:
        raise ConfigError(f"unknown junk kind {kind!r}; choose from {sorted(GENERATORS)}",
                          field="kind") from None
    out = gen(text, _rng(key, seed, kind)).strip()
    return out or "N/A"


def rules_baseline(texts: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """How well :func:`rules_label` alone classifies labelled texts (the bar for a head).

    Parameters
    ----------
    texts, labels
        Documents and their true quality classes.

    Returns
    -------
    dict
        ``macro_f1`` and ``accuracy`` over the labels present, ``f1`` per class and
        ``n``.

    Examples
    --------
    >>> rules_baseline(["Click here!!! FREE $$$", "x"], ["spam", "ok"])["f1"]["spam"]
    1.0
    """
    from sklearn.metrics import accuracy_score, f1_score

    if len(texts) != len(labels):
        raise ConfigError(f"{len(texts)} texts but {len(labels)} labels", field="labels")
    predicted = [rules_label(t) for t in texts]
    classes = sorted(set(labels))
    per = f1_score(labels, predicted, labels=classes, average=None, zero_division=0)
    return {"n": len(texts), "macro_f1": float(per.mean()) if classes else 0.0,
            "accuracy": float(accuracy_score(labels, predicted)) if texts else 0.0,
            "f1": {c: float(v) for c, v in zip(classes, per, strict=True)}}
