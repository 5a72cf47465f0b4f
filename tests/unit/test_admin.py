"""Admin tools, pure logic: events and their catalog, log fields, metrics state,
confirmations, the command line's parsing."""

from __future__ import annotations

import io
import logging
import re
import subprocess
from pathlib import Path

import pytest

from nbunits.admin import cli
from nbunits.admin.courses import Removal
from nbunits.admin.metrics import BUCKETS, CourseStarts, State
from nbunits.admin.students import Deletion
from nbunits.core import events, service
from nbunits.core.config import Settings, count_provisioned
from nbunits.core.data import catalog_file
from nbunits.core.systemctl import iso_time

REPO = Path(__file__).resolve().parents[2]


def test_every_event_has_a_catalog_entry_that_journalctl_reads(tmp_path: Path) -> None:
    text = Path(str(catalog_file())).read_text()
    ids = re.findall(r"^-- ([0-9a-f]{32})$", text, re.M)
    assert sorted(ids) == sorted(e.value for e in events.Event)
    assert len({e.value for e in events.Event}) == len(events.Event)
    folder = tmp_path / "usr/local/lib/systemd/catalog"
    folder.mkdir(parents=True)
    (folder / "nbunits.catalog").write_text(text)
    (tmp_path / "var/lib/systemd/catalog").mkdir(parents=True)
    subprocess.run(["journalctl", f"--root={tmp_path}", "--update-catalog"], check=True)
    listed = subprocess.run(["journalctl", f"--root={tmp_path}", "--list-catalog"],
                            check=True, capture_output=True, text=True).stdout
    assert all(e.value in listed for e in events.Event), listed


def test_event_fields_and_the_journal_wire_format() -> None:
    fields = events.fields(events.Event.RESET, "demo", None, {"KEPT": None, "BY": "admin"})
    assert fields == {"MESSAGE_ID": events.Event.RESET.value, "NBUNITS_EVENT": "reset",
                      "COURSE": "demo", "KEPT": "None", "BY": "admin"}
    assert events._field("A", "x") == b"A=x\n"
    # A value with a newline takes journald's binary form (length-prefixed).
    assert events._field("A", "x\ny") == b"A\n" + (3).to_bytes(8, "little") + b"x\ny\n"


def test_every_line_gets_the_requests_course_and_student() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    fields = service.ContextFields()
    service.log_context(new=True)
    fields.filter(record)
    assert (record.COURSE, record.STUDENT) == ("-", "-")
    service.log_context("demo", "nbaaaaaaaaaaaaaaaa", new=True)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    record.STUDENT = "nbbbbbbbbbbbbbbbbb"  # given in `extra`: it wins
    fields.filter(record)
    assert (record.COURSE, record.STUDENT) == ("demo", "nbbbbbbbbbbbbbbbbb")
    service.log_context(new=True)


def test_start_times_fill_histogram_buckets_and_survive_a_reload(tmp_path: Path) -> None:
    starts = CourseStarts()
    for seconds in (0.3, 0.5, 1.2, 500):
        starts.observe(seconds)
    assert starts.starts == 4 and starts.seconds == pytest.approx(502.0)
    assert starts.buckets[0] == 2  # le 0.5 (the bound is inclusive)
    assert starts.buckets[BUCKETS.index(2.0)] == 1 and starts.buckets[-1] == 1  # +Inf
    state = State("cursor", {"u": 1}, {"demo": starts})
    (tmp_path / "m.json").write_text(state.dump())
    again = State.load(tmp_path / "m.json")
    assert again.cursor == "cursor" and again.courses["demo"] == starts
    (tmp_path / "m.json").write_text("{oops")
    assert State.load(tmp_path / "m.json") == State()


