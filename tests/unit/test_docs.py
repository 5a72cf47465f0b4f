"""The documentation stays true to the code and to itself.

README.md and docs/*.md (docs/index.md maps them): the settings page is generated
from the settings' declarations (scripts/settings-doc), the error codes' table is
the registry's (nbunits/core/errors.py), every relative link reaches a file of the
repository and, into a Markdown file, a heading (GitHub's anchors; `mkdocs build
--strict` in scripts/lint checks the site's), and every test the pages cite exists.

Claims name their proof: each claim of docs/security.md's threat model (each part
of a row's "cannot", between semicolons) names the test behind it, and each figure
the pages say was measured (measured, median, N=) names the test or benchmark that
measured it in the same paragraph, list item or table row (docs/BENCHMARKS.md is the
benchmark's own page).
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


CITED_FILE_RE = re.compile(r"(?<![\w/])(?:tests/)?((?:integration/|unit/)?test_\w+\.py)(?!::)")
CITED_BENCH_RE = re.compile(r"`(?:bench/run|(bench/[\w./-]+?))(?: [^`]*)?`")
MEASURED_RE = re.compile(r"\b(?:measured|median)\b|\bN=\d", re.I)
SOURCE_RE = re.compile(r"test_\w+\.py|\bbench/|BENCHMARKS\.md")


def threat_claims(text: str) -> list[tuple[str, str]]:
    """(who, claim) for each claim of the threat model's "cannot" column."""
    section = text.split("## Threat model", 1)[1].split("\n## ", 1)[0]
    found = []
    for row in re.findall(r"^\| \*\*(.+?)\*\*.*?\| .*? \| (.+) \|$", section, re.M):
        who, cannot = row
        # Semicolons inside code spans or parentheses do not end a claim.
        depth, start, parts = 0, 0, []
        for i, char in enumerate(CODE_SPAN_RE.sub(lambda m: "x" * len(m[0]), cannot)):
            depth += {"(": 1, ")": -1}.get(char, 0)
            if char == ";" and depth == 0:
                parts.append(cannot[start:i])
                start = i + 1
        found += [(who, part.strip()) for part in [*parts, cannot[start:]]]
    return found


def blocks(text: str) -> list[str]:
    """Paragraphs, list items and table rows (fenced code left out)."""
    found: list[str] = []
    for paragraph in re.split(r"\n\s*\n", FENCE_RE.sub("", text)):
        current: list[str] = []
        for line in paragraph.splitlines():
            if line.startswith("|") or re.match(r"\s*(?:[-*]|\d+\.) ", line):
                found.append("\n".join(current))
                current = []
            current.append(line)
            if line.startswith("|"):
                found.append("\n".join(current))
                current = []
        found.append("\n".join(current))
    return [b for b in found if b.strip()]


def unsourced_figures(text: str) -> list[str]:
    return [b for b in blocks(text) if MEASURED_RE.search(b) and re.search(r"\d", b)
            and not SOURCE_RE.search(b)]


def test_every_claim_of_the_threat_model_names_its_test():
    claims = threat_claims((REPO / "docs" / "security.md").read_text())
    assert len(claims) >= 10
    missing = [f"{who}: {claim[:100]}" for who, claim in claims if not CITED_TEST_RE.search(claim)]
    assert missing == [], "name a test (`test_x.py::test_y`) for each of these claims"


def test_every_measured_figure_names_its_test_or_benchmark():
    missing = [f"{page.relative_to(REPO)}: {block[:160]!r}"
               for page in PAGES if page.name != "BENCHMARKS.md"
               for block in unsourced_figures(page.read_text())]
    assert missing == [], "say which test or benchmark measured it, in the same block"


def test_an_unbacked_claim_or_figure_is_found():
    page = ("## Threat model\n\n| who | can | cannot |\n| --- | --- | --- |\n"
            "| **a student** | x | a (`test_a.py::test_b`); b (see `c; d`); c `test_c.py` |\n"
            "\n## Next\n")
    assert [c for _, c in threat_claims(page) if not CITED_TEST_RE.search(c)] == \
        ["b (see `c; d`)", "c `test_c.py`"]
    text = ("A start takes 2 s (median, N=5).\n\n- 3 MB each, measured by `bench/run`\n"
            "- 4 MB, measured\n\n| a | 5 ms measured |\n| b | 6 ms (test_x.py) |\n")
    assert unsourced_figures(text) == ["A start takes 2 s (median, N=5).", "- 4 MB, measured",
                                       "| a | 5 ms measured |"]


def test_every_test_the_pages_cite_exists():
    missing = []
    for page in PAGES:
        for file, name in CITED_TEST_RE.findall(page.read_text()):
            path = REPO / "tests" / (file if file.startswith("unit/") else f"integration/{file}")
            if not path.exists() or not re.search(rf"^def {name}\(", path.read_text(), re.M):
                missing.append(f"{page.relative_to(REPO)}: {file}::{name}")
        for file in CITED_FILE_RE.findall(page.read_text()):
            if not [p for p in (REPO / "tests" / file, REPO / "tests" / "integration" / file)
                    if p.exists()]:
                missing.append(f"{page.relative_to(REPO)}: {file}")
        for path in filter(None, CITED_BENCH_RE.findall(page.read_text())):
            if not (REPO / path).exists() and not path.startswith("bench/results/"):
                missing.append(f"{page.relative_to(REPO)}: {path}")
    assert missing == []
