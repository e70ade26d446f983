"""The README's examples, run as written.

Every ```bash block right after a ``<!-- test: readme -->`` line is run by bash (``set -e``)
and every such ```python block by this environment's Python, with ``docs`` (the first 10
rows of ``data.jsonl``) already defined. Each runs in a fresh folder that holds a 40-row
``data.jsonl`` (``id``, ``text``, ``label``: ham and spam e-mails of the bundled sample) and
the repository's ``samples/``, with this environment's ``auditor`` first on the PATH and the
embedded default model. A full-line comment ``# …`` in such a block is output the block
must print. So an example whose command, flag or printed result changes fails here instead
of misleading a reader.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- test: readme"
FENCE = re.compile(r"^```(bash|python)\n(.*?)^```", re.S | re.M)
# What a Python example may take as given: the documents a reader already has.
PYTHON_PRELUDE = ("import json\n"
                  "docs = [json.loads(line)\n"
                  "        for line in open('data.jsonl', encoding='utf-8')][:10]\n")


def readme_blocks(text: str) -> list[tuple[int, str, str]]:
    """``(line, language, code)`` of each marked bash or python block of the README."""
    blocks = []
    for m in FENCE.finditer(text):
        before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        if before.startswith(MARKER):
            blocks.append((text[:m.start()].count("\n") + 1, m.group(1), m.group(2)))
    return blocks


def expected_output(code: str) -> list[str]:
    """The full-line comments of a block: what it must print."""
    return [line.strip()[2:] for line in code.splitlines()
            if line.strip().startswith("# ")]


def test_the_marked_blocks_are_found() -> None:
    blocks = readme_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 5
    assert any("auditor filter" in code for _, _, code in blocks)
    assert {lang for _, lang, _ in blocks} == {"bash", "python"}
    text = ("<!-- test: readme -->\n```bash\necho hi\n# hi\n```\n```bash\nnot me\n```\n"
            "<!-- test: readme -->\n```python\nprint(1)\n```\n```python\nnot me\n```\n")
    assert [(lang, code, expected_output(code)) for _, lang, code in readme_blocks(text)] == \
        [("bash", "echo hi\n# hi\n", ["hi"]), ("python", "print(1)\n", [])]


def _data(path: Path) -> None:
    rows = [json.loads(line) for line in
            (ROOT / "samples" / "audit-sample.jsonl").read_text().splitlines()]
    ham = [r for r in rows if r["label"] == "ham"][:23]
    spam = [r for r in rows if r["label"] == "spam"][:17]
    path.write_text("".join(json.dumps({"id": r["id"], "text": r["text"],
                                        "label": r["label"]}) + "\n" for r in ham + spam))


@pytest.mark.slow
@pytest.mark.parametrize("block", range(len(readme_blocks(
    (ROOT / "README.md").read_text(encoding="utf-8")))))
def test_readme_example_runs_as_written(block: int, tmp_path: Path) -> None:
    line, lang, code = readme_blocks((ROOT / "README.md").read_text(encoding="utf-8"))[block]
    _data(tmp_path / "data.jsonl")
    (tmp_path / "samples").symlink_to(ROOT / "samples")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}"
           f"{os.environ.get('PATH', '')}", "PYTHONPATH": str(ROOT),
           "XDG_DATA_HOME": str(tmp_path / "xdg")}
    env.pop("AUDITOR_HEADS_PATH", None)
    command = (["bash", "-c", "set -euo pipefail\n" + code + "\n"] if lang == "bash"
               else [sys.executable, "-c", PYTHON_PRELUDE + code])
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, f"README.md:{line}\n{done.stdout}\n{done.stderr}"
    for want in expected_output(code):
        assert want in done.stdout, f"README.md:{line} promises {want!r}:\n{done.stdout}"
