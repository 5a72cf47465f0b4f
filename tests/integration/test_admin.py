"""What an admin sees (issue 15): an honest CLI, a searchable journal, metrics, a
Cockpit page. All on the shared box, as root (and as nobody, for what root only may)."""

from __future__ import annotations

import asyncio
import json
import secrets
import tarfile
from datetime import datetime
from pathlib import Path

import pytest

from nbunits.core.events import Event
from nbunits.core.names import user_for
from testbed.browser import open_exercise

from .conftest import Nbunits, client

COURSE = "admin"


def open_as(nb: Nbunits, student: str, course: str = COURSE,
            notebook: str = "welcome.ipynb") -> str:
    async def go() -> str:
        async with client(nb) as session:
            opened = await open_exercise(session, course, notebook, student)
            assert opened.page_status == 200, opened.page[:300]
            return opened.user
    return asyncio.run(go())


def fails(nb: Nbunits, *args: str, code: int, user: str | None = None,
          stdin: str | None = None) -> str:
    """Run nbunits, expect exit `code` and a one-line error; return stderr."""
    result = nb.box.run("/opt/nbunits/venv/bin/nbunits", *args, check=False, user=user,
                        input=stdin)
    assert result.returncode == code, (args, result.returncode, result.stdout, result.stderr)
    assert "nbunits: error:" in result.stderr and "Traceback" not in result.stderr, result.stderr
    return result.stderr


def journal(nb: Nbunits, *matches: str, output: str = "json") -> list[dict]:
    out = nb.box.run("journalctl", "--no-pager", f"--output={output}", *matches).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()] \
        if output == "json" else out


@pytest.fixture(scope="module")
def course(nb: Nbunits) -> str:
    nb.add_course(COURSE)
    return COURSE


@pytest.fixture(scope="module")
def running(nb: Nbunits, course: str) -> tuple[str, str]:
    """A student whose Jupyter runs: (edX id, user)."""
    student = secrets.token_hex(16)
    return student, open_as(nb, student)


def test_status_reads_proxies_shows_edx_ids_and_iso_times(nb: Nbunits, running) -> None:
    student, user = running
    assert nb.show(f"nbunits-{COURSE}-proxy@{user}.service", "ActiveState")["ActiveState"] == "active"
    states = json.loads(nb.nbunits("status", "--course", COURSE, "--json").stdout)
    [mine] = [s for s in states if s["student"] == user]
    assert mine["id"] == student and mine["state"] == "running" and mine["course"] == COURSE
    assert datetime.fromisoformat(mine["since"]).utcoffset() is not None, mine["since"]
    assert mine["memory"] is None or mine["memory"] > 0
    table = nb.nbunits("status").stdout
    assert table.splitlines()[0].split() == ["COURSE", "STUDENT", "ID", "STATE", "SINCE", "MEMORY"]
    assert any(user in line and student in line for line in table.splitlines())


def test_unknown_names_are_errors_with_exit_codes(nb: Nbunits, running) -> None:
    _, user = running
    stranger = user_for("never-seen-" + secrets.token_hex(4))
    assert "unknown course" in fails(nb, "status", "--course", "nope", code=3)
    fails(nb, "logs", "nope", user, code=3)
    assert "no student" in fails(nb, "logs", COURSE, stranger, code=3)
    fails(nb, "student", "link", COURSE, stranger, "welcome.ipynb", code=3)
    fails(nb, "student", "link", COURSE, user, "no-such.ipynb", code=3)
    fails(nb, "student", "delete", stranger, "--yes", code=3)
    fails(nb, "student", "stop", COURSE, stranger, code=3)
    fails(nb, "course", "remove", "nope", "--yes", code=3)
    fails(nb, "course", "stats", "nope", code=3)
    assert "invalid choice" in nb.nbunits("course", "update", COURSE, "--network", "host",
                                          check=False).stderr


def test_root_only_commands_say_so_as_another_user(nb: Nbunits, running) -> None:
    _, user = running
    for args in (("course", "stats", COURSE), ("student", "show", COURSE, user),
                 ("student", "list"), ("metrics",)):
        assert "must run as root" in fails(nb, *args, code=4, user="nobody")


def test_help_shows_units_choices_and_real_defaults(nb: Nbunits) -> None:
    text = nb.nbunits("course", "add", "--help").stdout
    assert "(default )" not in text and "default: None" not in text
    assert "--proxy-idle-timeout SECONDS" in text and "(default: 120)" in text
    assert "--memory-max BYTES" in text and "(default: 1G)" in text
    assert "--network NETWORK" in text and "slirp4netns" in text and "(default: 100%)" in text
    assert "(unchanged unless given)" in nb.nbunits("course", "update", "--help").stdout
    assert "exit codes" in nb.nbunits("--help").stdout


