"""Text notebooks (Jupytext's markdown and percent formats) published as .ipynb: which
files are masters, the notebook made of each, a name clash, texts jupytext cannot read,
and the bounds on reading a teacher's text (no program run, no configuration file
read, CPU and memory limited). The integration side: tests/integration/test_course_repo.py."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import jupytext
import jupytext.config
import pytest

from nbunits.admin import text_notebooks
from nbunits.admin.publish import check_masters, publish
from nbunits.admin.text_notebooks import convert, find_text_masters, is_text_notebook
from nbunits.core.errors import NbunitsError

EXAMPLES = Path(__file__).parents[2] / "examples" / "demo"

MD_HEADER = """---
jupyter:
  jupytext:
    text_representation:
      extension: .md
      format_name: markdown
      format_version: '1.3'
      jupytext_version: 1.19.6
  kernelspec:
    display_name: Python 3
    language: python
    name: python3
---
"""
MD = MD_HEADER + """
# Loops

A `for` loop:

```python
for i in range(3):
    print(i)
```
"""
PY = """# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # While

# %%
n = 0
while n < 3:
    n += 1
"""


def cells(data: bytes) -> list[tuple[str, str]]:
    return [(c["cell_type"], "".join(c["source"])) for c in json.loads(data)["cells"]]


def course(root: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


# --- which files are text notebooks ---------------------------------------------------

@pytest.mark.parametrize("name, text, expected", [
    ("loops.md", MD, True),
    ("while.py", PY, True),
    ("README.md", "# A course\n\nRead `week1/loops.md` first.\n", False),
    # Front matter of another tool, and a page that talks about the header.
    ("page.md", "---\ntitle: Loops\n---\n\n# Loops\n", False),
    ("notes.md", "# Notes\n\nJupytext writes `text_representation` in its header.\n", False),
    ("helpers.py", "def mean(xs):\n    return sum(xs) / len(xs)\n", False),
    ("tool.py", "# ---\n# title: x\n# ---\nKEY = 'text_representation'\n", False),
    # The header without a text representation: jupytext's pairing only, not a master.
    ("paired.md", "---\njupyter:\n  kernelspec:\n    name: python3\n---\n\n# x\n", False),
    ("loops.txt", MD, False),
])
def test_a_text_notebook_is_told_by_its_jupytext_header(name, text, expected):
    assert is_text_notebook(text.encode(), Path(name).suffix) is expected


def test_only_headed_md_and_py_files_outside_hidden_folders_are_found(tmp_path):
    source = course(tmp_path, {"week1/loops.md": MD, "week1/while.py": PY, "README.md": "# Hi\n",
                               "helpers.py": "X = 1\n", ".hidden/loops.md": MD, ".loops.md": MD})
    assert find_text_masters(source) == {"week1/loops.md": "week1/loops.ipynb",
                                         "week1/while.py": "week1/while.ipynb"}


# --- the notebook made of each --------------------------------------------------------

def test_md_and_percent_py_become_their_cells_in_a_plain_normalized_notebook():
    md = convert(MD.encode(), "week1/loops.md")
    assert cells(md) == [("markdown", "# Loops\n\nA `for` loop:"),
                         ("code", "for i in range(3):\n    print(i)")]
    py = convert(PY.encode(), "week1/while.py")
    assert cells(py) == [("markdown", "# While"), ("code", "n = 0\nwhile n < 3:\n    n += 1")]
    nb = json.loads(md)
    assert nb["metadata"] == {"kernelspec": {"display_name": "Python 3", "language": "python",
                                             "name": "python3"}}, "no jupytext pairing"
    assert nb["nbformat"] == 4 and all(c["id"] for c in nb["cells"])
    # The same text gives the same bytes: an unchanged master is not an update.
    assert convert(MD.encode(), "week1/loops.md") == md


def test_a_course_publishes_its_text_notebooks_as_notebooks_and_its_plain_files_as_they_are(tmp_path):
    source, target = tmp_path / "src", tmp_path / "published"
    readme = "# A course\n"
    course(source, {"week1/loops.md": MD, "week1/while.py": PY, "README.md": readme,
                    "week1/helpers.py": "X = 1\n", "intro.ipynb": convert(MD.encode(), "intro.md")})
    assert check_masters(source) == {}
    assert sorted(publish(source, target, set())) == ["intro.ipynb", "week1/loops.ipynb",
                                                      "week1/while.ipynb"]
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == [
        "README.md", "intro.ipynb", "week1", "week1/helpers.py", "week1/loops.ipynb",
        "week1/while.ipynb"], "the text itself is not published: one copy per exercise"
    assert cells((target / "week1" / "loops.ipynb").read_bytes())[1][1].startswith("for i")
    assert (target / "README.md").read_text() == readme
    # A text notebook that goes away takes its notebook with it.
    (source / "week1" / "while.py").unlink()
    assert sorted(publish(source, target, set())) == ["intro.ipynb", "week1/loops.ipynb"]
    assert not (target / "week1" / "while.ipynb").exists()


def test_the_demo_course_has_a_text_notebook(tmp_path):
    assert check_masters(EXAMPLES) == {}
    published = publish(EXAMPLES, tmp_path / "demo", set())
    assert "week1/functions.ipynb" in published and len(published) == 5
    assert not (tmp_path / "demo" / "week1" / "functions.md").exists()
    assert (tmp_path / "demo" / "README.md").is_file(), "a plain README stays a file"


# --- what is reported and skipped -----------------------------------------------------

def test_a_text_notebook_beside_a_notebook_of_its_name_is_reported_and_the_rest_publishes(tmp_path):
    source, target = tmp_path / "src", tmp_path / "published"
    ipynb = convert(PY.encode(), "w/loops.py")
    course(source, {"w/loops.md": MD, "w/loops.ipynb": ipynb, "w/while.py": PY,
                    "x/same.md": MD, "x/same.py": PY})
    broken = check_masters(source)
    assert sorted(broken) == ["w/loops.md", "x/same.md", "x/same.py"], broken
    assert broken["w/loops.md"] == "w/loops.md: a text notebook published as w/loops.ipynb, which the repository has " \
        "already (keep one of them)"
    assert "as x/same.py would be" in broken["x/same.md"]
    assert sorted(publish(source, target, set(broken))) == ["w/loops.ipynb", "w/while.ipynb"]
    assert (target / "w" / "loops.ipynb").read_bytes() == ipynb, "the notebook itself publishes"
    assert sorted(p.name for p in (target / "w").iterdir()) == ["loops.ipynb", "while.ipynb"]
    assert not (target / "x").exists() or not any((target / "x").iterdir())


@pytest.mark.parametrize("text, reason", [
    (MD.replace("format_name: markdown", "format_name: pandoc"),
     "a Jupytext notebook in the 'pandoc' format: nbunits publishes .md text notebooks in the "
     "markdown format only (jupytext --to md converts it)"),
    (MD.replace("format_name: markdown", "format_name: myst"), "in the 'myst' format"),
    (MD.replace("kernelspec:", "kernelspec: [: x"), "jupytext cannot read it"),
    (MD.replace("      format_name: markdown\n", ""), "header names no text_representation: format_name"),
    (MD + "caf\xe9\n", "not UTF-8 text"),
])
def test_a_text_notebook_jupytext_cannot_read_is_reported_and_skipped(tmp_path, text, reason):
    source, target = tmp_path / "src", tmp_path / "published"
    data = text.encode("latin-1") if "\xe9" in text else text.encode()
    course(source, {"bad.md": data, "good.md": MD})
    broken = check_masters(source)
    assert list(broken) == ["bad.md"] and reason in broken["bad.md"], broken
    assert broken["bad.md"].startswith("bad.md: ")
    assert publish(source, target, set(broken)) == ["good.ipynb"]
    assert sorted(p.name for p in target.iterdir()) == ["good.ipynb"]


def test_a_percent_py_in_another_format_is_reported(tmp_path):
    source = course(tmp_path, {"light.py": PY.replace("format_name: percent", "format_name: light"),
                               " spaced.md": MD})
    broken = check_masters(source)
    assert "jupytext --to py:percent converts it" in broken["light.py"]
    assert "invalid notebook path" in broken[" spaced.md"], "the notebook's name is checked"


# --- reading a teacher's text: bounded, nothing run, nothing else read ------------------

def test_a_text_master_is_read_as_masters_are_no_link_no_fifo_no_more_than_32_mib(tmp_path):
    source, target = tmp_path / "src", tmp_path / "published"
    course(source, {"ok.md": MD})
    (source / "link.md").symlink_to(source / "ok.md")
    os.mkfifo(source / "fifo.md")  # read non-blocking: never waits
    with (source / "huge.md").open("wb") as f:
        f.write(MD_HEADER.encode())
        f.truncate(32 * 1024 * 1024 + 1)
    broken = check_masters(source)
    assert sorted(broken) == ["fifo.md", "huge.md", "link.md"], broken
    assert "larger than 32 MiB" in broken["huge.md"] and "symbolic link" in broken["link.md"]
    assert publish(source, target, set(broken)) == ["ok.ipynb"]


def test_no_program_runs_and_no_configuration_file_is_read(tmp_path, monkeypatch):
    ran = tmp_path / "ran"

    def refuse(self, args, *a, **kw):
        ran.write_text(repr(args))  # the conversion's child writes it (it is a fork)
        raise OSError("no program may run")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    two = MD_HEADER + "\n# One\n\nFirst part.\n\n# Two\n\nSecond part.\n"
    source = course(tmp_path / "src", {
        "pandoc.md": MD.replace("format_name: markdown", "format_name: pandoc"),
        "quarto.md": MD.replace("format_name: markdown", "format_name: quarto"),
        # Configuration that jupytext itself reads beside a file: split at headings.
        "a/two.md": two, "a/jupytext.toml": "split_at_heading = true\n",
        "b/two.md": two, "b/pyproject.toml": "[tool.jupytext]\nsplit_at_heading = true\n"})
    broken = check_masters(source)
    assert sorted(broken) == ["pandoc.md", "quarto.md"] and not ran.exists()
    for folder in "ab":
        path = source / folder / "two.md"
        config = jupytext.config.load_jupytext_config(str(path))
        assert len(jupytext.read(path, config=config).cells) == 2, \
            "the configuration does change what jupytext reads from a path"
        assert len(cells(convert(path.read_bytes(), f"{folder}/two.md"))) == 1


def aliases(levels: int) -> str:
    """YAML whose last list, expanded, holds 10**levels strings (in a few hundred bytes)."""
    lines = ["  a0: &a0 [" + ", ".join(["x"] * 10) + "]"]
    lines += [f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("name, text", [
    ("slow.py", PY + "# %%\n1\n" * 150_000),  # jupytext's reader is quadratic in cells: minutes
    ("bomb.md", MD.replace("  kernelspec:", aliases(9) + "  kernelspec:")),  # nbformat expands it
], ids=["quadratic", "aliases"])
def test_reading_a_text_is_cut_at_its_cpu_and_memory_limits(tmp_path, monkeypatch, name, text):
    monkeypatch.setattr(text_notebooks, "CPU_SECONDS", 1)
    source = course(tmp_path, {name: text})
    with pytest.raises(NbunitsError) as info:
        convert(text.encode(), name)
    assert "jupytext did not read it within 1 s of CPU time" in info.value.message \
        or "jupytext needed more than" in info.value.message, info.value.message
    assert list(check_masters(source)) == [name]
