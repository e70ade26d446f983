"""Feature labels: a deterministic offline label, user overrides, an optional LLM labeller.

Precedence, highest first: the user's override file, then the automatic label stored in
the dictionary. The automatic label (:func:`auto_label`) is built from what a person checks
first, e.g. ``"money, cash — 'pay the money back' → promotes pay, payment"``:

1. the feature's most frequent firing tokens, case and whitespace variants merged
   (``'money'`` / ``' Money'`` count as one; :func:`top_tokens`);
2. a short phrase from its top contexts: the window of at most four words around the
   firing token shared by the most contexts (:func:`context_phrase`);
3. the logit lens ("→ promotes …") only when it is coherent: at least 3 of the 5 most
   promoted tokens share a 3-character stem (:func:`coherent_promoted`); otherwise it is
   left out, as its top tokens are then mostly unrelated pieces of the vocabulary.

It is the same for the same dictionary. How well a label predicts where its feature fires
is measured by :mod:`auditor.features.detection`; the label dictionaries carried before
(tokens, then the lens always) is :func:`legacy_label`.

Override files live in the dictionary directory (``labels.tsv`` and/or ``labels.json``; both
are read if present, the TSV winning) or anywhere given explicitly:

* TSV: one ``feature<TAB>label`` per line; blank lines, ``#`` comments and a
  ``feature<TAB>label`` header are skipped.
* JSON: ``{"12": "label", ...}`` or ``[{"feature": 12, "label": "..."}, ...]``.

:func:`llm_label` is an optional hook that asks any OpenAI-compatible server
(``POST <base_url>/v1/chat/completions``) for a label, using only :mod:`urllib`. It is
never called unless you call it; :func:`llm_labeller` wraps it as a labeller that
:func:`auditor.features.detection.score_dictionary` scores the same way as the automatic
labels.
"""

from __future__ import annotations

import json
import re
import unicodedata
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from auditor._files import atomic_write_text
from auditor.errors import AuditorError, ConfigError
from auditor.features.files import (
    LABELS_JSON,
    LABELS_TSV,
    default_dictionary_dir,
    load_contexts,
    load_feature_table,
    load_manifest,
)
from auditor.features.stats import CONTEXT_CLOSE, CONTEXT_OPEN, ELLIPSIS

__all__ = [
    "LABELS_JSON",
    "LABELS_TSV",
    "auto_label",
    "coherent_promoted",
    "context_phrase",
    "dictionary_annotations",
    "feature_labels",
    "label_with_llm",
    "legacy_label",
    "llm_label",
    "llm_labeller",
    "load_label_overrides",
    "resolve_overrides",
    "save_label_override",
    "token_key",
    "top_tokens",
]

_MAX_PIECE = 24
_MAX_LABEL = 200


def _unreadable(text: str) -> bool:
    """A token that shows as noise: a partial UTF-8 byte (U+FFFD) or a control character."""
    return "\ufffd" in text or any(
        unicodedata.category(ch) == "Cc" and ch not in "\n\t" for ch in text)


def _shown(text: str) -> str:
    """A token as a new-style label shows it: stripped, whitespace made visible, short."""
    stripped = text.replace("\u0120", " ").replace("\u2581", " ").strip()
    if not stripped:
        stripped = text.replace("\n", "⏎").replace("\t", "⇥").replace(" ", "␣") or "∅"
    stripped = " ".join(stripped.split())
    if len(stripped) > _MAX_PIECE:
        stripped = stripped[: _MAX_PIECE - 1] + "…"
    return stripped


def _piece(text: str) -> str:
    """A token shown in a legacy label: stripped, whitespace made visible, shortened."""
    stripped = text.strip()
    if not stripped:
        stripped = text.replace("\n", "⏎").replace("\t", "⇥").replace(" ", "␣") or "∅"
    stripped = " ".join(stripped.split())
    if len(stripped) > _MAX_PIECE:
        stripped = stripped[: _MAX_PIECE - 1] + "…"
    return repr(stripped) if "'" not in stripped else f'"{stripped}"'


