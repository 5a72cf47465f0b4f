"""A course's end, pure parts: when work is due, archive names, where archives may go,
what an archive holds (admin/export.py, admin/course_end.py)."""

from __future__ import annotations

import errno
import os
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from nbunits.admin import course_end, export
from nbunits.admin.cli import build_parser, course_options
from nbunits.core.config import ConfigError, CourseConfig, Settings, course_from_toml
from nbunits.core.errors import Code, NbunitsError
from nbunits.core.names import user_for

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)


def settings_in(tmp_path: Path) -> Settings:
    settings = Settings(etc_dir=tmp_path / "etc", state_dir=tmp_path / "state",
                        home_base=tmp_path / "home")
    settings.courses_conf_dir.mkdir(parents=True)
    settings.home_base.mkdir()
    return settings


def add_course(settings: Settings, name: str, **values: object) -> None:
    config = CourseConfig(name=name, source=settings.course_masters(name), **values)
    (settings.courses_conf_dir / f"{name}.toml").write_text(config.to_toml())


def add_student(settings: Settings, student_id: str, *courses: str) -> str:
    """A student who opened a notebook of each course: a token, a course folder."""
    user = user_for(student_id)
    settings.students_dir.mkdir(parents=True, exist_ok=True)
    settings.student_record(user).write_text(student_id)
    for course in courses:
        settings.course_tokens(course).mkdir(parents=True, exist_ok=True)
        (settings.course_tokens(course) / f"{user}.env").write_text("")
        (settings.home(user) / course).mkdir(parents=True)
    return user


# --- when work is due -------------------------------------------------------------

def test_work_is_due_at_the_end_plus_the_retention_period_and_never_without_both():
    course = CourseConfig(name="c", source=Path("/x"))
    assert course.deletion_due() is None  # not ended
    ended = CourseConfig(name="c", source=Path("/x"), end_date="2027-01-31")
    assert ended.deletion_due() is None  # kept forever: no retention set
    kept = CourseConfig(name="c", source=Path("/x"), end_date="2027-01-31", retention_days=3)
    assert kept.deletion_due() == datetime(2027, 2, 3, tzinfo=UTC)  # a date is its midnight, UTC
    at_once = CourseConfig(name="c", source=Path("/x"), end_date="2027-01-31T10:00:00+01:00",
                           retention_days=0)
    assert at_once.deletion_due() == datetime(2027, 1, 31, 9, 0, tzinfo=UTC)


def test_bad_end_dates_and_retentions_are_refused():
    for values in ({"end_date": "31/01/2027"}, {"end_date": "soon"}, {"retention_days": -1},
                   {"retention_days": "30"}, {"retention_days": True}):
        with pytest.raises(ConfigError):
            CourseConfig(name="c", source=Path("/x"), **values)


def test_an_unset_retention_is_left_out_of_the_course_file_and_reads_back_as_none():
    kept = CourseConfig(name="c", source=Path("/x"), end_date="2027-01-31")
    assert "retention_days" not in kept.to_toml()
    import tomllib
    assert course_from_toml("c", tomllib.loads(kept.to_toml())) == kept
    zero = CourseConfig(name="c", source=Path("/x"), end_date="2027-01-31", retention_days=0)
    assert course_from_toml("c", tomllib.loads(zero.to_toml())).retention_days == 0


def test_the_command_line_sets_unsets_or_leaves_the_retention():
    parser = build_parser()
    given = course_options(parser.parse_args(["course", "update", "c", "--retention-days", "30"]))
    assert given["retention_days"] == 30
    unset = course_options(parser.parse_args(["course", "update", "c", "--retention-days",
                                              "none"]))
    assert "retention_days" in unset and unset["retention_days"] is None
    assert "retention_days" not in course_options(parser.parse_args(["course", "update", "c"]))


