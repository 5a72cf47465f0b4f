"""Settings declared once: file key, command-line option, kind, default and help.

A course setting is a field of `config.CourseConfig` made with `setting()`. That
one declaration gives the course file its key and its check, `nbunits course
add/update` its option and help (admin/cli.py), and docs/settings.md its row
(`markdown()`; a unit test keeps the page in step). Add a setting there, nowhere else.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

_SIZE_RE = re.compile(r"\d+[KMGT]?|infinity")
_ORIGIN_RE = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?")
_DOMAIN_RE = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")
# LTI ids and keys are opaque to us: printable ASCII, no spaces.
OPAQUE_RE = re.compile(r"[!-~]{1,255}")


@dataclass(frozen=True)
class Kind:
    """What values a setting takes: how the command line's text is read, how a value
    is checked, and how a person is told."""

    metavar: str
    values: str  # for help, docs and errors, e.g. "a positive whole number"
    parse: Callable[[str], Any] = str
    valid: Callable[[Any], bool] = lambda value: isinstance(value, str)
    # Given several times on the command line (a list); the option is singular.
    repeat: bool = False
    choices: tuple[str, ...] = ()
    # May be unset (None: the key is left out of the course file); the command line
    # unsets it with the word "none".
    nullable: bool = False


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _matches(pattern: re.Pattern[str] | str) -> Callable[[Any], bool]:
    regex = re.compile(pattern) if isinstance(pattern, str) else pattern
    return lambda value: isinstance(value, str) and regex.fullmatch(value) is not None


def choice(metavar: str, *choices: str) -> Kind:
    return Kind(metavar, "one of " + ", ".join(choices), valid=lambda value: value in choices,
                choices=choices)


def strings(metavar: str, values: str, item: Callable[[Any], bool]) -> Kind:
    """A list, given as one option per item."""
    return Kind(metavar, values, valid=lambda value: isinstance(value, tuple)
                and all(item(v) for v in value), repeat=True)


SECONDS = Kind("SECONDS", "seconds, a positive whole number", int, _positive)
COUNT = Kind("N", "a positive whole number", int, _positive)
COUNT_OR_ZERO = Kind("N", "a whole number (0: none)", int,
                     lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0)
SECONDS_OR_ZERO = Kind("SECONDS", "seconds, a whole number (0: none)", int,
                       lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0)
SIZE = Kind("BYTES", "bytes with a K, M, G or T suffix (1G = 1024^3), or infinity",
            valid=_matches(_SIZE_RE))
QUOTA = Kind("BYTES", "bytes with a K, M, G or T suffix, e.g. 2G; empty: none",
             valid=_matches(r"|[1-9][0-9]*[KMGT]"))
PERCENT = Kind("PERCENT", "a percentage of one CPU, e.g. 100%", valid=_matches(r"\d+%"))
TEXT = Kind("TEXT", "text")
BOOL = Kind("", "true or false", valid=lambda value: isinstance(value, bool))
IMAGE = Kind("NAME", "an image name, e.g. localhost/nbunits/jupyter:latest",
             valid=_matches(r"[A-Za-z0-9][A-Za-z0-9._/:@-]*"))
ORIGINS = Kind("ORIGINS", "origins, space separated, e.g. https://lms.example.org",
               valid=lambda v: isinstance(v, str) and all(_ORIGIN_RE.fullmatch(o)
                                                          for o in v.split()))
OPAQUE = Kind("ID", "printable ASCII without spaces; empty: none",
              valid=_matches(r"|[!-~]{1,255}"))
DOMAINS = strings("DOMAIN", "domain names", _matches(_DOMAIN_RE))
PATH = Kind("PATH", "an absolute path", valid=_matches(r"/.*"))


def parse_when(text: str) -> datetime | None:
    """An ISO 8601 date or date and time; a date is its midnight, and a time without
    an offset is UTC. None if `text` is neither."""
    try:
        when = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _days_or_none(text: str) -> int | None:
    return None if text == "none" else int(text)


WHEN = Kind("WHEN", "an ISO 8601 date or date and time (UTC unless it says), e.g. "
            "2027-01-31; empty: none", valid=lambda v: v == "" or (
                isinstance(v, str) and parse_when(v) is not None))
DAYS_OR_NONE = Kind("DAYS", "days, a whole number (0: at once), or none", _days_or_none,
                    lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)
                                            and v >= 0), nullable=True)


@dataclass(frozen=True)
class Declared:
    """A setting's declaration (the metadata of its dataclass field)."""

    kind: Kind
    help: str
    option: str  # "--memory-max"; "" for settings the command line sets otherwise
    section: str  # where its row goes in docs/settings.md


def setting(default: Any, kind: Kind, help: str, *, option: str | None = None,
            section: str = "", factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field that is a declared setting (see the module's docstring).
    `option`: None derives it from the name (memory_max -> --memory-max), "" for none."""
    declared = {"declared": (kind, help, option, section)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=declared)
    return dataclasses.field(default=default, metadata=declared)


def declared(cls: type) -> Iterator[tuple[dataclasses.Field[Any], Declared]]:
    """The declared settings of a settings dataclass, in order."""
    for field in dataclasses.fields(cls):
        if "declared" not in field.metadata:
            continue
        kind, help, option, section = field.metadata["declared"]
        if option is None:
            option = "--" + (field.name[:-1] if kind.repeat else field.name).replace("_", "-")
        yield field, Declared(kind, help, option, section)


def problems(instance: Any) -> list[str]:
    """The declared settings of `instance` whose value is not of their kind."""
    found = []
    for field, decl in declared(type(instance)):
        value = getattr(instance, field.name)
        if not decl.kind.valid(value):
            found.append(f"{field.name}={value!r} ({decl.kind.values})")
    return found


def default_text(field: dataclasses.Field[Any]) -> str:
    if field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        value = field.default
    if isinstance(value, bool):
        return str(value).lower()
    if value in ("", (), {}, None):
        return "none"
    if isinstance(value, tuple):
        return ", ".join(value)
    return str(value)


def markdown(cls: type, title: str) -> str:
    """docs/settings.md's table for a settings dataclass."""
    rows = [f"## {title}", "", "| key | option | values | default | what |",
            "| --- | --- | --- | --- | --- |"]
    for field, decl in declared(cls):
        option = decl.option
        if decl.kind is BOOL and option:
            option += f"`, `--no-{option[2:]}"
        elif option:
            option += f" {decl.kind.metavar}"
        cell = f"`{option}`" if option else ""
        rows.append(f"| `{field.name}` | {cell} | {decl.kind.values} | "
                    f"`{default_text(field)}` | {decl.help} |")
    return "\n".join(rows) + "\n"