def token_key(text: str) -> str:
    """The form under which firing tokens count as one: case and edge whitespace ignored.

    Leading ``Ġ`` / ``▁`` (byte-level and SentencePiece word markers) count as whitespace,
    so ``' money'``, ``'Money'`` and ``'▁money'`` all give ``'money'``.

    Examples
    --------
    >>> token_key(" Money") == token_key("money") == token_key("▁MONEY")
    True
    """
    stripped = text.replace("\u0120", " ").replace("\u2581", " ")
    return " ".join(stripped.split()).casefold() or text


def top_tokens(
    firing_tokens: Sequence[str],
    *,
    activations: Sequence[float] | None = None,
    n: int = 3,
) -> list[str]:
    """The most frequent firing tokens, case and whitespace variants merged.

    Parameters
    ----------
    firing_tokens : sequence of str
        The firing token of each top context (best first).
    activations : sequence of float, optional
        Activation of each context; breaks ties between equally frequent tokens (higher
        total first). Without it the earlier (better-ranked) token wins.
    n : int, default 3
        Tokens returned.

    Returns
    -------
    list of str
        Display forms (the most frequent spelling of each merged group, stripped,
        whitespace made visible); unreadable tokens (partial UTF-8 bytes, control
        characters) come last.

    Examples
    --------
    >>> top_tokens([" money", "Money", " cash", " money"])
    ['money', 'cash']
    """
    counts: Counter[str] = Counter()
    weight: dict[str, float] = {}
    first: dict[str, int] = {}
    noise: dict[str, bool] = {}
    spellings: dict[str, Counter[str]] = {}
    for i, tok in enumerate(firing_tokens):
        key = token_key(tok)
        counts[key] += 1
        weight[key] = weight.get(key, 0.0) + (float(activations[i]) if activations else 0.0)
        first.setdefault(key, i)
        noise[key] = noise.get(key, False) or _unreadable(tok)
        spellings.setdefault(key, Counter())[_shown(tok)] += 1
    ranked = sorted(counts, key=lambda k: (noise[k], -counts[k], -weight[k], first[k], k))
    # most frequent spelling; ties go to the first seen (Counter keeps insertion order)
    return [spellings[k].most_common(1)[0][0] for k in ranked[:n]]


_WORD = re.compile(r"\w+(?:['’]\w+)*", re.UNICODE)


def context_phrase(contexts: Sequence[str], *, max_words: int = 4) -> str:
    """A short phrase around the firing token, shared by the most top contexts.

    Every context (text with the firing token marked ``«…»``) is cut into words (a word
    glued to an end marked ``…``, where the window cut the document, is left out: it may
    be a fragment); the candidates are the windows of 2 to ``max_words`` words that
    contain the firing token's word. The phrase is the window found in the most contexts
    (compared lower-cased); among equally frequent windows the longest, then the one of
    the best-ranked context. When no window recurs, it is the window around the firing
    token of the first (most activating) context: one word before it and up to
    ``max_words - 2`` after.

    Parameters
    ----------
    contexts : sequence of str
        Top contexts, best first, the firing token wrapped in ``«…»``.
    max_words : int, default 4
        Longest phrase, in words.

    Returns
    -------
    str
        The phrase as it reads in the first context that holds it; ``''`` when no context
        has a word at the firing token.

    Examples
    --------
    >>> context_phrase(["… pay the «money» back now", "to pay the «money» back", "his «money»"])
    'pay the money back'
    """
    counts: Counter[str] = Counter()
    shown: dict[str, tuple[int, str]] = {}
    fallback = ""
    for rank, text in enumerate(contexts):
        clean, spans, at = _marked_words(text)
        if at is None:
            continue
        words = [clean[i:j].casefold() for i, j in spans]
        seen: set[str] = set()
        for size in range(2, max_words + 1):
            for start in range(max(0, at - size + 1), min(at, len(words) - size) + 1):
                key = " ".join(words[start:start + size])
                if key in seen:
                    continue
                seen.add(key)
                counts[key] += 1
                shown.setdefault(key, (rank, _span_text(clean, spans, start, start + size)))
        if not fallback:
            lo = max(0, at - 1)
            fallback = _span_text(clean, spans, lo, min(len(spans), lo + max_words))
    if counts:
        best = max(counts, key=lambda k: (counts[k], len(k.split()), -shown[k][0], -len(k)))
        if counts[best] >= 2:
            return shown[best][1]
    return fallback