def test_debug_works_anywhere_on_the_command_line(nb: Nbunits) -> None:
    for args in (("--debug", "course", "show", "nope"), ("course", "show", "nope", "--debug"),
                 ("course", "--debug", "show", "nope")):
        result = nb.nbunits(*args, check=False)
        assert result.returncode != 0 and "Traceback" in result.stderr, (args, result.stderr)


def test_json_everywhere_a_command_lists(nb: Nbunits, running) -> None:
    student, user = running
    courses = json.loads(nb.nbunits("course", "list", "--json").stdout)
    assert {"name": COURSE} .items() <= next(c for c in courses if c["name"] == COURSE).items()
    stats = json.loads(nb.nbunits("course", "stats", COURSE, "--json").stdout)
    assert stats["provisioned"] >= 1 and sum(stats["starts_per_day"].values()) >= 1
    shown = json.loads(nb.nbunits("course", "show", COURSE, "--json").stdout)
    assert "welcome.ipynb" in shown["notebooks"]
    copies = json.loads(nb.nbunits("student", "show", COURSE, user, "--json").stdout)
    assert {"notebook": "welcome.ipynb", "state": "up to date"} in copies
    listed = json.loads(nb.nbunits("student", "list", "--course", COURSE, "--json").stdout)
    [me] = [s for s in listed if s["user"] == user]
    assert me["id"] == student and COURSE in me["courses"] and me["home"] == f"/home/{user}"
    datetime.fromisoformat(me["since"])
    logs = nb.nbunits("logs", COURSE, user, "--json", "--lines", "20").stdout.splitlines()
    assert logs and all(json.loads(line)["__REALTIME_TIMESTAMP"] for line in logs)


def test_remove_then_purge_deletes_exactly_what_it_lists(nb: Nbunits) -> None:
    name = "purged"
    nb.add_course(name)
    users = [open_as(nb, secrets.token_hex(16), name) for _ in range(2)]
    nb.box.systemctl("stop", f"nbunits-{name}-proxy@{users[1]}.service")  # one runs, one not
    other = nb.home / users[0] / "demo"  # another course's copies stay whatever happens
    other.mkdir(exist_ok=True)

    out = nb.nbunits("course", "remove", name, "--yes").stdout
    assert "keep the copies of 2 student(s)" in out and "are kept" in out, out
    assert all((nb.home / u / name / "welcome.ipynb").exists() for u in users)

    # Asked, not confirmed: it lists every folder, deletes nothing, says so.
    err = fails(nb, "course", "remove", name, "--purge", code=5, stdin="")
    listing = nb.nbunits("course", "remove", name, "--purge", check=False, ).stdout
    for u in users:
        assert f"/home/{u}/{name}" in listing, listing
    assert "nothing was done" in err
    assert all((nb.home / u / name).is_dir() for u in users)

    out = nb.nbunits("course", "remove", name, "--purge", "--yes").stdout
    assert "the copies of 2 student(s) were deleted" in out, out
    assert not any((nb.home / u / name).exists() for u in users)
    assert other.is_dir() and (nb.home / users[0]).is_dir()
    deleted = journal(nb, f"MESSAGE_ID={Event.DELETED.value}", f"COURSE={name}")
    assert {e["STUDENT"] for e in deleted} == set(users)
    fails(nb, "course", "remove", name, "--purge", "--yes", code=3)  # nothing left


def test_purge_of_a_course_with_a_running_student_asks_first(nb: Nbunits) -> None:
    name = "purgerun"
    nb.add_course(name)
    user = open_as(nb, secrets.token_hex(16), name)
    listing = nb.box.run("/opt/nbunits/venv/bin/nbunits", "course", "remove", name, "--purge",
                         check=False, input="n\n")
    assert listing.returncode == 5
    assert "runs now and is stopped: " + user in listing.stdout, listing.stdout
    assert nb.show(f"nbunits-{name}@{user}.service", "ActiveState")["ActiveState"] == "active"
    nb.box.run("/opt/nbunits/venv/bin/nbunits", "course", "remove", name, "--purge",
               input="y\n")
    assert not (nb.home / user / name).exists()


