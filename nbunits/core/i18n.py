"""The language of what a student reads: one catalog file per language, and the choice.

A catalog is locales/<tag>.json (installed as nbunits/data/locales/): a flat object of
message keys to text with `{name}` placeholders (str.format). en.json is complete by
definition; adding a language is adding its file (a unit test checks that it has every
key of en.json with the same placeholders). `negotiate()` picks the language: the
launch's locale (the LMS's, or the one remembered for the student), else the
browser's Accept-Language, else the course's default.
"""

from __future__ import annotations

import json
import re
import string
from functools import cache
from html import escape

from nbunits.core.data import data_dir
from nbunits.core.errors import Code, NbunitsError

DEFAULT = "en"
# A BCP 47 tag as LMSs and browsers send it (fr, fr-FR, fr_CA, zh-Hant-TW); longer
# or stranger input is ignored, never an error: it is the LMS's or the browser's.
_TAG_RE = re.compile(r"[a-z]{1,8}(-[a-z0-9]{1,8}){0,4}")
MAX_TAG = 35
MAX_ACCEPT = 1000  # characters of an Accept-Language header read; browsers send < 200
MAX_RANGES = 20
_Q_RE = re.compile(r"q=(0(\.[0-9]{0,3})?|1(\.0{0,3})?)")


@cache
def available() -> tuple[str, ...]:
    """The languages with a catalog, DEFAULT first."""
    names = sorted(f.name.removesuffix(".json") for f in (data_dir() / "locales").iterdir()
                   if f.name.endswith(".json"))
    return (DEFAULT, *(n for n in names if n != DEFAULT))


@cache
def catalog(language: str) -> dict[str, str]:
    if language not in available():
        raise KeyError(language)
    loaded = json.loads((data_dir() / "locales" / f"{language}.json").read_text("utf-8"))
    return {str(k): str(v) for k, v in loaded.items() if not k.startswith("_")}


def text(language: str, key: str, **values: object) -> str:
    """The message `key` in `language` (the default language's if the catalog lacks it)."""
    found = catalog(language) if language in available() else {}
    return (found.get(key) or catalog(DEFAULT)[key]).format(**values)


def error(code: Code, language: str, key: str, hint: str | None = None,
          retry_after: int | None = None, **values: object) -> NbunitsError:
    """An error a student reads in `language`: the message `key` (with `values`) and the
    student hint `hint` (a key too)."""
    return NbunitsError(code, text(language, key, **values),
                        student_hint=text(language, hint) if hint else None,
                        retry_after=retry_after, language=language)


def html(language: str, key: str, **markup: str) -> str:
    """The message as HTML: its text escaped, its placeholders filled with `markup`
    (already HTML: the caller escapes what it puts in)."""
    found = catalog(language) if language in available() else {}
    return escape(found.get(key) or catalog(DEFAULT)[key], quote=False).format(**markup)


def placeholders(message: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(message) if name is not None}


def match(tag: str, languages: tuple[str, ...]) -> str | None:
    """The language of `languages` a tag names (fr-FR, fr_CA, FR -> fr), or None."""
    tag = tag.strip().replace("_", "-").lower()
    if len(tag) > MAX_TAG or not _TAG_RE.fullmatch(tag):
        return None
    lowered = {language.lower(): language for language in languages}
    parts = tag.split("-")
    for end in range(len(parts), 0, -1):  # fr-ca-x -> fr-ca -> fr
        found = lowered.get("-".join(parts[:end]))
        if found:
            return found
    return None


def accepted(header: str) -> list[str]:
    """Accept-Language's tags, most wanted first (q=0 and malformed ranges dropped)."""
    ranked: list[tuple[float, int, str]] = []
    for index, item in enumerate(header[:MAX_ACCEPT].split(",")[:MAX_RANGES]):
        tag, _, params = item.partition(";")
        weight = 1.0
        if params:
            q = _Q_RE.fullmatch(params.strip().replace(" ", ""))
            if q is None:
                continue
            weight = float(q.group(0)[2:])
        if weight > 0 and tag.strip() != "*":
            ranked.append((-weight, index, tag.strip()))
    return [tag for _, _, tag in sorted(ranked)]


def negotiate(launch_locale: str | None, accept_language: str | None, course_default: str,
              languages: tuple[str, ...] | None = None) -> str:
    """The language a student's page is in: the launch's locale if it names one we
    have, else the first of Accept-Language's we have, else the course's default
    (or DEFAULT, if the course names one we no longer have)."""
    languages = available() if languages is None else languages
    for tag in [launch_locale or "", *accepted(accept_language or "")]:
        found = match(tag, languages)
        if found:
            return found
    return course_default if course_default in languages else DEFAULT
