"""A student's own actions (the Course menu): validation, the capability check,
what changed, shared static versions."""

import asyncio
import json

import nbformat
import pytest

from nbunits.core.config import CourseConfig, Settings
from nbunits.core.errors import NbunitsError
from nbunits.core.names import InvalidName, StudentUnits, user_for
from nbunits.core.protocol import ProtocolError, StudentRequest, decode_request
from nbunits.helper import languages, shares
from nbunits.helper.capability import Grant, capability, write_grant
from nbunits.helper.copies import describe_changes
from nbunits.helper.service import handle_request

SECRET = "s" * 64
USER = user_for("0123abcd")
CAP = capability(SECRET, StudentUnits("demo", USER))


def notebook(*cells: tuple[str, str]) -> bytes:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source, id=cid) for cid, source in cells]
    return nbformat.writes(nb).encode()


def test_student_requests_are_validated_before_anything():
    ok = StudentRequest("demo", USER, CAP, "reset", "w1/a.ipynb")
    assert decode_request({"action": "student", **ok.to_json()}) == ok
    assert StudentRequest("demo", USER, CAP, "info", "").notebook == ""
    for bad, error in [(("demo", USER, CAP, "delete", "a.ipynb"), ProtocolError),
                       (("demo", USER, CAP, "reset", ""), InvalidName),
                       (("demo", USER, CAP, "share", "../a.ipynb"), InvalidName),
                       (("demo", USER, "short", "info", ""), InvalidName),
                       (("demo", "root", CAP, "info", ""), InvalidName),
                       (("Demo", USER, CAP, "info", ""), InvalidName)]:
        with pytest.raises(error):
            StudentRequest(*bad)


def test_what_changed_names_new_cells_and_counts_differing_ones():
    copy = notebook(("a", "x = 1"), ("b", "y = 2  # mine"), ("mine", "print(x)"))
    master = notebook(("a", "x = 1"), ("b", "y = 2"), ("c", "\n# Exercise 3\nz = 3"),
                      ("d", "w = 4"))
    assert describe_changes(copy, master) == [
        "2 new cells: \u201c# Exercise 3\u201d, \u201cw = 4\u201d.",
        "1 cell of the new version differs from yours (your own changes included)."]
    assert describe_changes(copy, copy) == []
    assert describe_changes(b"not a notebook", master)[0].startswith("4 new cells")


def test_what_changed_is_said_in_the_student_s_language():
    copy = notebook(("a", "x = 1"), ("b", "y = 2  # mine"))
    master = notebook(("a", "x = 1"), ("b", "y = 2"), ("c", "# Exercise 3"), ("d", "w = 4"),
                      ("e", "v = 5"), ("f", "u = 6"))
    assert describe_changes(copy, master, "fr") == [
        "4 nouvelles cellules : \u201c# Exercise 3\u201d, \u201cw = 4\u201d, \u201cv = 5\u201d"
        " et 1 autres.",
        "1 cellule de la nouvelle version diffère de la vôtre (vos propres modifications "
        "comprises)."]
    assert describe_changes(copy, master)[0].endswith(" and 1 more.")


def test_shares_are_refreshed_at_the_same_link_and_revoked(tmp_path):
    settings = Settings(state_dir=tmp_path)
    units = StudentUnits("demo", USER)
    token = shares.share(settings, units, "a.ipynb", "<p>v1</p>")
    assert shares.page(settings, token) == "<p>v1</p>"
    assert shares.share(settings, units, "a.ipynb", "<p>v2</p>") == token
    assert shares.page(settings, token) == "<p>v2</p>"
    assert shares.load(settings, units) == {"a.ipynb": token}
    assert shares.unshare(settings, units, "a.ipynb") and not shares.unshare(settings, units,
                                                                             "a.ipynb")
    with pytest.raises(NbunitsError) as exc:
        shares.page(settings, token)
    assert exc.value.code == "unknown_share"


