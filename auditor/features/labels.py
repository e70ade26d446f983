"""Feature labels: a deterministic offline label, user overrides, an optional LLM labeller.

Precedence, highest first: the user's override file, then the automatic label stored in
the dictionary. The automatic label (:func:`auto_label`) is built from the most frequent
firing tokens of a feature's top contexts and its top logit-lens tokens, e.g.
``"'insult' / 'idiot' … → promotes 'you'"``; it is the same for the same dictionary.

Override files live in the dictionary directory (``labels.tsv`` and/or ``labels.json``; both
are read if present, the TSV winning) or anywhere given explicitly:

* TSV: one ``feature<TAB>label`` per line; blank lines, ``#`` comments and a
  ``feature<TAB>label`` header are skipped.
* JSON: ``{"12": "label", ...}`` or ``[{"feature": 12, "label": "..."}, ...]``.

:func:`llm_label` is an optional hook that asks any OpenAI-compatible server
(``POST <base_url>/v1/chat/completions``) for a label, using only :mod:`urllib`. It is
never called unless you call it.
"""

from __future__ import annotations

import json
import unicodedata
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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

__all__ = [
    "LABELS_JSON",
    "LABELS_TSV",
    "auto_label",
    "dictionary_annotations",
    "feature_labels",
    "label_with_llm",
    "llm_label",
    "load_label_overrides",
    "resolve_overrides",
    "save_label_override",
]

_MAX_PIECE = 24
_MAX_LABEL = 200


def _unreadable(text: str) -> bool:
    """A token that shows as noise: a partial UTF-8 byte (U+FFFD) or a control character."""
    return "\ufffd" in text or any(
        unicodedata.category(ch) == "Cc" and ch not in "\n\t" for ch in text)


def _piece(text: str) -> str:
    """A token shown in a label: stripped, whitespace made visible, shortened."""
    stripped = text.strip()
    if not stripped:
        stripped = text.replace("\n", "⏎").replace("\t", "⇥").replace(" ", "␣") or "∅"
    stripped = " ".join(stripped.split())
    if len(stripped) > _MAX_PIECE:
        stripped = stripped[: _MAX_PIECE - 1] + "…"
    return repr(stripped) if "'" not in stripped else f'"{stripped}"'


def auto_label(
    firing_tokens: Sequence[str],
    promoted: Sequence[str] = (),
    *,
    activations: Sequence[float] | None = None,
    n_tokens: int = 2,
    n_promoted: int = 1,
) -> str:
    """A short deterministic label from firing tokens and logit-lens tokens.

    Parameters
    ----------
    firing_tokens : sequence of str
        The firing token of each top context (best first).
    promoted : sequence of str
        Top promoted logit-lens tokens, best first.
    activations : sequence of float, optional
        Activation of each context; breaks ties between equally frequent tokens (higher
        total first). Without it, the earlier (better-ranked) token wins.
    n_tokens : int, default 2
        Most frequent firing tokens shown.
    n_promoted : int, default 1
        Promoted tokens shown.

    Returns
    -------
    str
        E.g. ``"'insult' / 'idiot' … → promotes 'you'"``; ``… `` marks that more distinct
        tokens fired; ``'never fired'`` replaces the tokens of a dead feature. Tokens are
        stripped; unreadable ones (partial UTF-8 bytes, control characters) come last.

    Examples
    --------
    >>> auto_label([" insult", " idiot", " insult", " moron"], [" you"])
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
