"""Re-card heads without machine paths: each head's ``probe/card.json`` provenance records
its artifacts by sha256 and by a path relative to the models dir
(:func:`auditor.heads.head.portable_provenance`), not by the build machine's absolute paths.

Usage::

    python scripts/recard_heads.py [HEADS_DIR ...] [--models-dir DIR] [--built-in DIR]
                                   [--check]

Defaults: every head under ``<models dir>/heads`` (the shipped heads). ``--built-in`` is the
models dir of the machine that built the heads (default: read off the card's SAE path,
``…/models/sae/…``), so that paths under it become relative to the models dir. ``--check`` rewrites
nothing and exits 1 when a card still records an absolute path. Only the card's provenance
changes (written as :func:`auditor.probes.save_probe` writes it); the probe, the head config
and ``CARD.md`` (which shows hashes, not paths) stay as they are, so the heads' decisions do
not change.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from auditor._files import atomic_write_bytes
from auditor.defaults import models_dir as default_models_dir
from auditor.heads.head import CONFIG_FILE, PROBE_DIR, portable_provenance
from auditor.probes.persist import CARD_FILE


def _absolute_paths(value: Any, where: str = "") -> list[str]:
    """Where ``value`` (JSON) holds a string that is an absolute path."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _absolute_paths(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _absolute_paths(v, f"{where}[{i}]")]
    if isinstance(value, str) and (value.startswith("/") or value[1:3] == ":\\"):
        return [f"{where.lstrip('.')}: {value}"]
    return []


def built_in(provenance: Any) -> Path | None:
    """The build machine's models dir, read off the first SAE path ``…/models/sae/…``."""
    for info in ((provenance or {}).get("saes") or {}).values():
        parts = Path(str((info or {}).get("path") or "")).parts
        for i in range(len(parts) - 1, 0, -1):
            if parts[i] == "sae" and Path(*parts[:i]).is_absolute():
                return Path(*parts[:i])
    return None


def recard(head: Path, *, models: Path | None = None, check: bool = False) -> list[str]:
    """Make one head's card portable (or, with ``check``, say what is not).

    Parameters
    ----------
    head
        The head directory.
    models
        The models dir (of the machine that built the head) paths are made relative to;
        default: read off the card (:func:`built_in`).

    Returns
    -------
    list of str
        The absolute paths left in (``check``) or removed from the card.
    """
    path = head / PROBE_DIR / CARD_FILE
    card = json.loads(path.read_text())
    found = _absolute_paths(card)
    if check:
        return found
    provenance = card.get("provenance") or {}
    base = models or built_in(provenance) or default_models_dir()
    portable = portable_provenance(provenance, models_dir=base)
    if portable == provenance:
        return found
    card["provenance"] = portable
    left = _absolute_paths(card)
    if left:
        raise SystemExit(f"{path}: absolute paths outside the provenance: {left}")
    text = json.dumps(card, indent=2, sort_keys=True, allow_nan=False)
    atomic_write_bytes(path, text.encode())
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("heads", nargs="*", type=Path,
                        help="Head directories (default: every head under MODELS/heads).")
    parser.add_argument("--models-dir", type=Path, default=None,
                        help="Where the heads are (default: $AUDITOR_MODELS_DIR, else the "
                             "repository's models/).")
    parser.add_argument("--built-in", type=Path, default=None,
                        help="The models dir the heads were built with (default: read off "
                             "each card's SAE path).")
    parser.add_argument("--check", action="store_true",
                        help="Rewrite nothing; exit 1 if a card records an absolute path.")
    args = parser.parse_args(argv)
    models = args.models_dir or default_models_dir()
    heads = args.heads or sorted(p.parent for p in (models / "heads").glob(f"*/{CONFIG_FILE}"))
    dirty = False
    for head in heads:
        paths = recard(head, models=args.built_in, check=args.check)
        dirty |= bool(paths)
        verb = "records" if args.check else "re-carded, removed"
        print(f"{head}: " + (f"{verb} {len(paths)} absolute path(s)" if paths else "portable"))
        for p in paths:
            print(f"  {p}")
    return 1 if args.check and dirty else 0


if __name__ == "__main__":
    sys.exit(main())