def _span_text(clean: str, spans: Sequence[tuple[int, int]], lo: int, hi: int) -> str:
    """The text from word ``lo`` to word ``hi - 1`` as it reads, whitespace collapsed."""
    if hi - lo < 2:
        return ""
    return " ".join(clean[spans[lo][0]:spans[hi - 1][1]].split())


def _marked_words(text: str) -> tuple[str, list[tuple[int, int]], int | None]:
    """A marked context unmarked, its word spans, and the index of the firing word.

    The firing word is the first word overlapping the firing token, so a token glued to
    its neighbours is read as part of their word (``"pay«ing»"`` → ``paying``); ``None``
    when the token holds no word character. Where the window cut the document (``…``
    glued to a word), that outermost word may be a fragment and is left out.
    """
    open_at = text.find(CONTEXT_OPEN)
    close_at = text.find(CONTEXT_CLOSE, open_at + 1)
    if open_at < 0 or close_at < 0:
        return text, [], None
    cut_left = text.startswith(ELLIPSIS) and not text[len(ELLIPSIS):][:1].isspace()
    cut_right = text.endswith(ELLIPSIS) and not text[:-len(ELLIPSIS)][-1:].isspace()
    left, token, right = text[:open_at], text[open_at + 1:close_at], text[close_at + 1:]
    clean = (left + token + right).replace(ELLIPSIS, " ")
    lo, hi = len(left), len(left) + len(token)
    spans = [m.span() for m in _WORD.finditer(clean)]
    at = next((i for i, (i0, i1) in enumerate(spans) if i0 < hi and i1 > lo), None)
    if at is None:
        return clean, spans, None
    if cut_right and len(spans) - 1 > at:
        spans.pop()
    if cut_left and at > 0:
        spans.pop(0)
        at -= 1
    return clean, spans, at


def coherent_promoted(promoted: Sequence[str], *, top: int = 5, agree: int = 3,
                      stem: int = 3) -> list[str]:
    """The logit-lens tokens worth showing: those of the top that agree with each other.

    Agreement rule: of the ``top`` most promoted tokens, at least ``agree`` share a stem,
    the first ``stem`` characters of the token lower-cased and stripped of leading
    whitespace, ``Ġ`` and ``▁`` (tokens whose first ``stem`` characters are not all
    letters never agree: numbers, punctuation, ``<unused12>``-style special tokens). So
    ``' pay', 'Pay', ' payment'`` agree (``pay``), while
    ``'isotopes', ' Kaz', 'rical', ' money', '</s>'`` do not.

    Parameters
    ----------
    promoted : sequence of str
        Promoted tokens, best first.
    top, agree, stem : int
        The rule's three numbers (defaults: 3 of the top 5 share 3 characters).

    Returns
    -------
    list of str
        The agreeing tokens (display form, case variants merged, best first), or ``[]``
        when the lens is not coherent.

    Examples
    --------
    >>> coherent_promoted([" pay", "Pay", " payment", " isotopes", " paid"])
    ['pay', 'payment']
    >>> coherent_promoted([" isotopes", " Kaz", "rical", " money", "</s>"])
    []
    """
    groups: dict[str, list[str]] = {}
    for tok in list(promoted)[:top]:
        key = token_key(tok)
        if len(key) < stem or not key[:stem].isalpha() or _unreadable(tok):
            continue
        groups.setdefault(key[:stem], []).append(tok)
    best = max(groups.values(), key=len, default=[])
    if len(best) < agree:
        return []
    out: list[str] = []
    keys: set[str] = set()
    for tok in best:
        if token_key(tok) not in keys:
            keys.add(token_key(tok))
            out.append(_shown(tok))
    return out