def test_student_list_and_delete_with_a_backup(nb: Nbunits, course: str) -> None:
    student = secrets.token_hex(16)
    user = open_as(nb, student)
    listed = nb.nbunits("student", "list").stdout
    assert any(user in line and student in line and COURSE in line for line in listed.splitlines())

    fails(nb, "student", "delete", user, code=5, stdin="")
    assert user in nb.users()
    out = nb.nbunits("student", "delete", student, "--yes").stdout  # by edX id
    for what in (f"/home/{user}", f"nbunits-{COURSE}@{user}.socket", f"nbunits-{COURSE}@{user}.service",
                 f"/var/lib/nbunits/students/{user}", f"/var/lib/nbunits/tokens/{COURSE}/{user}.env",
                 f"/var/lib/nbunits/copies/{COURSE}/{user}.json", "/var/lib/nbunits/backups/"):
        assert what in out, (what, out)
    assert user not in nb.users() and not (nb.home / user).exists()
    assert not [u for u in nb.student_units() if user in u]
    for path in (f"/var/lib/nbunits/students/{user}", f"/var/lib/nbunits/tokens/{COURSE}/{user}.env"):
        assert nb.box.run("test", "-e", path, check=False).returncode == 1, path
    backup = out.rsplit("saved in ", 1)[1].strip()
    local = Path(nb.shared / "backup.tar.gz")
    local.write_bytes(Path(nb.box._host_path(backup, for_write=False)).read_bytes())
    with tarfile.open(local) as tar:
        assert f"{user}/{COURSE}/welcome.ipynb" in tar.getnames()
    [event] = journal(nb, f"MESSAGE_ID={Event.DELETED.value}", f"STUDENT={user}")
    assert event["ADMIN"] == "root" and event["BACKUP"] == backup

    again = open_as(nb, student)  # the link works again: a fresh start
    assert again == user
    out = nb.nbunits("student", "delete", user, "--yes", "--no-backup").stdout
    assert "(no backup)" in out and "saved" not in out


def test_journal_priorities_fields_and_events(nb: Nbunits, course: str) -> None:
    student = secrets.token_hex(16)
    user = open_as(nb, student)
    unit = f"nbunits-{COURSE}@{user}.service"
    # Jupyter's lines are in the students' namespace, at one priority (info), with their
    # level as a word that `nbunits logs --grep` finds.
    info = journal(nb, "--namespace=nbunits", "-u", unit, "PRIORITY=6", output="cat")
    assert "[I ServerApp] Jupyter Server" in info and "<6>" not in info, info[-2000:]
    assert not journal(nb, "--namespace=nbunits", "-u", unit, "PRIORITY=0..5", output="cat")
    logs = nb.nbunits("logs", COURSE, user, "--grep", "^\\[I ServerApp\\] Jupyter Server").stdout
    assert "Jupyter Server" in logs and "nbunits-dispatcher" not in logs, logs

    # Every line of the dispatcher and the helper carries COURSE and STUDENT.
    for identifier in ("nbunits-dispatcher", "nbunits-helper"):
        lines = journal(nb, f"SYSLOG_IDENTIFIER={identifier}")
        assert lines and all("COURSE" in e and "STUDENT" in e for e in lines), identifier
        assert any(e["COURSE"] == COURSE and e["STUDENT"] == user for e in lines), identifier

    def events(event: Event) -> list[dict]:
        return journal(nb, f"MESSAGE_ID={event.value}", f"COURSE={COURSE}", f"STUDENT={user}")

    assert len(events(Event.PROVISIONED)) == 1
    assert len(events(Event.STARTED)) == 1 and float(events(Event.STARTED)[0]["READY_SECONDS"]) > 0
    nb.nbunits("student", "reset", COURSE, user, "welcome.ipynb")
    [reset] = events(Event.RESET)
    assert reset["BY"] == "admin" and reset["ADMIN"] == "root" and reset["NOTEBOOK"] == "welcome.ipynb"
    nb.nbunits("student", "stop", COURSE, user)
    stopped = events(Event.STOPPED)
    assert any(e.get("SERVICE_RESULT") == "success" for e in stopped), stopped
    assert any(e.get("BY") == "admin" for e in stopped), stopped

    async def refused() -> int:
        async with client(nb) as session, session.get(
                f"/ipythonExercice/{COURSE}/missing.ipynb/{student}", allow_redirects=False) as resp:
            return resp.status
    assert asyncio.run(refused()) == 404
    assert [e for e in events(Event.REFUSED) if e["ERROR_CODE"] == "unknown_notebook"]

    # journalctl -x explains them, from the installed catalog.
    explained = journal(nb, "-x", f"MESSAGE_ID={Event.STARTED.value}", f"STUDENT={user}",
                        output="short")
    assert "READY=1" in explained and f"nbunits-{COURSE}@{user}.service" in explained