def test_only_ended_courses_past_their_retention_are_due_with_their_students(tmp_path):
    settings = settings_in(tmp_path)
    add_course(settings, "old", end_date="2027-01-01", retention_days=30)  # due Jan 31
    add_course(settings, "kept", end_date="2027-01-01")  # no retention: forever
    add_course(settings, "recent", end_date="2027-02-20", retention_days=30)  # due Mar 22
    add_course(settings, "running")
    only = add_student(settings, "only-old", "old")
    both = add_student(settings, "old-and-recent", "old", "recent")
    add_student(settings, "recent-only", "recent")
    due = course_end.due_courses(settings, NOW, say=print)
    assert [d.course for d in due] == ["old"]
    assert {w.user for w in due[0].works} == {only, both}
    assert due[0].whole == {only}  # the other keeps their user and "recent"
    shown = "\n".join(due[0].describe())  # the timer's output: the journal, no id
    assert only in shown and both in shown and "only-old" not in shown
    assert course_end.other_work(settings, both, "old") == ["recent"]
    # A day before its due time: nothing.
    assert course_end.due_courses(settings, datetime(2027, 1, 30, tzinfo=UTC), say=print) == []
    # A folder kept from a removed course is other work too.
    (settings.home(only) / "removed-course").mkdir()
    assert course_end.other_work(settings, only, "old") == ["removed-course"]


# --- archive names ------------------------------------------------------------------

def test_archives_are_named_by_the_students_id_or_user_when_it_cannot_be():
    assert export.archive_name("8f14e45fceea167a5a36dedd4bea2543", "nbabc") == \
        "8f14e45fceea167a5a36dedd4bea2543.zip"
    assert export.archive_name("a.b@example.org", "nbabc") == "a.b@example.org.zip"
    assert export.archive_name("", "nbabc") == "nbabc.zip"  # no id recorded
    assert export.archive_name("x" * 252, "nbabc") == "nbabc.zip"  # too long for a name
    assert export.archive_name("../etc", "nbabc") == "nbabc.zip"  # never a path
    assert export.archive_name(".hidden", "nbabc") == "nbabc.zip"


def test_two_students_never_share_an_archive_name(tmp_path):
    settings = settings_in(tmp_path)
    unrecorded = add_student(settings, "lost-record", "c")
    settings.student_record(unrecorded).unlink()  # <user>.zip, then
    # Another student whose id is that user name: <id>.zip would be the same name.
    other = add_student(settings, unrecorded, "c")
    names = {w.user: w.archive for w in export.works(settings, "c")}
    assert names == {unrecorded: f"{unrecorded}.zip", other: f"{other}.zip"}


# --- where archives may go ------------------------------------------------------------

def test_archives_never_go_into_a_students_home_or_a_published_course(tmp_path):
    settings = settings_in(tmp_path)
    user = add_student(settings, "s1", "c")
    settings.masters_dir.mkdir(parents=True)
    (tmp_path / "link-into-home").symlink_to(settings.home(user))
    (tmp_path / "a-file").write_text("")
    for bad in (settings.home(user), settings.home(user) / "c" / "out",
                tmp_path / "link-into-home" / "out", settings.course_masters("c"),
                settings.masters_dir / "c" / "out", tmp_path / "a-file"):
        with pytest.raises(NbunitsError) as caught:
            export.check_destination(settings, bad)
        assert caught.value.code is Code.BAD_EXPORT_DIR, bad
    assert export.check_destination(settings, tmp_path / "out") == tmp_path / "out"
    # The folder of all homes is not a student's.
    assert export.check_destination(settings, settings.home_base / "exports")


def test_a_missing_folder_is_made_0700_and_removed_again_if_nothing_went_in(tmp_path):
    target = tmp_path / "new" / "out"
    with export.destination(target) as fd:
        assert os.fstat(fd).st_mode & 0o777 == 0o700
    assert not target.exists()


# --- what an archive holds --------------------------------------------------------