def auto_label(
    firing_tokens: Sequence[str],
    promoted: Sequence[str] = (),
    *,
    activations: Sequence[float] | None = None,
    contexts: Sequence[str] = (),
    n_tokens: int = 3,
    n_promoted: int = 2,
    lens: Literal["coherent", "always", "never"] = "coherent",
) -> str:
    """A short deterministic label: top tokens, a context phrase, the lens when coherent.

    Parameters
    ----------
    firing_tokens : sequence of str
        The firing token of each top context (best first).
    promoted : sequence of str
        Top promoted logit-lens tokens, best first.
    activations : sequence of float, optional
        Activation of each context (ties between equally frequent tokens).
    contexts : sequence of str
        The top contexts' texts (firing token in ``«…»``), for the phrase
        (:func:`context_phrase`); none: no phrase.
    n_tokens : int, default 3
        Distinct firing tokens shown (case / whitespace variants merged,
        :func:`top_tokens`).
    n_promoted : int, default 2
        Promoted tokens shown.
    lens : {'coherent', 'always', 'never'}, default 'coherent'
        Show the logit lens only when :func:`coherent_promoted` finds agreement, always
        (its best tokens, agreeing or not), or never.

    Returns
    -------
    str
        E.g. ``"money, cash — 'pay the money back' → promotes pay, payment"``;
        ``'never fired'`` for a dead feature. At most 200 characters.

    See Also
    --------
    legacy_label : the label dictionaries carried before (tokens, then the lens always).

    Examples
    --------
    >>> auto_label([" money", "Money", " cash"], [" isotopes", " Kaz"],
    ...            contexts=["pay the «money» back", "to pay the «Money» back", "«cash»"])
    "money, cash — 'pay the money back'"
    """
    tokens = top_tokens(firing_tokens, activations=activations, n=n_tokens)
    if not tokens:
        return "never fired"
    label = ", ".join(tokens)
    phrase = context_phrase(contexts) if contexts else ""
    if phrase and len(phrase.split()) > 1:
        label += f" — '{phrase}'"
    if lens == "coherent":
        shown = coherent_promoted(promoted)[:n_promoted]
    elif lens == "always":
        readable = [t for t in promoted if not _unreadable(t)] or list(promoted)
        shown = list(dict.fromkeys(_shown(t) for t in readable))[:n_promoted]
    else:
        shown = []
    if shown:
        label += f" → promotes {', '.join(shown)}"
    return label[:_MAX_LABEL]


def legacy_label(
    firing_tokens: Sequence[str],
    promoted: Sequence[str] = (),
    *,
    activations: Sequence[float] | None = None,
    n_tokens: int = 2,
    n_promoted: int = 1,
) -> str:
    """The automatic label dictionaries carried before issue 25, kept as a baseline.

    The ``n_tokens`` most frequent firing tokens (only exact repeats merged) and, always,
    the ``n_promoted`` best logit-lens tokens, e.g. ``"'insult' / 'idiot' … → promotes
    'you'"``. ``bench/label_detection.py`` compares it with :func:`auto_label`.

    Examples
    --------
    >>> legacy_label([" insult", " idiot", " insult", " moron"], [" you"])
    "'insult' / 'idiot' … → promotes 'you'"
    """
    counts: Counter[str] = Counter()
    weight: dict[str, float] = {}
    first: dict[str, int] = {}
    noise: dict[str, bool] = {}
    for i, tok in enumerate(firing_tokens):
        key = _piece(tok)
        counts[key] += 1
        weight[key] = weight.get(key, 0.0) + (float(activations[i]) if activations else 0.0)
        first.setdefault(key, i)
        noise[key] = _unreadable(tok)
    ranked = sorted(counts, key=lambda k: (noise[k], -counts[k], -weight[k], first[k], k))
    if ranked:
        head = " / ".join(ranked[:n_tokens]) + (" …" if len(ranked) > n_tokens else "")
    else:
        head = "never fired"
    shown: list[str] = []
    readable = [t for t in promoted if not _unreadable(t)] or list(promoted)
    for tok in readable:
        piece = _piece(tok)
        if piece not in shown:
            shown.append(piece)
        if len(shown) >= n_promoted:
            break
    label = f"{head} → promotes {', '.join(shown)}" if shown else head
    return label[:_MAX_LABEL]


