"""The words of the Course extension (images/extension/src/words.ts): the student's
catalog as the page hands it (helper/capability.py extension_text), English where
the page has none. The TypeScript is transpiled by the extension build's own
TypeScript and run under node, with a stand-in for JupyterLab's PageConfig."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from nbunits.core import i18n
from nbunits.helper.capability import EXTENSION_PREFIX, extension_text

from .test_stop_timing import typescript

SRC = Path(__file__).resolve().parents[2] / "images" / "extension" / "src"


@pytest.fixture(scope="module")
def words(tmp_path_factory: pytest.TempPathFactory) -> Path:
    node, ts = shutil.which("node"), typescript()
    if node is None or ts is None:
        pytest.skip("needs node and the Course extension's build cache (images/extension/build)")
    out = tmp_path_factory.mktemp("words")
    stub = out / "node_modules" / "@jupyterlab" / "coreutils"
    stub.mkdir(parents=True)
    (stub / "index.js").write_text(  # the page's options: NBUNITS_PAGE (JSON) here
        "const o = JSON.parse(process.env.NBUNITS_PAGE || '{}');\n"
        "exports.PageConfig = {getOption: name => o[name] || ''};\n")
    for name in ("stops", "words"):
        subprocess.run([node, "-e", """
            const ts = require(process.argv[1]), fs = require('fs');
            const js = ts.transpileModule(fs.readFileSync(process.argv[2], 'utf8'), {compilerOptions:
                {module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2018, strict: true}});
            fs.writeFileSync(process.argv[3], js.outputText);
            """, str(ts), str(SRC / f"{name}.ts"), str(out / f"{name}.js")], check=True)
    return out


def run(words: Path, page: dict[str, str], *calls: tuple[Any, ...]) -> Any:
    """(words.ENGLISH, [words.t(*args) for args in calls]) on a page with these options."""
    script = ("const m = require(process.argv[1]); const calls = JSON.parse(process.argv[2]);"
              "process.stdout.write(JSON.stringify([m.ENGLISH, calls.map(a => m.t(...a))]));")
    done = subprocess.run(["node", "-e", script, str(words / "words.js"), json.dumps(calls)],
                          check=True, capture_output=True, text=True, cwd=words,
                          env={"NBUNITS_PAGE": json.dumps(page), "PATH": "/usr/bin:/bin"})
    return json.loads(done.stdout)


def test_the_extension_says_the_student_s_words_and_english_where_it_has_none(words):
    calls = (("lab.menu.course",), ("lab.reset.question", {"name": "a.ipynb"}),
             ("lab.stop.idle", {"left": "5 min"}))
    english, said = run(words, extension_text("fr"), *calls)
    assert said == ["Cours", "Remplacer votre copie de a.ipynb par la version actuelle du cours ?",
                    i18n.catalog("fr")["lab.stop.idle"].format(left="5 min")]
    # An older config (no words), or a broken one: the extension's own English.
    for page in ({}, {"nbunitsText": "{not json"}, {"nbunitsText": '["a"]'}):
        assert run(words, page, *calls)[1] == [
            "Course", "Replace your copy of a.ipynb with the course's current version?",
            i18n.catalog("en")["lab.stop.idle"].format(left="5 min")]
    # A key the page lacks: English, the rest still the student's.
    partial = {"nbunitsText": json.dumps({"lab.menu.course": "Cours"})}
    assert run(words, partial, ("lab.menu.course",), ("lab.menu.id",))[1] == [
        "Cours", "Show my student id"]
    # The extension's English is en.json's, key for key.
    assert english == {k: v for k, v in i18n.catalog("en").items()
                       if k.startswith(EXTENSION_PREFIX)}


def test_every_word_the_extension_asks_for_is_in_the_catalogs():
    used = {key for path in SRC.glob("*.ts")
            for key in re.findall(r"'(lab\.[a-z_.]+)'", path.read_text())}
    # Built keys: lab.duration.<unit>[s] (stops.ts duration()).
    used |= {f"lab.duration.{unit}{s}" for unit in ("second", "minute", "hour") for s in ("", "s")}
    assert len(used) > 30
    for language in i18n.available():
        assert used <= set(i18n.catalog(language)), language