def test_provisioned_students_are_counted_from_token_names(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    assert count_provisioned(settings, "demo") == 0  # no course folder yet
    folder = settings.tokens_dir / "demo"
    folder.mkdir(parents=True)
    for name in ("nbaaaaaaaaaaaaaaaa.env", "nbaaaaaaaaaaaaaaaa.json", "nbbbbbbbbbbbbbbbbb.env",
                 "notastudent.env", ".nbcccccccccccccccc.env.tmp"):
        (folder / name).write_text("")
    assert count_provisioned(settings, "demo") == 2


def test_systemd_timestamps_become_iso_8601() -> None:
    assert iso_time("@1764510715") == "2025-11-30T13:51:55+00:00"
    assert iso_time("") == ""


def test_deletions_list_everything_they_delete() -> None:
    plan = Deletion("nbaaaaaaaaaaaaaaaa", "id1", Path("/home/nbaaaaaaaaaaaaaaaa"),
                    ["nbunits-demo@nbaaaaaaaaaaaaaaaa.service"], ["demo"],
                    [Path("/var/lib/nbunits/students/nbaaaaaaaaaaaaaaaa")], {"demo": ["id2"]},
                    Path("/var/lib/nbunits/backups/x.tar.gz"))
    text = "\n".join(plan.describe())
    for part in ("/home/nbaaaaaaaaaaaaaaaa", "Jupyter running now",
                 "/var/lib/nbunits/students/nbaaaaaaaaaaaaaaaa", "id2", "x.tar.gz"):
        assert part in text
    removal = Removal("demo", False, (), (), (Path("/home/u/demo"),), purge=True)
    assert "removed already" in "\n".join(removal.describe())
    assert "    /home/u/demo" in removal.describe()
    shared = (Path("/var/lib/nbunits/shares/pages/t.html"),
              Path("/var/lib/nbunits/shares/demo/nbaaaaaaaaaaaaaaaa.json"))
    for purge in (False, True):  # the shares go with the course either way
        text = "\n".join(Removal("demo", True, (), (), (), purge, shares=shared).describe())
        assert "1 static version(s) its students share (their links stop working)" in text
        assert all(str(path) in text for path in shared)


@pytest.mark.parametrize(("answer", "goes_on"), [("y\n", True), ("yes\n", True), ("n\n", False),
                                                  ("", False)])
def test_confirm_asks_and_refuses_unless_yes(monkeypatch, capsys, answer: str,
                                              goes_on: bool) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(answer))
    if goes_on:
        cli.confirm(["delete x"], yes=False)
    else:
        with pytest.raises(SystemExit) as exited:
            cli.confirm(["delete x"], yes=False)
        assert exited.value.code == cli.EXIT_DECLINED
    assert "delete x" in capsys.readouterr().out
    cli.confirm(["delete x"], yes=True)  # --yes: no question


@pytest.mark.parametrize("argv", [["--debug", "status"], ["status", "--debug"],
                                  ["student", "--debug", "list"], ["student", "list", "--debug"]])
def test_debug_anywhere(argv: list[str]) -> None:
    assert cli.build_parser().parse_args(argv).debug is True


def test_help_has_units_and_defaults_no_empty_ones(monkeypatch, capsys) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # one line per option
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["course", "add", "--help"])
    text = capsys.readouterr().out
    assert "(default )" not in text and "None" not in text
    assert "--max-lifetime SECONDS" in text and "(default: 28800)" in text
    with pytest.raises(SystemExit) as exited:
        cli.build_parser().parse_args(["course", "add", "x", "--dir", ".", "--legacy", "maybe"])
    assert exited.value.code == 2


@pytest.mark.parametrize(("result", "status", "event"), [
    ("success", "0", events.Event.STOPPED), ("success", "143", events.Event.STOPPED),
    ("timeout", "", events.Event.CAPPED), ("oom-kill", "9", events.Event.CAPPED),
    ("exit-code", "1", events.Event.FAILED), ("", "", events.Event.FAILED)])
def test_the_stop_hook_says_how_a_server_ended(monkeypatch, result: str, status: str,
                                               event: events.Event) -> None:
    sent: list[tuple[events.Event, dict[str, object]]] = []
    monkeypatch.setattr(events, "send", lambda e, message, **kw: sent.append((e, kw)))
    monkeypatch.setenv("SERVICE_RESULT", result)
    monkeypatch.setenv("EXIT_STATUS", status)
    events.stopped_main(["demo", "nbaaaaaaaaaaaaaaaa"])
    [(got, fields)] = sent
    assert got is event and fields["course"] == "demo" and fields["SERVICE_RESULT"] == result


# What a student, an LMS or a course repository can put in front of an admin: an OSC that
# sets the window title, a screen clear, a C1 CSI, a carriage return over the line, a
# right-to-left override, an undecodable file-name byte.
HOSTILE = "a\x1b]0;pwned\x07b\x1b[2Jc\x9b31md\re\u202ef\udcff\tg\nh"


def test_admin_output_escapes_every_control_character(capsys) -> None:
    from nbunits.admin.status import StudentState, format_table
    from nbunits.admin.terminal import escape

    shown = escape(HOSTILE)
    assert shown == ("a\\x1b]0;pwned\\x07b\\x1b[2Jc\\x9b31md\\re\\u202ef\\udcff\\tg\\nh")
    assert escape(HOSTILE, lines=True).endswith("\\udcff\tg\nh")  # a notebook keeps its lines
    assert escape("plain é 日本 text\\x1b") == "plain é 日本 text\\x1b"

    table = format_table([StudentState("demo", "nb" + "0" * 30, HOSTILE, "running", "", None)])
    rows = cli.format_rows([["USER", "ID"], ["nbx", HOSTILE]])
    with pytest.raises(SystemExit):
        cli.die(f"no copy of {HOSTILE}", hint=HOSTILE)
    err = capsys.readouterr().err
    for text in (table, rows, err):
        assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202e\udcff]", text), repr(text)
        assert "\\x1b]0;pwned\\x07" in text, text
    assert len(table.splitlines()) == 4 and len(rows.splitlines()) == 2  # one line per row