# --------------------------------------------------------------------------- overrides


def load_label_overrides(path: str | Path, *, n_features: int | None = None) -> dict[int, str]:
    """Read a label override file (TSV ``feature<TAB>label`` or JSON).

    Parameters
    ----------
    path : str or Path
        The file; ``.json`` is read as JSON, anything else as TSV.
    n_features : int, optional
        When given, feature numbers must be below it.

    Returns
    -------
    dict of int to str
        Feature → label.

    Raises
    ------
    ConfigError
        The file is missing or malformed (naming the row), a feature number is not an
        integer or out of range, or a label is empty.
    """
    src = Path(path)
    if not src.is_file():
        raise ConfigError("no such label file", path=src, field="labels")
    try:
        raw = src.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the label file: {exc}", path=src, field="labels") from exc
    pairs: list[tuple[int | None, Any, Any]] = []
    if src.suffix.lower() == ".json":
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise ConfigError(f"invalid JSON: {exc}", path=src, field="labels") from exc
        if isinstance(data, Mapping):
            pairs = [(None, k, v) for k, v in data.items()]
        elif isinstance(data, list) and all(isinstance(x, Mapping) for x in data):
            pairs = [(i, x.get("feature"), x.get("label")) for i, x in enumerate(data)]
        else:
            raise ConfigError('expected {"feature": "label", ...} or a list of '
                              '{"feature": N, "label": "..."}', path=src, field="labels")
    else:
        for i, line in enumerate(raw.splitlines()):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            feat, tab, label = line.partition("\t")
            if not tab:
                raise ConfigError("expected 'feature<TAB>label'", path=src, row=i + 1,
                                  field="labels")
            if i == 0 and feat.strip().lower() == "feature":
                continue
            pairs.append((i + 1, feat, label))
    out: dict[int, str] = {}
    for row, feat, label in pairs:
        out[_feature_number(feat, src=src, row=row, n_features=n_features)] = \
            _label_text(label, src=src, row=row)
    return out


def save_label_override(dictionary_dir: str | Path, feature: int, label: str | None) -> Path:
    """Set (or, with ``label=None``, remove) one override in ``<dictionary>/labels.tsv``.

    Parameters
    ----------
    dictionary_dir : str or Path
        The dictionary directory.
    feature : int
        Feature number (checked against the dictionary's size).
    label : str or None
        The new label; ``None`` removes the override.

    Returns
    -------
    Path
        The TSV file (written atomically).

    Raises
    ------
    ConfigError
        Feature out of range or empty label.
    StoreError
        No dictionary at ``dictionary_dir``.
    """
    root = Path(dictionary_dir)
    n = int(load_manifest(root)["provenance"]["sae"]["d_sae"])
    feature = _feature_number(feature, src=None, row=None, n_features=n)
    path = root / LABELS_TSV
    labels = load_label_overrides(path, n_features=n) if path.is_file() else {}
    if label is None:
        labels.pop(feature, None)
    else:
        labels[feature] = _label_text(label, src=None, row=None)
    lines = ["feature\tlabel", *(f"{f}\t{labels[f]}" for f in sorted(labels))]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def feature_labels(
    dictionary_dir: str | Path,
    overrides: str | Path | Mapping[int, str] | None = None,
) -> dict[int, str]:
    """Every feature's label: the override if there is one, else the automatic label.

    Parameters
    ----------
    dictionary_dir : str or Path
        A feature dictionary (see :func:`auditor.features.build_dictionary`).
    overrides : path or mapping, optional
        A label file or ``{feature: label}``; ``None`` reads ``labels.json`` and
        ``labels.tsv`` in the dictionary directory when they exist (TSV wins).

    Returns
    -------
    dict of int to str
        One entry per feature, ``0 … d_sae - 1``.

    Raises
    ------
    StoreError
        No (valid) dictionary at ``dictionary_dir``.
    ConfigError
        A malformed override file or an out-of-range feature in it.
    """
    frame = load_feature_table(dictionary_dir)
    labels = resolve_overrides(dictionary_dir, overrides, n_features=frame.height)
    auto = frame["auto_label"].to_list()
    return {int(f): labels.get(int(f), str(a))
            for f, a in zip(frame["feature"].to_list(), auto, strict=True)}