def student_folder(settings: Settings, tmp_path: Path) -> str:
    user = add_student(settings, "s1", "c")
    folder = settings.home(user) / "c"
    (folder / "week1").mkdir()
    (folder / "week1" / "loops.ipynb").write_text('{"changed": true}')
    (folder / "mine.py").write_text("print(1)\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("SECRET")
    (folder / "linked.txt").symlink_to(outside / "secret.txt")  # a student's link
    (folder / "linked-dir").symlink_to(outside)
    (folder / "data").symlink_to("/home/student/course/data")  # nbunits' link: dangles here
    os.mkfifo(folder / "pipe")
    return user


def test_an_archive_holds_the_folders_and_files_and_never_a_link_or_what_it_points_to(tmp_path):
    settings = settings_in(tmp_path)
    user = student_folder(settings, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        done = export.export_all(settings, "c", fd, export.works(settings, "c"))
    finally:
        os.close(fd)
    assert [(d.work.user, d.error) for d in done] == [(user, "")]
    counts = done[0].counts
    assert (counts.files, counts.links, counts.other) == (2, 3, 1)
    assert counts.bytes == len('{"changed": true}') + len("print(1)\n")
    assert os.listdir(out) == ["s1.zip"]  # named by the id; no temporary file left
    assert os.stat(out / "s1.zip").st_mode & 0o777 == 0o600
    with zipfile.ZipFile(out / "s1.zip") as archive:
        assert sorted(archive.namelist()) == ["c/", "c/mine.py", "c/week1/", "c/week1/loops.ipynb"]
        assert archive.read("c/week1/loops.ipynb") == b'{"changed": true}'
        assert not any(b"SECRET" in archive.read(name) for name in archive.namelist())


def test_a_course_folder_that_is_a_link_is_not_followed(tmp_path):
    settings = settings_in(tmp_path)
    user = add_student(settings, "s1")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x.txt").write_text("SECRET")
    (settings.home(user) / "c").parent.mkdir(parents=True, exist_ok=True)
    (settings.home(user) / "c").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(NbunitsError) as caught, export.destination(tmp_path) as fd:
        export.write_archive(fd, "s1.zip", settings.home(user), "c")
    assert caught.value.code is Code.BAD_HOME
    assert not (tmp_path / "s1.zip").exists()


def test_a_full_folder_fails_the_whole_export_and_leaves_no_file(tmp_path, monkeypatch):
    settings = settings_in(tmp_path)
    student_folder(settings, tmp_path)
    other = add_student(settings, "s2", "c")
    (settings.home(other) / "c" / "work.ipynb").write_text("{}")
    out = tmp_path / "out"

    def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export, "_add_file", full)
    with pytest.raises(NbunitsError) as caught, export.destination(out) as fd:
        export.export_all(settings, "c", fd, export.works(settings, "c"))
    assert caught.value.code is Code.EXPORT_FAILED
    assert not out.exists()  # made for the export, removed: nothing written


def test_an_unreadable_student_fails_alone(tmp_path, monkeypatch):
    settings = settings_in(tmp_path)
    student_folder(settings, tmp_path)
    other = add_student(settings, "s2", "c")
    (settings.home(other) / "c" / "work.ipynb").write_text("{}")
    real = export._add_course

    def broken(archive: zipfile.ZipFile, home: Path, course: str, counts: export.Counts) -> None:
        if home.name == other:
            raise OSError(errno.EIO, "Input/output error", str(home))
        real(archive, home, course, counts)

    monkeypatch.setattr(export, "_add_course", broken)
    out = tmp_path / "out"
    with export.destination(out) as fd:
        done = export.export_all(settings, "c", fd, export.works(settings, "c"))
    assert {d.work.user: bool(d.error) for d in done} == {user_for("s1"): False, other: True}
    assert os.listdir(out) == ["s1.zip"]


def test_the_due_time_is_shown_and_the_stamp_sorts():
    assert course_end.stamp(NOW) == "20270301T120000Z"
    assert course_end.stamp(NOW + timedelta(seconds=1)) > course_end.stamp(NOW)


def test_launches_are_refused_once_the_work_is_due_and_not_before():
    from nbunits.helper.provision import check_open

    check_open(CourseConfig(name="c", source=Path("/x"), end_date="2020-01-01"))  # kept
    check_open(CourseConfig(name="c", source=Path("/x"), end_date="2999-01-01",
                            retention_days=0))  # not ended yet
    with pytest.raises(NbunitsError) as caught:
        check_open(CourseConfig(name="c", source=Path("/x"), end_date="2020-01-01",
                                retention_days=30))
    assert caught.value.code is Code.COURSE_ENDED and caught.value.meaning.status == 410
