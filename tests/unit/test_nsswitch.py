"""The initgroups: line `nbunits install` adds to /etc/nsswitch.conf, and the file
students' units see instead of it (pure text)."""

from __future__ import annotations

from pathlib import Path

from nbunits.admin.nsswitch import (
    MARK,
    MARKS,
    initgroups_sources,
    memberships_in_use,
    plan,
    sources,
    students_file,
)

DEBIAN = ("passwd:         files systemd\ngroup:          files systemd\n"
          "shadow:         files systemd\nhosts:          files dns\n")


def test_debian_default_gets_files_only_once() -> None:
    first = plan(DEBIAN, [])
    assert first.text is not None
    assert sources(first.text, "initgroups") == ["files"]
    assert first.text.splitlines()[2:4] == [MARK, "initgroups:     files"]
    assert plan(first.text, []).text is None  # idempotent
    # Reversible: asked not to, the line it added goes, and the file is as it was.
    assert plan(first.text, [], enable=False).text == DEBIAN
    # A host installed when the mark named README: its line is recognised and the mark
    # brought up to date, never a second initgroups: line.
    old = first.text.replace(MARK, MARKS[1])
    assert plan(old, []).text == first.text


def test_sssd_and_ldap_groups_are_still_asked() -> None:
    # glibc stops at the first source that succeeds once an initgroups: line exists:
    # without [SUCCESS=continue] a user with one local group would lose sssd's.
    assert initgroups_sources(["files", "systemd", "sss"]) == ["files", "[SUCCESS=continue]", "sss"]
    assert initgroups_sources(["files", "[SUCCESS=merge]", "ldap", "[NOTFOUND=return]",
                               "systemd"]) == ["files", "[SUCCESS=continue]", "ldap",
                                               "[NOTFOUND=return]"]
    assert initgroups_sources(["compat", "[NOTFOUND=return", "UNAVAIL=continue]", "systemd",
                               "winbind"]) == ["compat", "[SUCCESS=continue NOTFOUND=return "
                                               "UNAVAIL=continue]", "winbind"]


def test_admins_own_line_and_memberships_are_left_alone() -> None:
    own = DEBIAN + "initgroups: files systemd\n"
    decided = plan(own, [])
    assert decided.text is None and "asks systemd" in decided.note
    homed = plan(DEBIAN, ["/run/systemd/userdb/io.systemd.Home"])
    assert homed.text is None and "io.systemd.Home" in homed.note
    # A line added before memberships appeared is taken back.
    added = plan(DEBIAN, []).text
    assert added is not None and plan(added, ["/etc/userdb/a:wheel.membership"]).text == DEBIAN
    assert plan("passwd: files\ngroup: files\n", []).text is None


def test_memberships_found(tmp_path: Path) -> None:
    userdb, services = tmp_path / "userdb", tmp_path / "services"
    userdb.mkdir()
    services.mkdir()
    (userdb / "nb1.user").write_text("{}")
    (services / "io.systemd.DynamicUser").write_text("")
    assert memberships_in_use([userdb, tmp_path / "missing"], services) == []
    (userdb / "alice:wheel.membership").write_text("")
    (services / "io.systemd.Home").write_text("")
    assert memberships_in_use([userdb], services) == [str(userdb / "alice:wheel.membership"),
                                                      str(services / "io.systemd.Home")]


def test_students_units_look_groups_up_without_systemd() -> None:
    with_line = plan(DEBIAN, []).text
    assert with_line is not None
    theirs = students_file(with_line + "gshadow: systemd\n")
    assert sources(theirs, "group") == ["files"]
    assert sources(theirs, "initgroups") == ["files"]
    assert sources(theirs, "gshadow") == ["files"]  # nothing left: files
    # Users are still found through nss-systemd; the other databases are the host's.
    assert sources(theirs, "passwd") == ["files", "systemd"]
    assert sources(theirs, "hosts") == ["files", "dns"]
    # A source's own action stays with it; systemd's goes with systemd.
    other = students_file("group: files [SUCCESS=merge] systemd [NOTFOUND=return] sss # x\n")
    assert sources(other, "group") == ["files", "[SUCCESS=merge]", "sss"]
    assert sources(students_file(DEBIAN.replace("group:          files systemd",
                                                "group: compat")), "group") == ["compat"]