def resolve_overrides(
    dictionary_dir: str | Path,
    overrides: str | Path | Mapping[int, str] | None,
    *,
    n_features: int,
) -> dict[int, str]:
    """The override mapping for a dictionary (see :func:`feature_labels`).

    Raises
    ------
    ConfigError
        Malformed file, bad feature number or empty label.
    """
    if isinstance(overrides, Mapping):
        return {_feature_number(k, src=None, row=None, n_features=n_features):
                _label_text(v, src=None, row=None) for k, v in overrides.items()}
    if overrides is not None:
        return load_label_overrides(overrides, n_features=n_features)
    out: dict[int, str] = {}
    root = Path(dictionary_dir)
    for name in (LABELS_JSON, LABELS_TSV):
        if (root / name).is_file():
            out.update(load_label_overrides(root / name, n_features=n_features))
    return out


def _feature_number(value: Any, *, src: Path | None, row: int | None,
                    n_features: int | None) -> int:
    try:
        if isinstance(value, bool) or isinstance(value, float):
            raise ValueError
        feature = int(str(value).strip()) if not isinstance(value, int) else value
    except (TypeError, ValueError):
        raise ConfigError(f"feature must be an integer, got {value!r}", path=src, row=row,
                          field="feature") from None
    if feature < 0 or (n_features is not None and feature >= n_features):
        bound = f"0 … {n_features - 1}" if n_features is not None else ">= 0"
        raise ConfigError(f"feature {feature} is out of range ({bound})", path=src, row=row,
                          field="feature")
    return feature


def _label_text(value: Any, *, src: Path | None, row: int | None) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"label must be a non-empty string, got {value!r}", path=src, row=row,
                          field="label")
    return " ".join(value.split())


# --------------------------------------------------------------------------- LLM hook


