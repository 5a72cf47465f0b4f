"""Kept homes: adopted with proof, refused without, never through a symlink."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nbunits.core.config import Settings
from nbunits.core.names import STUDENT_UID_COUNT, STUDENT_UID_MIN, uid_for
from nbunits.helper.users import (
    HOME_RECORD,
    Student,
    StudentError,
    adopt_home,
    existing_home,
    nss_problem,
    read_home_record,
    repair_home,
    write_home_record,
    write_user_record,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")


def test_no_home_nothing_to_adopt(tmp_path: Path) -> None:
    assert existing_home(tmp_path / "nbx", "s1", None) is False


def test_proof_is_the_state_record_or_roots_record_in_the_home(tmp_path: Path) -> None:
    home = tmp_path / "nbx"
    home.mkdir()
    assert existing_home(home, "s1", "s1") is True
    write_home_record(home, "s1")
    assert read_home_record(home) == "s1"
    assert existing_home(home, "s1", None) is True
    with pytest.raises(StudentError, match="no record shows") as raised:
        existing_home(home, "s2", None)
    assert raised.value.code == "bad_home"


def test_a_record_the_student_could_write_proves_nothing(tmp_path: Path) -> None:
    home = tmp_path / "nbx"
    home.mkdir()
    (home / HOME_RECORD).write_text("s1\n")
    os.chown(home / HOME_RECORD, 4242, 4242)
    assert read_home_record(home) is None
    (home / HOME_RECORD).unlink()
    (home / HOME_RECORD).symlink_to(tmp_path / "elsewhere")
    (tmp_path / "elsewhere").write_text("s1\n")
    assert read_home_record(home) is None
    with pytest.raises(StudentError):
        existing_home(home, "s1", None)


def test_not_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    (tmp_path / "link").symlink_to(tmp_path)
    for path in (tmp_path / "file", tmp_path / "link"):
        with pytest.raises(StudentError, match="not a directory"):
            existing_home(path, "s1", "s1")


def test_adopting_changes_the_old_owners_files_only_and_follows_no_symlink(tmp_path: Path) -> None:
    home, outside = tmp_path / "nbx", tmp_path / "outside"
    (home / "demo" / "week1").mkdir(parents=True)
    (home / "demo" / "week1" / "a.ipynb").write_text("{}")
    (home / ".local" / "share" / "nbunits" / "demo").mkdir(parents=True)
    outside.write_text("root's")
    (home / "demo" / "link").symlink_to(outside)
    for path in (home, home / "demo", home / "demo" / "week1", home / "demo" / "week1" / "a.ipynb",
                 home / ".local", home / ".local" / "share"):
        os.chown(path, 4000, 4000)
    os.chown(home / "demo" / "link", 4000, 4000, follow_symlinks=False)
    (home / "other").write_text("")
    os.chown(home / "other", 7000, 7000)

    adopt_home(home, 5000, 5001)

    assert (home.stat().st_uid, home.stat().st_gid) == (5000, 5001)
    assert (home / "demo" / "week1" / "a.ipynb").stat().st_uid == 5000
    assert os.lstat(home / "demo" / "link").st_uid == 5000
    assert outside.stat().st_uid == 0  # the link's target is not touched
    assert (home / "other").stat().st_uid == 7000
    assert not (home / ".local" / "share" / "nbunits").exists()  # podman's cache, started afresh


def test_json_user_records_need_nss_systemd(tmp_path: Path) -> None:
    conf = tmp_path / "nsswitch.conf"
    conf.write_text("passwd:         files systemd\ngroup:          files systemd\n")
    assert nss_problem(conf) is None
    conf.write_text("passwd: files\n# group: files systemd\ngroup: files\n")
    assert "for passwd and group" in (nss_problem(conf) or "")


def test_a_derived_uid_is_stable_and_in_the_students_range() -> None:
    uids = {uid_for(f"student-{n}") for n in range(2000)}
    assert uid_for("student-1") == uid_for("student-1")
    assert len(uids) == 2000
    assert all(STUDENT_UID_MIN <= u < STUDENT_UID_MIN + STUDENT_UID_COUNT for u in uids)
    assert STUDENT_UID_MIN > 600100000 and STUDENT_UID_MIN + STUDENT_UID_COUNT - 1 == 1879048191


def test_user_records_are_what_nss_systemd_reads(tmp_path: Path) -> None:
    settings = Settings(userdb_dir=tmp_path / "userdb")
    write_user_record(settings, "nbaaaaaaaaaaaaaaaa", 900000000, Path("/home/nbaaaaaaaaaaaaaaaa"),
                      "nbunits student s1")
    folder = settings.userdb_dir
    record = json.loads((folder / "nbaaaaaaaaaaaaaaaa.user").read_text())
    assert record == {"userName": "nbaaaaaaaaaaaaaaaa", "uid": 900000000, "gid": 900000000,
                      "realName": "nbunits student s1",
                      "homeDirectory": "/home/nbaaaaaaaaaaaaaaaa",
                      "shell": "/usr/sbin/nologin", "disposition": "regular"}
    assert os.readlink(folder / "900000000.user") == "nbaaaaaaaaaaaaaaaa.user"
    assert os.readlink(folder / "900000000.group") == "nbaaaaaaaaaaaaaaaa.group"
    assert json.loads((folder / "nbaaaaaaaaaaaaaaaa.group").read_text())["gid"] == 900000000
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["nbaaaaaaaaaaaaaaaa.user", "nbaaaaaaaaaaaaaaaa.group", "900000000.user",
         "900000000.group"])  # no temporary file left


def _student(home: Path, uid: int = 5000) -> Student:
    return Student("s1", home.name, uid, uid, home)


def test_a_restored_home_of_an_existing_user_is_given_back_to_it(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    home = tmp_path / "nbx"
    home.mkdir()
    write_home_record(home, "s1")
    (home / "work.ipynb").write_text("{}")
    for path in (home, home / "work.ipynb"):
        os.chown(path, 4000, 4000)  # restored from a backup made when the uid was 4000
    repair_home(settings, _student(home))
    assert (home.stat().st_uid, (home / "work.ipynb").stat().st_uid) == (5000, 5000)
    assert oct(home.stat().st_mode & 0o777) == "0o700"


def test_a_home_of_an_existing_user_without_proof_is_left_alone(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    home = tmp_path / "nbx"
    home.mkdir()
    os.chown(home, 4000, 4000)
    with pytest.raises(StudentError, match="no record shows"):
        repair_home(settings, _student(home))
    assert home.stat().st_uid == 4000


def test_a_missing_home_is_made_anew(tmp_path: Path) -> None:
    home = tmp_path / "nbx"
    repair_home(Settings(state_dir=tmp_path / "state"), _student(home))
    assert home.is_dir() and home.stat().st_uid == 5000
