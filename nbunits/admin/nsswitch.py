"""The `initgroups:` line nbunits adds to /etc/nsswitch.conf, and why.

Every unit start with `User=` makes systemd call initgroups() for that user. With
no `initgroups:` line, glibc asks the `group:` sources, and nss-systemd answers by
listing every file of every userdb drop-in folder (it looks for `*.membership`):
with 100,000 students (400,000 files in /etc/userdb) that is ~45 ms of CPU per
call, 3-4 calls per student's start (docs/BENCHMARKS.md). Students have no
supplementary groups; nbunits' records declare none.

So `nbunits install` adds an `initgroups:` line with the `group:` line's sources
minus `systemd`, each followed by `[SUCCESS=continue]`: glibc stops at the first
source that finds a group once an `initgroups:` line exists (without one it asks
them all), so a user of the admin's with local groups in /etc/group keeps the
ones sssd or LDAP give too. Only memberships that nss-systemd alone knows are
lost, and the line is not added where any exist: `*.membership` drop-ins, or a
userdb service that can declare them (systemd-homed's users).

Students' own units also look groups up: rootless podman reads /etc/subgid through
libsubid, which asks getgrnam() for a group named as the student, and nss-systemd
answers any group lookup it gets (found or not) by listing all of /etc/userdb for
members (~0.2 s of CPU at each start with 100,000 students). Students have no
subordinate ids and their units need no group by name, so those units see
`students_file()`'s text instead of /etc/nsswitch.conf (a BindReadOnlyPaths= of
the container unit): the same file with systemd left out of the group databases.

Pure text in, text out (the caller writes); the line is marked, so a later
install updates or removes its own line and never an admin's.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

MARK = "# nbunits: initgroups without systemd (docs/admin.md, \"Students' users\")"
# What the mark said before (a host installed then has it): still ours.
MARKS = (MARK, "# nbunits: initgroups without systemd (README, \"Students' users\")")
# Where nss-systemd reads drop-ins, and its varlink services (systemd's userdb docs).
USERDB_DIRS = (Path("/etc/userdb"), Path("/run/userdb"), Path("/run/host/userdb"),
               Path("/usr/local/lib/userdb"), Path("/usr/lib/userdb"))
USERDB_SERVICES = Path("/run/systemd/userdb")
# systemd's own services that declare no group memberships.
NO_MEMBERSHIPS = {"io.systemd.DynamicUser", "io.systemd.Multiplexer",
                  "io.systemd.NameServiceSwitch", "io.systemd.Machine"}


GROUP_DATABASES = ("group", "gshadow", "initgroups")
STUDENTS_HEADER = """\
# Written by `nbunits install` from /etc/nsswitch.conf: what students' container
# units see there (units/course/, BindReadOnlyPaths=). Group lookups skip nss-systemd,
# which lists every user record for members (docs/admin.md, "Students' users").
"""


@dataclass(frozen=True)
class Plan:
    text: str | None  # the new file, or None: nothing to write
    note: str         # what was decided, for the admin


def sources(text: str, database: str) -> list[str] | None:
    """The words after `database:` (sources and [ACTION] items), or None if absent."""
    for line in text.splitlines():
        if not line.lstrip().startswith("#") and ":" in line:
            name, rest = line.split(":", 1)
            if name.strip() == database:
                return rest.split("#", 1)[0].split()
    return None


def initgroups_sources(group: list[str]) -> list[str]:
    """The `group:` sources without systemd, each asked even after another succeeded
    (glibc's behaviour without an `initgroups:` line, which the line changes)."""
    services: list[tuple[str, list[str]]] = []
    for word in _join_actions(group):
        if word.startswith("["):
            if services:
                services[-1][1].extend(a for a in word.strip("[]").split()
                                       if not a.upper().startswith("SUCCESS="))
        else:
            services.append((word, []))
    kept = [(name, actions) for name, actions in services if name != "systemd"]
    words: list[str] = []
    for i, (name, actions) in enumerate(kept):
        words.append(name)
        if i < len(kept) - 1:
            actions = ["SUCCESS=continue", *actions]
        if actions:
            words.append("[" + " ".join(actions) + "]")
    return words


def _join_actions(words: list[str]) -> list[str]:
    """`[NOTFOUND=return` `SUCCESS=merge]` split by spaces, joined back into one item."""
    out: list[str] = []
    for word in words:
        if out and out[-1].startswith("[") and not out[-1].endswith("]"):
            out[-1] += " " + word
        else:
            out.append(word)
    return out


def plan(text: str, memberships: list[str], *, enable: bool = True) -> Plan:
    """What /etc/nsswitch.conf should become. `memberships`: where nss-systemd may
    hold group memberships (then nothing is added: they would be lost)."""
    lines = text.splitlines()
    ours = [i for i, line in enumerate(lines[:-1]) if line in MARKS
            and lines[i + 1].lstrip().startswith("initgroups")]
    without_ours = [line for i, line in enumerate(lines)
                    if not any(i in (j, j + 1) for j in ours)]
    theirs = sources("\n".join(without_ours), "initgroups")
    if theirs is not None:
        slow = "systemd" in theirs
        return Plan(_text(without_ours) if ours else None,
                    "the admin's own initgroups: line is kept" +
                    (" (it asks systemd: each student's start then lists all of "
                     "/etc/userdb; docs/admin.md, \"Students' users\")" if slow else ""))
    group = sources(text, "group") or []
    if not enable:
        return Plan(_text(without_ours) if ours else None,
                    "initgroups: left to the group: line, as asked (each student's start "
                    "then lists all of /etc/userdb)")
    if "systemd" not in group:
        return Plan(_text(without_ours) if ours else None,
                    "group: does not ask systemd: no initgroups: line needed")
    if memberships:
        return Plan(_text(without_ours) if ours else None,
                    "no initgroups: line: nss-systemd holds group memberships here ("
                    + ", ".join(memberships[:3]) + "), which it would hide; each "
                    "student's start lists all of /etc/userdb")
    wanted = initgroups_sources(group)
    if not wanted:
        return Plan(_text(without_ours) if ours else None,
                    "group: lists only systemd: no initgroups: line")
    line = "initgroups:     " + " ".join(wanted)
    if ours and lines[ours[0]] == MARK and lines[ours[0] + 1] == line and len(ours) == 1:
        return Plan(None, f"kept: {line}")
    at = next((i + 1 for i, entry in enumerate(without_ours)
               if entry.split(":", 1)[0].strip() == "group"), len(without_ours))
    return Plan(_text([*without_ours[:at], MARK, line, *without_ours[at:]]), f"added: {line}")


def students_file(text: str) -> str:
    """/etc/nsswitch.conf for students' units: its group databases without systemd
    (and the action that follows it); `files` where nothing else is left."""
    lines = []
    for line in text.splitlines():
        name = line.split(":", 1)[0].strip()
        words = sources(line, name) if ":" in line and not line.lstrip().startswith("#") else None
        if name in GROUP_DATABASES and words is not None and "systemd" in words:
            kept: list[str] = []
            for word in _join_actions(words):
                if word.startswith("[") and (not kept or kept[-1] == "systemd"):
                    continue  # the dropped source's action (or one with no source)
                kept.append(word)
            kept = [w for w in kept if w != "systemd"] or ["files"]
            line = f"{name}:{' ' * max(1, 15 - len(name))}{' '.join(kept)}"
        lines.append(line)
    return STUDENTS_HEADER + _text(lines)


def _text(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


def memberships_in_use(dirs: Iterable[Path] = USERDB_DIRS,
                       services: Path = USERDB_SERVICES) -> list[str]:
    """Where nss-systemd may hold supplementary groups of users on this host."""
    found: list[str] = []
    for folder in dirs:
        try:
            with_membership = next((e.name for e in _scan(folder)
                                    if e.name.endswith(".membership")), None)
        except OSError:
            continue
        if with_membership:
            found.append(str(folder / with_membership))
    try:
        found += [str(e.path) for e in _scan(services) if e.name not in NO_MEMBERSHIPS]
    except OSError:
        pass
    return found


def _scan(folder: Path) -> Iterator[os.DirEntry[str]]:
    with os.scandir(folder) as entries:
        yield from entries