def test_metrics_in_prometheus_format(nb: Nbunits) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    name = "metered"
    nb.add_course(name)

    def metrics(text: str | None = None) -> dict[tuple[str, str], float]:
        text = text or nb.nbunits("metrics").stdout
        return {(s.name, s.labels.get("le", "")): s.value
                for family in text_string_to_metric_families(text) for s in family.samples
                if s.labels.get("course") == name}

    before = metrics()
    assert before[("nbunits_starts_total", "")] == 0
    users = [open_as(nb, secrets.token_hex(16), name) for _ in range(2)]
    after = metrics()
    assert after[("nbunits_students_running", "")] == 2
    assert after[("nbunits_students_provisioned", "")] == 2
    assert after[("nbunits_starts_total", "")] == 2
    assert after[("nbunits_start_seconds_count", "")] == 2
    assert 0 < after[("nbunits_start_seconds_sum", "")] < 240
    assert after[("nbunits_start_seconds_bucket", "+Inf")] == 2
    assert after[("nbunits_memory_bytes", "")] >= 0
    nb.nbunits("student", "stop", name, users[0])
    open_as(nb, secrets.token_hex(16), name)
    again = metrics()
    assert again[("nbunits_students_running", "")] == 2
    assert again[("nbunits_starts_total", "")] == 3  # a counter: read on from its cursor

    # The timer's service writes node_exporter's textfile.
    nb.box.systemctl("start", "nbunits-metrics.service")
    written = metrics(nb.box.read_file("/var/lib/prometheus/node-exporter/nbunits.prom"))
    assert written[("nbunits_starts_total", "")] == 3
    assert nb.show("nbunits-metrics.timer", "ActiveState")["ActiveState"] == "active"


COCKPIT = "cockpit.mooc.test"


def test_cockpit_page_shows_and_acts_in_a_real_browser(nb: Nbunits, running, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    from testbed.forward import Forwarder, Names
    from testbed.sites import launch_chromium

    student, user = running
    ca = nb.site.ca
    assert ca is not None
    pair = ca.issue(COCKPIT)
    box = nb.box
    box.write_file("/etc/cockpit/ws-certs.d/50-nbunits-test.cert", pair.cert.read_text())
    box.write_file("/etc/cockpit/ws-certs.d/50-nbunits-test.key", pair.key.read_text(), 0o600)
    box.write_file("/etc/cockpit/disallowed-users", "")  # Debian keeps root out by default
    password = secrets.token_urlsafe(12)
    box.run("chpasswd", input=f"root:{password}\n")
    box.systemctl("restart", "cockpit.socket")
    front = Forwarder(box.leader_pid, 9090).start()
    # A grading's result, as helper/grading.py stores it (test_grading: the real chain).
    box.write_file(f"/var/lib/nbunits/grades/{COURSE}/{user}/welcome.ipynb.json", json.dumps(
        {"notebook": "welcome.ipynb", "total": 7, "max": 10, "tests": [], "sent": False,
         "when": "2026-12-01T10:00:00+00:00"}), 0o600)
    names = Names({**nb.site.names.names, COCKPIT: front.listen_host})

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright, names, ca.cert, tmp_path / "home")
        try:
            page = browser.new_context().new_page()
            page.goto(f"https://{COCKPIT}:9090/")
            page.fill("#login-user-input", "root")
            page.fill("#login-password-input", password)
            page.click("#login-button")
            page.wait_for_url("**/system**", timeout=60_000)
            page.goto(f"https://{COCKPIT}:9090/nbunits")
            frame = page.frame_locator("iframe[name='cockpit1:localhost/nbunits']")
            expect(frame.locator("#courses tbody")).to_contain_text(COURSE, timeout=60_000)
            expect(frame.locator("#students tbody")).to_contain_text(student)
            expect(frame.locator("#scores tbody")).to_contain_text("welcome.ipynb")
            expect(frame.locator("#scores tbody")).to_contain_text("7/10 (70%)")
            assert frame.locator("#starts-graph rect").count() >= 1
            assert frame.locator("#memory-graph").count() == 1
            frame.locator(f"button[data-student='{user}']").click()
            expect(frame.locator("#logs")).to_contain_text("Jupyter", timeout=30_000)
            expect(frame.locator("#notebook")).to_contain_text("welcome.ipynb")
            frame.locator("#reset").click()
            expect(frame.locator("#done")).to_contain_text("reset", timeout=30_000)
            frame.locator("#stop").click()
            expect(frame.locator("#done")).to_contain_text("stopped", timeout=60_000)
            expect(frame.locator("#students tbody")).not_to_contain_text(student)
            assert frame.locator("#error").is_hidden()
        finally:
            browser.close()
    assert nb.show(f"nbunits-{COURSE}@{user}.service", "ActiveState")["ActiveState"] == "inactive"
    [reset] = journal(nb, f"MESSAGE_ID={Event.RESET.value}", f"STUDENT={user}")
    assert reset["BY"] == "admin"
