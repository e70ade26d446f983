"""Near-duplicate detection for corpus reports: exact normalised-text hashes plus MinHash LSH.

Texts are normalised (Unicode NFKC, case-folded, every run of non-alphanumeric characters
turned into one space) and cut into word shingles (``shingle_size`` consecutive words; a
text with fewer words is one shingle). Two texts whose normalised forms are equal are
*exact* duplicates (found with a 64-bit hash of the normalised text). The others are
compared through MinHash signatures (``num_perm`` multiply-shift hash functions over 64-bit
shingle hashes): locality-sensitive hashing with ``bands`` bands of ``num_perm / bands``
rows proposes candidate pairs, and a pair is a near duplicate when its *estimated Jaccard
similarity* (the share of equal signature entries) is at least ``threshold``. Groups are
the connected components of the duplicate pairs (union–find).

Time and memory are linear in the corpus: one pass over the words, ``4 · num_perm`` bytes
of signature per document, and one sort per band. Candidate buckets larger than
:data:`FULL_BUCKET` documents are checked against their first member and their predecessor
only (instead of all pairs), which keeps pathological buckets (boilerplate) linear.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from auditor.cancel import CancelToken, check_cancel
from auditor.errors import ConfigError

__all__ = ["FULL_BUCKET", "DuplicateGroup", "NearDuplicateFinder", "normalize_text"]

#: Buckets up to this size are checked pair by pair; larger ones in linear time.
FULL_BUCKET = 64
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit multiplier (golden ratio)
_CHUNK = 2048


def normalize_text(text: str) -> list[str]:
    """The words of a text after normalisation (NFKC, case fold, punctuation to spaces).

    Parameters
    ----------
    text : str
        Any text.

    Returns
    -------
    list of str
        Its words; empty for a text with no letter or digit.

    Examples
    --------
    >>> normalize_text("Hello,   WORLD! It's 2024.")
    ['hello', 'world', 'it', 's', '2024']
    """
    return _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).split()


@dataclass
class DuplicateGroup:
    """Documents that are (near) duplicates of each other.

    Parameters
    ----------
    doc_ids : list of str
        Members, in the order they were added.
    min_similarity : float
        Lowest estimated Jaccard similarity on the pairs that joined the group (1.0 when
        every member is an exact duplicate of another).
    exact : bool
        True when all members have the same normalised text.
    """

    doc_ids: list[str]
    min_similarity: float
    exact: bool


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def add(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, a: int, b: int) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        if rb < ra:
            ra, rb = rb, ra
        self.parent[rb] = ra
        return True


@dataclass
class _State:
    ids: list[str] = field(default_factory=list)
    uf: _UnionFind = field(default_factory=_UnionFind)
    exact_of: dict[bytes, int] = field(default_factory=dict)
    sig_rows: list[int] = field(default_factory=list)  # doc index of each signature
    sigs: list[np.ndarray] = field(default_factory=list)
    edges: list[tuple[int, int, float, bool]] = field(default_factory=list)
    exact_dups: int = 0
    no_words: int = 0


class NearDuplicateFinder:
    """Streaming near-duplicate finder; :meth:`add` texts, then read :meth:`groups`.

    Parameters
    ----------
    threshold : float, default 0.8
        Estimated Jaccard similarity at or above which two texts are near duplicates.
    shingle_size : int, default 5
        Words per shingle.
    num_perm : int, default 128
        MinHash functions (signature length).
    bands : int, default 32
        LSH bands; must divide ``num_perm``. With 32 × 4, a pair with similarity 0.8 is
        a candidate with probability 1 − (1 − 0.8⁴)³² ≈ 0.99996.
    seed : int, default 0
        Seed of the hash functions (same seed, same result).

    Raises
    ------
    ConfigError
        A parameter is out of range.

    Examples
    --------
    >>> f = NearDuplicateFinder()
    >>> f.add("a", "The cat sat on the mat today.")
    >>> f.add("b", "the cat sat on the mat, today!")
    >>> f.add("c", "Something else entirely, with other words.")
    >>> [g.doc_ids for g in f.groups()]
    [['a', 'b']]
    """

    def __init__(
        self,
        *,
        threshold: float = 0.8,
        shingle_size: int = 5,
        num_perm: int = 128,
        bands: int = 32,
        seed: int = 0,
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ConfigError(f"threshold must be in (0, 1], got {threshold!r}",
                              field="threshold")
        if shingle_size < 1:
            raise ConfigError("shingle_size must be >= 1", field="shingle_size")
        if num_perm < 1 or bands < 1 or num_perm % bands:
            raise ConfigError(f"bands ({bands}) must divide num_perm ({num_perm})",
                              field="bands")
        self.threshold = float(threshold)
        self.shingle_size = int(shingle_size)
        self.num_perm = int(num_perm)
        self.bands = int(bands)
        rng = np.random.default_rng(seed)
        self._a = (rng.integers(0, 2**63, size=(num_perm, 1), dtype=np.uint64) << np.uint64(1)
                   | np.uint64(1))
        self._b = rng.integers(0, 2**63, size=(num_perm, 1), dtype=np.uint64)
        self._s = _State()
        self._groups: list[DuplicateGroup] | None = None

    @property
    def method(self) -> str:
        """One-line description of the method and its parameters."""
        rows = self.num_perm // self.bands
        return (f"exact: hash of normalised text; near: MinHash ({self.num_perm} permutations, "
                f"LSH {self.bands} bands x {rows} rows) over {self.shingle_size}-word shingles "
                f"of normalised text, pairs kept at estimated Jaccard >= {self.threshold:g}")

    def __len__(self) -> int:
        return len(self._s.ids)

    def _shingles(self, words: list[str]) -> np.ndarray:
        h = np.fromiter((zlib.crc32(w.encode()) for w in words), dtype=np.uint64,
                        count=len(words))
        k = min(self.shingle_size, len(words))
        n = len(words) - k + 1
        out = np.zeros(n, dtype=np.uint64)
        for j in range(k):
            out = out * _MIX + h[j:j + n] + np.uint64(j + 1)
        return out

    def _signature(self, shingles: np.ndarray) -> np.ndarray:
        sig = np.full(self.num_perm, np.iinfo(np.uint32).max, dtype=np.uint32)
        for start in range(0, shingles.size, _CHUNK):
            x = shingles[None, start:start + _CHUNK]
            hashed = ((self._a * x + self._b) >> np.uint64(32)).astype(np.uint32)
            np.minimum(sig, hashed.min(axis=1), out=sig)
        return sig

    @staticmethod
    def key(words: list[str]) -> bytes:
        """The exact-duplicate key of a text's normalised words (:func:`normalize_text`):
        an 8-byte hash. Shared by the report's groups and the filter's deduplication."""
        return hashlib.blake2b(" ".join(words).encode(), digest_size=8).digest()

    def signature(self, words: list[str]) -> np.ndarray:
        """The MinHash signature (``num_perm`` uint32) of a text's non-empty normalised words.

        Examples
        --------
        >>> f = NearDuplicateFinder(num_perm=8, bands=2)
        >>> a = f.signature(normalize_text("the cat sat on the mat"))
        >>> b = f.signature(normalize_text("The cat sat on the mat!"))
        >>> a.shape, bool((a == b).all())
        ((8,), True)
        """
        return self._signature(self._shingles(words))

    def add(self, doc_id: str, text: str) -> None:
        """Add one document.

        Parameters
        ----------
        doc_id : str
            Its id (reported in the groups).
        text : str
            Its text; a text without any letter or digit is counted but never grouped.
        """
        s = self._s
        self._groups = None
        i = s.uf.add()
        s.ids.append(doc_id)
        words = normalize_text(text)
        if not words:
            s.no_words += 1
            return
        first = s.exact_of.setdefault(self.key(words), i)
        if first != i:
            s.exact_dups += 1
            s.uf.union(first, i)
            s.edges.append((first, i, 1.0, True))
            return
        s.sig_rows.append(i)
        s.sigs.append(self.signature(words))

    def add_many(self, items: Iterable[tuple[str, str]]) -> None:
        """Add ``(doc_id, text)`` pairs (see :meth:`add`)."""
        for doc_id, text in items:
            self.add(doc_id, text)

    def _link_candidates(self, cancel: CancelToken | None = None) -> None:
        s = self._s
        if len(s.sigs) < 2:
            return
        sig = np.stack(s.sigs)
        rows = np.asarray(s.sig_rows)
        r = self.num_perm // self.bands
        checked: set[tuple[int, int]] = set()

        def check(a: int, b: int) -> None:
            pair = (a, b) if a < b else (b, a)
            if pair in checked:
                return
            checked.add(pair)
            sim = float((sig[a] == sig[b]).mean())
            if sim >= self.threshold:
                s.uf.union(int(rows[a]), int(rows[b]))
                s.edges.append((int(rows[a]), int(rows[b]), sim, False))

        for band in range(self.bands):
            check_cancel(cancel, f"near-duplicate band {band}")
            block = sig[:, band * r:(band + 1) * r].astype(np.uint64)
            key = np.zeros(len(sig), dtype=np.uint64)
            for j in range(r):
                key = key * _MIX + block[:, j] + np.uint64(j + 1)
            order = np.argsort(key, kind="stable")
            sorted_keys = key[order]
            starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
            ends = np.r_[starts[1:], len(order)]
            for lo, hi in zip(starts, ends, strict=True):
                if hi - lo < 2:
                    continue
                members = order[lo:hi].tolist()
                if len(members) <= FULL_BUCKET:
                    for x in range(len(members)):
                        for y in range(x + 1, len(members)):
                            check(members[x], members[y])
                else:
                    for x in range(1, len(members)):
                        check(members[0], members[x])
                        check(members[x - 1], members[x])

    def groups(self, *, cancel: CancelToken | None = None) -> list[DuplicateGroup]:
        """Duplicate groups (two or more members), largest first, then by first member.

        Parameters
        ----------
        cancel : CancelToken or None
            Checked before each LSH band; a cancelled search raises
            :class:`~auditor.errors.JobCancelled` (calling again searches afresh, with
            the same result).

        Returns
        -------
        list of DuplicateGroup
        """
        if self._groups is not None:
            return self._groups
        self._link_candidates(cancel)
        s = self._s
        members: dict[int, list[int]] = {}
        for i in range(len(s.ids)):
            members.setdefault(s.uf.find(i), []).append(i)
        min_sim: dict[int, float] = {}
        near: set[int] = set()
        for a, _, sim, is_exact in s.edges:
            root = s.uf.find(a)
            min_sim[root] = min(min_sim.get(root, 1.0), sim)
            if not is_exact:
                near.add(root)
        out = []
        for root, idx in members.items():
            if len(idx) < 2:
                continue
            sim = min_sim.get(root, 1.0)
            out.append((len(idx), idx[0], DuplicateGroup(
                doc_ids=[s.ids[i] for i in idx], min_similarity=sim, exact=root not in near)))
        out.sort(key=lambda t: (-t[0], t[1]))
        self._groups = [g for _, _, g in out]
        return self._groups

    def summary(self, *, max_groups: int = 20, max_ids: int = 10,
                cancel: CancelToken | None = None) -> dict[str, object]:
        """Counts and the largest groups, JSON-ready.

        Parameters
        ----------
        max_groups : int, default 20
            Groups listed.
        max_ids : int, default 10
            Member ids listed per group.
        cancel : CancelToken or None
            See :meth:`groups`.

        Returns
        -------
        dict
            ``method``, ``threshold``, ``documents`` (checked), ``no_words`` (texts with no
            letter or digit), ``exact_duplicates`` (documents whose normalised text equals
            an earlier one's), ``near_duplicates`` (documents in a group other than its
            first member; includes the exact ones), ``groups``, ``largest_group`` and
            ``top_groups`` (``size``, ``doc_ids``, ``min_similarity``, ``exact``).
        """
        groups = self.groups(cancel=cancel)
        return {
            "method": self.method,
            "threshold": self.threshold,
            "documents": len(self._s.ids),
            "no_words": self._s.no_words,
            "exact_duplicates": self._s.exact_dups,
            "near_duplicates": sum(len(g.doc_ids) - 1 for g in groups),
            "groups": len(groups),
            "largest_group": max((len(g.doc_ids) for g in groups), default=0),
            "top_groups": [
                {"size": len(g.doc_ids), "doc_ids": g.doc_ids[:max_ids],
                 "min_similarity": round(g.min_similarity, 4), "exact": g.exact}
                for g in groups[:max_groups]
            ],
        }
