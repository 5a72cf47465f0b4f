"""The documentation stays true to the code and to itself.

README.md and docs/*.md (docs/index.md maps them): the settings page is generated
from the settings' declarations (scripts/settings-doc), the error codes' table is
the registry's (nbunits/core/errors.py), every relative link reaches a file of the
repository and, into a Markdown file, a heading (GitHub's anchors; `mkdocs build
--strict` in scripts/lint checks the site's), and every test the pages cite exists.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from nbunits.core.errors import MEANINGS

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

FENCE_RE = re.compile(r"^```.*?^```[ \t]*$", re.S | re.M)
CODE_SPAN_RE = re.compile(r"`[^`]*`")
LINK_RE = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING_RE = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
CITED_TEST_RE = re.compile(r"`((?:unit/)?test_\w+\.py)::(test_\w+)`")


def prose(text: str) -> str:
    """The text without fenced code blocks and code spans (no links there)."""
    return CODE_SPAN_RE.sub("", FENCE_RE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, inline markup and punctuation
    dropped (letters, digits, `_`, `-` and spaces kept), spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor, a repeated one numbered as GitHub does (-1, -2...)."""
    seen: dict[str, int] = {}
    found = set()
    for match in HEADING_RE.finditer(FENCE_RE.sub("", page.read_text())):
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(page: Path, repo: Path = REPO) -> list[str]:
    broken = []
    for target in LINK_RE.findall(prose(page.read_text())):
        if SCHEME_RE.match(target):
            continue  # a web address: not the repository's
        path, _, fragment = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        where = f"{page.relative_to(repo)}: ({target})"
        if not file.is_relative_to(repo) or not file.exists():
            broken.append(f"{where}: no file {path}")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file):
            broken.append(f"{where}: no heading #{fragment} in {file.relative_to(repo)}")
    return broken


def test_the_settings_page_is_what_scripts_settings_doc_prints():
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "settings-doc")],
                         capture_output=True, text=True, check=True).stdout
    assert (REPO / "docs" / "settings.md").read_text() == out, \
        "the settings changed: .venv/bin/python scripts/settings-doc > docs/settings.md"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_reaches_a_file_and_its_heading(page):
    assert broken_links(page) == []


def test_a_broken_link_or_heading_is_found(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "b.md").write_text("# B\n\n## Students' users\n\n## B\n")
    page = tmp_path / "docs" / "a.md"
    page.write_text("[ok](b.md#students-users) [ok](b.md#b-1) [ok](#a) `[code](gone.md)`\n"
                    "[web](https://example.org/x.md) [gone](c.md) [no heading](b.md#nope)\n"
                    "```\n[fenced](gone.md)\n```\n# A\n")
    assert broken_links(page, tmp_path) == ["docs/a.md: (c.md): no file c.md",
                                            "docs/a.md: (b.md#nope): no heading #nope in docs/b.md"]


def test_the_error_codes_table_is_the_registry():
    admin = (REPO / "docs" / "admin.md").read_text()
    section = admin.split("### Error codes", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| (\w+) \| (.+) \|$", section, re.M)
    expected = [(code.value, str(meaning.status) if meaning.status is not None else "none",
                 meaning.what)
                for code, meaning in sorted(MEANINGS.items(), key=lambda item: item[0].value)]
    assert rows == expected, "docs/admin.md, \"Error codes\": one row per code of MEANINGS"


def test_every_test_the_pages_cite_exists():
    missing = []
    for page in PAGES:
        for file, name in CITED_TEST_RE.findall(page.read_text()):
            path = REPO / "tests" / (file if file.startswith("unit/") else f"integration/{file}")
            if not path.exists() or not re.search(rf"^def {name}\(", path.read_text(), re.M):
                missing.append(f"{page.relative_to(REPO)}: {file}::{name}")
    assert missing == []