def test_the_helper_checks_the_capability_again(tmp_path):
    settings = Settings(etc_dir=tmp_path / "etc", state_dir=tmp_path / "state")
    (tmp_path / "demo").mkdir()
    settings.courses_conf_dir.mkdir(parents=True)
    settings.course_file("demo").write_text(
        CourseConfig(name="demo", source=tmp_path / "demo").to_toml())
    settings.capability_secret.write_text(SECRET + "\n")

    def ask(cap: str) -> dict:
        return asyncio.run(handle_request(settings, {
            "action": "student", "course": "demo", "user": USER, "capability": cap,
            "what": "info", "notebook": ""}))

    assert ask("A" * 22)["code"] in ("forbidden", "bad_capability")  # not even its shape
    # No grant (never provisioned): no capability is current, the same answer as a
    # wrong one (nothing tells whether the student exists).
    assert ask(CAP)["code"] == "forbidden"
    write_grant(settings, StudentUnits("demo", USER), Grant())
    assert ask(CAP)["code"] == "unknown_student"  # the right capability, no notebook yet
    assert "admin" not in json.dumps(ask(CAP)).lower()
    # In the student's language: the one their launches named, else the course's.
    assert ask(CAP)["message"] == "You have no notebooks in this course yet."
    settings.course_file("demo").write_text(
        CourseConfig(name="demo", source=tmp_path / "demo", language="fr").to_toml())
    assert ask(CAP)["message"] == "Vous n'avez pas encore de notebook dans ce cours."
    settings.course_file("demo").write_text(
        CourseConfig(name="demo", source=tmp_path / "demo").to_toml())
    languages.remember(settings, USER, "fr-CA")
    assert ask(CAP)["message"] == "Vous n'avez pas encore de notebook dans ce cours."
    assert ask(CAP)["student_hint"] == "Rouvrez le notebook depuis la page de votre cours."
    assert ask("B" * 22 + ".0." + "9" * 10)["message"] == "Ce lien n'est plus valide."


def test_pages_for_students_offer_the_way_back_and_no_admin_hints():
    from nbunits.core import i18n
    from nbunits.dispatcher.pages import NGINX_PAGES, STUDENT_MESSAGES

    keys = [*STUDENT_MESSAGES.values(), *(key for _, key in NGINX_PAGES.values())]
    texts = [f"{i18n.text('en', key)} {i18n.text('en', key + '.hint')}" for key in keys]
    for text in texts:
        assert "course page" in text, text
        assert not any(w in text.lower() for w in ("nbunits ", "admin", "journal", "nginx")), text


# --- bounds per student (bounds.py) and the actions' own workers (workers.py) ---------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_students_actions_are_bounded_by_a_rate_with_a_burst(caplog):
    from nbunits.helper.bounds import StudentBounds, TooMany
    clock = Clock()
    bounds = StudentBounds(per_minute=30, burst=30, clock=clock)
    for _ in range(30):
        bounds.take("demo", USER)
    bounds.take("demo", user_for("someone-else"))  # each student has their own
    with pytest.raises(TooMany) as exc:
        bounds.take("demo", USER)
    assert exc.value.code == "too_many" and exc.value.retry_after == 2
    for _ in range(5):
        with pytest.raises(TooMany):
            bounds.take("demo", USER)
    clock.now += 2  # one more token
    bounds.take("demo", USER)
    with pytest.raises(TooMany):
        bounds.take("demo", USER)
    # The admin: one line for the first refusal, then one a minute with the count.
    lines = [r for r in caplog.records if "bound of 30 actions" in r.getMessage()]
    assert len(lines) == 1 and lines[0].STUDENT_BOUND == "rate" and lines[0].STUDENT == USER
    clock.now += 61
    for _ in range(31):
        try:
            bounds.take("demo", USER)
        except TooMany:
            pass
    lines = [r.getMessage() for r in caplog.records if "bound of 30 actions" in r.getMessage()]
    assert len(lines) == 2 and "refused 7 action(s)" in lines[1], lines


def test_a_student_has_one_action_at_a_time_and_a_few_waiting():
    from nbunits.helper.bounds import StudentBounds, TooMany

    async def go() -> list[str]:
        bounds, order = StudentBounds(waiting=2), []

        async def action(user: str, name: str, hold: float) -> None:
            async with bounds.turn("demo", user, 5):
                order.append(f"{name} starts")
                await asyncio.sleep(hold)
                order.append(f"{name} ends")

        first = asyncio.create_task(action(USER, "a", 0.2))
        await asyncio.sleep(0.01)
        others = [asyncio.create_task(action(USER, n, 0)) for n in "bc"]
        await asyncio.sleep(0.01)
        with pytest.raises(TooMany):  # a running, b and c waiting: a fourth is refused
            await action(USER, "d", 0)
        await action(user_for("other"), "x", 0)  # another student: at once
        with pytest.raises(TooMany):  # waiting longer than it may
            async with bounds.turn("demo", USER, 0.01):
                pass
        await asyncio.gather(first, *others)
        assert not bounds.queued and not bounds.turns  # nothing kept per student after
        return order

    assert asyncio.run(go()) == ["a starts", "x starts", "x ends", "a ends",
                                 "b starts", "b ends", "c starts", "c ends"]


