"""Filter pipelines as data: a YAML or JSON file (or a list of dicts) of ordered steps.

A pipeline file is a list of steps, or a mapping with a ``steps`` list; each step is a
mapping with a ``type`` (``length``, ``head``, ``label``, ``feature``, ``keep``,
``dedup``, ``custom``) and that step's fields (see :mod:`auditor.filter.steps`)::

    steps:
      - {type: length, min_chars: 20}
      - {type: head, head: safety, class: insult, max: 0.5}
      - {type: label, head: quality, drop: [spam]}
      - {type: feature, index: 7434, pooling: max, max: 0.5}
      - {type: keep, expression: "len(text) < 20000"}
      - {type: dedup, method: near, threshold: 0.8}
      - {type: custom, path: "mypkg.steps:NoUrls", args: {limit: 3}}

Examples
--------
>>> steps = build_steps([
...     {"type": "length", "min_chars": 5},
...     {"type": "head", "head": "safety", "class": "insult", "max": 0.5}])
>>> [s.title for s in steps]
['length chars >= 5', 'safety.p.insult < 0.5']
>>> build_steps([{"type": "lenght"}])
Traceback (most recent call last):
...
auditor.errors.ConfigError: field 'type': pipeline step 1: unknown type 'lenght' (did you mean \
length?); types: length, head, label, feature, keep, dedup, custom
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from auditor.errors import ConfigError, InputFileError
from auditor.filter.steps import STEP_TYPES, Step, step_config

__all__ = ["build_steps", "load_pipeline_file", "pipeline_config"]


def build_steps(items: Sequence[Mapping[str, Any] | Step]) -> list[Step]:
    """Steps from their configs (steps already made pass through).

    Raises
    ------
    ConfigError
        Not a list, an unknown ``type``, an unknown or bad field (named with the step's
        position), or two steps with the same name.
    """
    if isinstance(items, str | bytes) or not isinstance(items, Sequence):
        raise ConfigError("a pipeline is a list of steps", field="steps")
    steps: list[Step] = []
    for n, item in enumerate(items, 1):
        if isinstance(item, Step):
            steps.append(item)
            continue
        if not isinstance(item, Mapping):
            raise ConfigError(f"pipeline step {n}: expected a mapping with a type, got "
                              f"{item!r}", field="steps")
        config = dict(item)
        kind = config.pop("type", None)
        if kind not in STEP_TYPES:
            close = difflib.get_close_matches(str(kind), list(STEP_TYPES), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"pipeline step {n}: unknown type {kind!r}{hint}; types: "
                              f"{', '.join(STEP_TYPES)}", field="type")
        cls = STEP_TYPES[kind]
        if kind == "head" and "class" in config:
            config["cls"] = config.pop("class")
        known = {f for f in cls.__dataclass_fields__ if not f.startswith("_")}
        unknown = sorted(set(config) - known)
        if unknown:
            shown = sorted("class" if k == "cls" else k for k in known)
            raise ConfigError(f"pipeline step {n} ({kind}): unknown field(s) "
                              f"{', '.join(unknown)}; {kind} takes {', '.join(shown)}",
                              field=unknown[0])
        try:
            steps.append(cls(**config))
        except ConfigError as err:
            raise ConfigError(f"pipeline step {n} ({kind}): {err.message}",
                              field=err.field) from err
    titles = [s.title for s in steps]
    dup = sorted({t for t in titles if titles.count(t) > 1})
    if dup:
        raise ConfigError(f"two pipeline steps are named {dup[0]!r}; give one a name",
                          field="name")
    return steps


def load_pipeline_file(path: str | Path) -> list[dict[str, Any]]:
    """The step configs of a JSON (``.json``) or YAML (any other name) pipeline file.

    Raises
    ------
    InputFileError
        The file is missing or not valid YAML/JSON.
    ConfigError
        It holds no list of steps.
    """
    src = Path(path)
    try:
        text = src.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InputFileError(f"cannot read pipeline file: {err}", path=src) from err
    try:
        if src.suffix.lower() == ".json":
            data = json.loads(text)
        else:  # YAML (any other name: a pipe, a .yaml file, a .txt)
            import yaml

            data = yaml.safe_load(text)  # safe_load: no object construction from tags
    except Exception as err:  # yaml.YAMLError / json.JSONDecodeError, with their position
        raise InputFileError(f"not a valid pipeline file: {err}", path=src) from err
    if isinstance(data, Mapping):
        data = data.get("steps")
    if not isinstance(data, list) or not data:
        raise ConfigError(f"{src}: a pipeline file holds a non-empty list of steps (or a "
                          f"mapping with one under 'steps')", field="pipeline")
    return data


def pipeline_config(steps: Sequence[Step]) -> list[dict[str, Any]]:
    """The configs of ``steps`` (what ``filter.json`` records and a rerun compares)."""
    return [step_config(s) for s in steps]