def llm_label(
    contexts: Sequence[str],
    *,
    base_url: str,
    model: str,
    promoted: Sequence[str] = (),
    api_key: str | None = None,
    timeout: float = 30.0,
) -> str:
    """Ask an OpenAI-compatible chat server for a short label of one feature.

    Parameters
    ----------
    contexts : sequence of str
        The feature's top contexts (the firing token marked ``«…»``).
    base_url : str
        Server root such as ``http://localhost:8000`` (``/v1`` may be included).
    model : str
        Model name passed to the server.
    promoted : sequence of str, optional
        Top logit-lens tokens, added to the prompt.
    api_key : str, optional
        Sent as ``Authorization: Bearer <api_key>`` when given.
    timeout : float, default 30
        Seconds per request.

    Returns
    -------
    str
        The first line of the answer, stripped of quotes, at most 200 characters.

    Raises
    ------
    ConfigError
        ``base_url`` is not an http(s) URL, or there are no contexts.
    AuditorError
        The request fails or the answer is not a chat completion.
    """
    if not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"base_url must be an http(s) URL, got {base_url!r}", field="base_url")
    if not contexts:
        raise ConfigError("no contexts to label", field="contexts")
    root = base_url.rstrip("/")
    url = f"{root}/chat/completions" if root.endswith("/v1") else f"{root}/v1/chat/completions"
    listing = "\n".join(f"{i + 1}. {' '.join(c.split())}" for i, c in enumerate(contexts))
    prompt = ("Here are text snippets where one feature of a language model's sparse "
              "autoencoder fires most strongly; the token it fires on is marked «like this».\n"
              f"{listing}\n")
    if promoted:
        prompt += f"Tokens it makes more likely next: {', '.join(repr(p) for p in promoted)}\n"
    prompt += "Answer with a label of at most eight words for what the feature detects."
    body = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You label features of neural networks tersely."},
            {"role": "user", "content": prompt},
        ],
        "temperature": 0,
        "max_tokens": 32,
    }
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers,
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read().decode("utf-8"))
        text = answer["choices"][0]["message"]["content"]
    except (urllib.error.URLError, OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise AuditorError(f"LLM labeller request to {url} failed: {exc}") from exc
    if not isinstance(text, str):
        raise AuditorError(f"LLM labeller at {url} returned no text")
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    label = lines[0].strip().strip("\"'`").strip() if lines else ""
    return label[:_MAX_LABEL] or "(no label)"


def label_with_llm(
    dictionary_dir: str | Path,
    *,
    base_url: str,
    model: str,
    features: Sequence[int] | None = None,
    api_key: str | None = None,
    timeout: float = 30.0,
    max_contexts: int = 10,
) -> dict[int, str]:
    """Label features of a dictionary with :func:`llm_label` (one request per feature).

    Parameters
    ----------
    dictionary_dir : str or Path
        The dictionary.
    base_url, model, api_key, timeout
        Passed to :func:`llm_label`.
    features : sequence of int, optional
        Which features; default every feature that has contexts.
    max_contexts : int, default 10
        Contexts sent per feature.

    Returns
    -------
    dict of int to str
        Labels; save the ones you like with :func:`save_label_override`.

    Raises
    ------
    ConfigError
        A feature out of range.
    AuditorError
        A request failed.
    """
    frame = load_feature_table(dictionary_dir)
    n = frame.height
    contexts = load_contexts(dictionary_dir)
    by_feature: dict[int, list[str]] = {}
    for f, text in zip(contexts["feature"].to_list(), contexts["text"].to_list(), strict=True):
        by_feature.setdefault(int(f), []).append(str(text))
    wanted = sorted(by_feature) if features is None else [
        _feature_number(f, src=None, row=None, n_features=n) for f in features]
    promoted = frame["promoted"].to_list()
    return {f: llm_label(by_feature.get(f, [])[:max_contexts], base_url=base_url, model=model,
                         promoted=list(promoted[f] or [])[:5], api_key=api_key, timeout=timeout)
            for f in wanted}


def llm_labeller(
    *,
    base_url: str,
    model: str,
    api_key: str | None = None,
    timeout: float = 30.0,
    max_contexts: int = 10,
) -> Callable[[int, Sequence[str], Sequence[str]], str]:
    """:func:`llm_label` as a labeller for :func:`auditor.features.detection.score_dictionary`.

    Parameters
    ----------
    base_url, model, api_key, timeout
        Passed to :func:`llm_label`.
    max_contexts : int, default 10
        Contexts sent per feature.

    Returns
    -------
    callable
        ``labeller(feature, contexts, promoted) -> str``; one request per call.

    Raises
    ------
    ConfigError
        ``base_url`` is not an http(s) URL (checked now, not at the first call).
    """
    if not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"base_url must be an http(s) URL, got {base_url!r}", field="base_url")

    def labeller(feature: int, contexts: Sequence[str], promoted: Sequence[str]) -> str:
        return llm_label(list(contexts)[:max_contexts], base_url=base_url, model=model,
                         promoted=list(promoted)[:5], api_key=api_key, timeout=timeout)

    return labeller


def dictionary_annotations(
    sae_path: str | Path | None, *, examples: int = 3
) -> tuple[dict[int, str] | None, dict[int, list[str]] | None]:
    """Feature labels and example contexts from the dictionary beside an SAE, if any."""
    if sae_path is None:
        return None, None
    # provenance records the weights file; `features build` defaults to the SAE directory
    path = Path(sae_path)
    candidates = [default_dictionary_dir(path)]
    if path.is_file():
        candidates.append(default_dictionary_dir(path.parent))
    root = next((c for c in candidates if c.is_dir()), None)
    if root is None:
        return None, None
    try:
        labels = feature_labels(root)
        ctx = load_contexts(root)
    except AuditorError:
        return None, None
    top = ctx.filter(ctx["rank"] < examples)
    shown: dict[int, list[str]] = {}
    for feature, text in zip(top["feature"].to_list(), top["text"].to_list(), strict=True):
        shown.setdefault(int(feature), []).append(str(text))
    return labels, shown