def test_actions_run_in_worker_processes_that_are_stopped_past_their_time(tmp_path):
    import os

    from nbunits.helper.workers import Workers

    def request(what: str, notebook: str = "1.ipynb") -> StudentRequest:
        return StudentRequest("demo", USER, CAP, what, notebook)

    async def go() -> None:
        pool = Workers(Settings(state_dir=tmp_path), 1, run_time=1.0,
                       target="tests.unit.worker_targets:act")
        try:
            pid = int((await pool.run(request("info"), 5)).student_id)
            assert pid != os.getpid()  # another process, kept for the next action
            assert int((await pool.run(request("info"), 5)).student_id) == pid
            with pytest.raises(NbunitsError) as exc:  # a student's bound, as it was raised
                await pool.run(request("share"), 5)
            assert (exc.value.code, exc.value.student_hint) == ("student_limit", "stop one")
            with pytest.raises(NbunitsError) as exc:  # a bug: the admin's, not the student's
                await pool.run(request("unshare"), 5)
            assert exc.value.code == "helper_failed"
            # Past its time: stopped, its worker killed, a new one for the next action.
            with pytest.raises(NbunitsError) as exc:
                await pool.run(request("reset", "30.ipynb"), 5)
            assert exc.value.code == "action_timeout" and exc.value.retry_after
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
            assert int((await pool.run(request("info"), 5)).student_id) not in (pid, os.getpid())
            # One worker: a second action waits for it, at most as long as it may.
            slow = asyncio.create_task(pool.run(request("reset", "5.ipynb"), 5))
            await asyncio.sleep(0.1)
            with pytest.raises(NbunitsError) as exc:
                await pool.run(request("info"), 0.1)
            assert exc.value.code == "busy" and exc.value.retry_after
            assert (await pool.run(request("info"), 5)).notebook == "1.ipynb"
            await slow
        finally:
            await pool.close()

    asyncio.run(go())


def test_shares_are_bounded_in_number_size_and_total(tmp_path, monkeypatch):
    settings = Settings(state_dir=tmp_path)
    units = StudentUnits("demo", USER)
    for i in range(shares.MAX_SHARES):
        shares.share(settings, units, f"n{i}.ipynb", "<p>x</p>")
    with pytest.raises(NbunitsError) as exc:
        shares.check_room(settings, units, "one-more.ipynb")
    assert exc.value.code == "student_limit" and "Stop sharing" in exc.value.student_hint
    with pytest.raises(NbunitsError):
        shares.share(settings, units, "one-more.ipynb", "<p>x</p>")
    shares.share(settings, units, "n0.ipynb", "<p>again</p>")  # a refresh is not one more
    shares.share(settings, StudentUnits("other", USER), "n0.ipynb", "<p>x</p>")  # per course
    with pytest.raises(NbunitsError) as exc:
        shares.share(settings, units, "n1.ipynb", "x" * (shares.MAX_PAGE_BYTES + 1))
    assert exc.value.code == "student_limit" and "too large to share" in exc.value.message
    monkeypatch.setattr(shares, "MAX_SHARED_BYTES", 100)
    with pytest.raises(NbunitsError) as exc:  # all of theirs together
        shares.share(settings, units, "n1.ipynb", "x" * 99)
    assert "together" in exc.value.message
    assert shares.page(settings, shares.load(settings, units)["n1.ipynb"]) == "<p>x</p>"
    # What deleting them takes: every page, the index and its lock.
    files = shares.files_of(settings, units)
    assert len(files) == shares.MAX_SHARES + 2 and all(f.exists() for f in files)
    assert shares.students_sharing(settings, "demo") == [USER]


def test_a_page_over_its_limit_stops_before_it_is_rendered_whole(monkeypatch):
    from nbunits.helper import staff

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"x = {i}  # <" + "y" * 1000) for i in range(1000)]
    data = nbformat.writes(nb).encode()
    assert len(staff.render(data, "t", limit=2_000_000)) > 1_000_000
    escaped = []
    real = staff.escape
    monkeypatch.setattr(staff, "escape", lambda text: escaped.append(text) or real(text))
    with pytest.raises(staff.PageTooLarge):
        staff.render(data, "t", limit=100_000)
    assert len(escaped) < 100  # stopped at the cell that passed the limit
    with pytest.raises(staff.PageTooLarge):  # one output larger than the page: not escaped
        staff.render(notebook(("a", "<" * 200_000)), "t", limit=100_000)
    assert all(len(text) < 200_000 for text in escaped)
