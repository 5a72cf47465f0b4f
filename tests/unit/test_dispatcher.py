"""The dispatcher's handlers through aiohttp's test client, with a stand-in helper
that speaks the real protocol on a real unix socket (protocol.py on both ends)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from nbunits.core import i18n
from nbunits.core.config import CourseConfig, Server, Settings
from nbunits.core.names import Target, user_for
from nbunits.core.protocol import MAX_REQUEST_BYTES, Html, StaffViewRequest, ask
from nbunits.dispatcher.app import create_app

USER = user_for("s1")
CAP = "A" * 22 + ".0.9999999999"
PREFIX = f"/nb/demo/{USER}/{CAP}/"
SIG = "0" * 64


class FakeHelper:
    """Answers each request with `reply(request)`; records what it was asked."""

    def __init__(self, reply: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self.reply, self.requests = reply, []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = json.loads(await reader.readline())
        self.requests.append(request)
        writer.write(json.dumps(self.reply(request)).encode() + b"\n")
        await writer.drain()
        writer.close()


def opened(running: bool, start: dict[str, Any] | None = None
           ) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The helper's answers: the launch's, then the start's (a cold open asks for it)."""
    def reply(request: dict[str, Any]) -> dict[str, Any]:
        if request["action"] == "start":
            return start or {"ok": True, "retry_after": 0}
        return {"ok": True, "user": USER, "url": PREFIX + "notebooks/" + request["notebook"],
                "prefix": PREFIX, "copied": False, "running": running}
    return reply


def run_app(tmp_path: Path, helper: FakeHelper,
            test: Callable[[TestClient], Awaitable[None]], server: Server | None = None) -> None:
    settings = Settings(etc_dir=tmp_path / "etc", state_dir=tmp_path / "state",
                        run_dir=tmp_path / "run", server=server or Server())
    settings.courses_conf_dir.mkdir(parents=True)
    settings.run_dir.mkdir()
    settings.course_file("demo").write_text(
        CourseConfig(name="demo", source=tmp_path / "masters", legacy="open").to_toml())

    async def main() -> None:
        server = await asyncio.start_unix_server(helper.serve, str(settings.helper_socket),
                                                 limit=MAX_REQUEST_BYTES)
        async with server, TestClient(TestServer(create_app(settings))) as client:
            await test(client)

    asyncio.run(main())


def test_a_warm_open_redirects_and_a_cold_one_shows_the_starting_page(tmp_path):
    launch = {"action": "open", "course": "demo", "student": "s1", "notebook": "w1/a b.ipynb",
              "reset": True, "locale": "", "language": "en"}
    start = {"action": "start", "course": "demo", "user": USER, "capability": CAP}
    for running in (True, False):
        helper = FakeHelper(opened(running))

        async def test(client: TestClient, running: bool = running) -> None:
            resp = await client.get("/ipythonExercice/demo/w1/a b.ipynb/s1?reset=1",
                                    allow_redirects=False, headers={"Accept": "text/html"})
            if running:
                assert resp.status == 302
                assert resp.headers["Location"] == PREFIX + "notebooks/w1/a%20b.ipynb"
            else:
                # The page first says it is starting; its end, sent once the helper
                # has started the server, opens the notebook.
                page = await resp.text()
                assert resp.status == 200 and "Starting your notebook" in page
                assert page.endswith("<script>location.replace(target)</script></body></html>\n")
                assert f'const target = "{PREFIX}notebooks/w1/a%20b.ipynb"' in page

        run_app(tmp_path / str(running), helper, test)
        assert helper.requests == ([launch] if running else [launch, start])


def test_a_cold_open_without_a_browser_is_redirected_once_started(tmp_path):
    helper = FakeHelper(opened(False))

    async def test(client: TestClient) -> None:
        resp = await client.get("/ipythonExercice/demo/a.ipynb/s1", allow_redirects=False)
        assert resp.status == 302 and resp.headers["Location"] == PREFIX + "notebooks/a.ipynb"

    run_app(tmp_path, helper, test)
    assert [r["action"] for r in helper.requests] == ["open", "start"]


@pytest.mark.parametrize("html", [True, False])
def test_a_server_that_cannot_start_is_said_so(tmp_path, html):
    failed = {"ok": False, "code": "server_failed", "message": "the image is gone",
              "student_hint": None}
    helper = FakeHelper(opened(False, start=failed))

    async def test(client: TestClient) -> None:
        resp = await client.get("/ipythonExercice/demo/a.ipynb/s1", allow_redirects=False,
                                headers={"Accept": "text/html"} if html else {})
        page = await resp.text()
        if html:  # the first part was sent already: its end says it
            assert resp.status == 200 and "could not start" in page.rsplit("<script>", 1)[1]
        else:
            assert resp.status == 500 and resp.headers["X-Nbunits-Start"] == "failed"
            assert "the image is gone" in page

    run_app(tmp_path, helper, test)


@pytest.mark.parametrize("url, status", [
    ("/ipythonExercice/nosuch/a.ipynb/s1", 404),
    ("/ipythonExercice/Bad!/a.ipynb/s1", 400),
    ("/ipythonExercice/demo/../a.ipynb/s1", 400),
    ("/ipythonExercice/demo/a.ipynb/bad%20id", 400),
])
def test_bad_links_are_refused_before_the_helper_with_a_page_for_students(tmp_path, url, status):
    helper = FakeHelper(opened(True))

    async def test(client: TestClient) -> None:
        resp = await client.get(url, allow_redirects=False)
        page = await resp.text()
        assert resp.status == status and "<h1>" in page
        assert "nbunits " not in page  # no admin command on a student's page

    run_app(tmp_path, helper, test)
    assert helper.requests == []


def test_a_failed_command_in_the_helper_never_reaches_the_page(tmp_path):
    helper = FakeHelper(lambda r: {"ok": False, "code": "command_failed",
                                   "message": "systemctl start x.socket failed: secret detail"})

    async def test(client: TestClient) -> None:
        resp = await client.get("/ipythonExercice/demo/a.ipynb/s1")
        page = await resp.text()
        assert resp.status == 500
        assert "systemctl" not in page and "secret detail" not in page
        assert "try again" in page

    run_app(tmp_path, helper, test)


def test_a_staff_view_larger_than_a_request_is_served(tmp_path):
    html = "<p>" + "x" * (2 * 1024 * 1024) + "</p>"  # a notebook with a plot or two
    helper = FakeHelper(lambda r: {"ok": True, "html": html})

    async def test(client: TestClient) -> None:
        resp = await client.get(f"/staff/demo/{USER}/a.ipynb?expires=1&sig={SIG}")
        assert resp.status == 200 and await resp.text() == html
        assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
        assert "frame-ancestors 'self'" in resp.headers["Content-Security-Policy"]

    run_app(tmp_path, helper, test)
    assert helper.requests[0] == {"action": "staff_view", "course": "demo", "user": USER,
                                  "notebook": "a.ipynb", "expires": "1", "sig": SIG,
                                  "language": "en"}


WAKE = f"/_nbunits/wake/demo/{USER}/{CAP}"
SPLIT = Server(names=("notebooks.example.org",), student_domain="nb.example.org")
OWN = f"{USER}.nb.example.org"  # the student's own origin's host


def test_with_per_student_origins_a_launch_goes_to_the_student_s_own_host(tmp_path):
    helper = FakeHelper(opened(True))

    async def test(client: TestClient) -> None:
        for host, scheme, origin in (
                ("notebooks.example.org", "https", f"https://{OWN}"),
                ("Notebooks.example.org:8443", "https", f"https://{OWN}:8443"),
                ("notebooks.example.org:8080", "http", f"http://{OWN}:8080")):
            resp = await client.get("/ipythonExercice/demo/w1/a b.ipynb/s1", headers={
                "Host": host, "X-Forwarded-Proto": scheme}, allow_redirects=False)
            assert resp.status == 302, await resp.text()
            assert resp.headers["Location"] == f"{origin}{PREFIX}notebooks/w1/a%20b.ipynb"

    run_app(tmp_path, helper, test, SPLIT)


def test_a_student_s_own_host_reaches_only_their_own_paths(tmp_path):
    shared = {"ok": True, "student_id": "s1", "course": "demo", "notebook": "a.ipynb",
              "newer": False, "changes": [], "kept": "", "url": "/shared/" + "t" * 32}
    helper = FakeHelper(lambda r: shared if r["action"] == "student" else
                        {"ok": True, "retry_after": 0})
    other = f"{user_for('s2')}.nb.example.org"

    async def test(client: TestClient) -> None:
        share = f"/_nbunits/student/demo/{USER}/{CAP}/share"
        resp = await client.post(share, json={"notebook": "a.ipynb"}, headers={
            "Host": OWN, "X-Forwarded-Proto": "https"})
        # A shared page is on the server's name, never on the student's origin.
        assert (await resp.json())["url"] == "https://notebooks.example.org/shared/" + "t" * 32
        resp = await client.get(WAKE, headers={"Host": OWN, "X-Nbunits-Request-Uri": PREFIX},
                                allow_redirects=False)
        assert resp.status == 307
        resp = await client.get("/_nbunits/page/not-found", headers={"Host": OWN})
        assert resp.status == 404
        asked = len(helper.requests)
        for host, path in ((other, WAKE), (other, share),
                           (OWN, "/ipythonExercice/demo/a.ipynb/s1"),
                           (OWN, "/shared/" + "t" * 32), ("nb.example.org", WAKE)):
            resp = await client.request("POST" if "student" in path else "GET", path,
                                        headers={"Host": host}, allow_redirects=False)
            assert resp.status == 421, (host, path)
        assert len(helper.requests) == asked  # nothing reached the helper

    run_app(tmp_path, helper, test, SPLIT)



def test_the_wake_fallback_redirects_back_only_under_the_verified_prefix(tmp_path):
    helper = FakeHelper(lambda r: {"ok": True, "retry_after": 0})

    async def test(client: TestClient) -> None:
        for original, back in [
                (f"{PREFIX}api/status?x=1", f"{PREFIX}api/status?x=1"),
                (f"{PREFIX}notebooks/a%20b.ipynb", f"{PREFIX}notebooks/a%20b.ipynb"),
                (f"/nb/demo/{user_for('victim')}/x/../../{USER}/{CAP}/api", None),
                (f"{PREFIX}api/../../../x", None), (f"{PREFIX}api/%2e%2e/x", None),
                (f"{PREFIX}a//b", None), (f"//evil.example/../..{PREFIX}api", None),
                (f"{PREFIX}a%0d%0aX: y", None), (f"{PREFIX}%ff", None), ("", None)]:
            resp = await client.get(WAKE, allow_redirects=False,
                                    headers={"X-Nbunits-Request-Uri": original})
            if back is None:
                assert resp.status == 503 and resp.headers["Retry-After"], original
            else:
                assert resp.status == 307 and resp.headers["Location"] == back, original

    run_app(tmp_path, helper, test)
    assert helper.requests[0] == {"action": "wake", "course": "demo", "user": USER,
                                  "capability": CAP}


@pytest.mark.parametrize("path", [
    f"/_nbunits/wake/demo/{USER}/{'A' * 22}", f"/_nbunits/wake/demo/victim/{CAP}",
    f"/_nbunits/wake/Demo/{USER}/{CAP}", f"/_nbunits/wake/demo/{USER}/{CAP}x",
])
def test_a_malformed_wake_is_refused_before_the_helper(tmp_path, path):
    helper = FakeHelper(lambda r: {"ok": True, "retry_after": 0})

    async def test(client: TestClient) -> None:
        resp = await client.get(path, allow_redirects=False)
        assert resp.status == 400

    run_app(tmp_path, helper, test)
    assert helper.requests == []


def test_a_refused_or_unknown_wake_gets_the_same_answer(tmp_path):
    answers = []
    for code in ("forbidden", "unknown_student"):
        helper = FakeHelper(lambda r, code=code: {"ok": False, "code": code,
                                                  "message": "this link is not valid"})

        async def test(client: TestClient) -> None:
            resp = await client.get(WAKE, allow_redirects=False)
            answers.append((resp.status, await resp.text()))

        run_app(tmp_path / code, helper, test)
    assert answers[0] == answers[1] and answers[0][0] == 403


def test_a_unit_that_failed_recently_is_not_woken_yet(tmp_path):
    helper = FakeHelper(lambda r: {"ok": True, "retry_after": 42})

    async def test(client: TestClient) -> None:
        resp = await client.get(WAKE, allow_redirects=False,
                                headers={"X-Nbunits-Request-Uri": PREFIX + "api"})
        assert resp.status == 503 and resp.headers["Retry-After"] == "42"

    run_app(tmp_path, helper, test)


@pytest.mark.parametrize("query", [
    "expires=" + "9" * 5000 + f"&sig={SIG}", f"expires=1&sig={SIG}&sig={SIG}",
    "expires=1&sig=x", f"expires=%C2%B2&sig={SIG}", f"sig={SIG}", "expires=-1&sig=" + SIG,
])
def test_malformed_staff_parameters_are_a_400(tmp_path, query):
    helper = FakeHelper(lambda r: {"ok": True, "html": "<p>x</p>"})

    async def test(client: TestClient) -> None:
        resp = await client.get(f"/staff/demo/{USER}/a.ipynb?{query}")
        assert resp.status == 400
        assert "frame-ancestors" in resp.headers["Content-Security-Policy"]

    run_app(tmp_path, helper, test)
    assert helper.requests == []


def test_malformed_course_link_parameters_are_a_400(tmp_path):
    helper = FakeHelper(opened(True))

    async def test(client: TestClient) -> None:
        for query in ("reset=2", "reset=1&reset=1", "expires=" + "1" * 5000):
            resp = await client.get(f"/ipythonExercice/demo/a.ipynb/s1?{query}",
                                    allow_redirects=False)
            assert resp.status == 400, query
        resp = await client.get("/ipythonExercice/demo/a.ipynb/s1?utm=x", allow_redirects=False)
        assert resp.status == 302

    run_app(tmp_path, helper, test)


def test_no_helper_is_a_503(tmp_path):
    settings = Settings(etc_dir=tmp_path / "etc", run_dir=tmp_path / "run")
    settings.courses_conf_dir.mkdir(parents=True)
    settings.course_file("demo").write_text(
        CourseConfig(name="demo", source=tmp_path / "m", legacy="open").to_toml())

    async def main() -> None:
        async with TestClient(TestServer(create_app(settings))) as client:
            resp = await client.get("/ipythonExercice/demo/a.ipynb/s1")
            assert resp.status == 503

    asyncio.run(main())


def test_requests_are_typed_and_checked_on_both_ends():
    from nbunits.core.protocol import OpenRequest, ProtocolError, decode_request, encode_request

    request = OpenRequest(Target("demo", "s1", "w1/a.ipynb"), reset=True)
    assert decode_request(json.loads(encode_request(request))) == request
    for bad in (None, [], {"action": "rm"}, {"action": "open", "course": "demo"},
                {"action": "open", "course": "demo", "student": "s1", "notebook": "a.ipynb",
                 "reset": "1"}):
        with pytest.raises(ProtocolError):
            decode_request(bad)


def test_ask_reads_a_reply_of_megabytes(tmp_path):
    big = "y" * (8 * 1024 * 1024)

    async def main() -> str:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readline()
            writer.write(json.dumps({"ok": True, "html": big}).encode() + b"\n")
            await writer.drain()
            writer.close()

        async with await asyncio.start_unix_server(serve, str(tmp_path / "h.sock")):
            reply = await ask(tmp_path / "h.sock",
                              StaffViewRequest("demo", USER, "a.ipynb", "1", "x"), Html)
            return reply.html

    assert asyncio.run(main()) == big


def test_the_helper_logs_a_failed_command_and_replies_for_students(monkeypatch, caplog):
    from nbunits.core.run import CommandError
    from nbunits.helper import service as helper

    async def failing(settings: Settings, target: Target, admission: object,
                      reset: bool = False, **language: str) -> None:
        raise CommandError(["systemctl", "start", "x.socket"], 1, "Job failed")

    monkeypatch.setattr(helper, "provision", failing)
    reply = asyncio.run(helper.handle_request(Settings(), {
        "action": "open", "course": "demo", "student": "s1", "notebook": "a.ipynb"}))
    assert reply["ok"] is False and reply["code"] == "internal"
    assert "systemctl" not in json.dumps(reply)
    [record] = [r for r in caplog.records if r.name == "nbunits.helper.service"]
    assert "systemctl start x.socket failed with exit code 1: Job failed" in record.getMessage()
    assert record.COURSE == "demo" and record.STUDENT == USER


def test_a_cap_is_a_503_with_retry_after_and_a_page_that_retries(tmp_path):
    from nbunits.dispatcher.pages import busy_page

    page = busy_page("The notebook server is full right now.", 30, reload=True)
    assert page.status == 503 and page.headers["Retry-After"] == "30"
    # Retried by a script the student can stop (WCAG 2.2.1), not a timed <meta> refresh.
    assert "let left = 30;" in page.text and "location.reload()" in page.text
    assert "Stop retrying" in page.text and "http-equiv" not in page.text
    post = busy_page("Many students are starting at once.", 20, reload=False)
    assert "refresh" not in post.text and "open the exercise again" in post.text


@pytest.mark.parametrize(("path", "logged"), [
    ("/ipythonExercice/demo/week1/loops.ipynb/0123456789abcdef", "/ipythonExercice/demo/[student]"),
    ("/_nbunits/wake/demo/nbaaaaaaaaaaaaaaaa/AAAAAAAAAAAAAAAAAAAAAA.0.1",
     "/_nbunits/wake/demo/nbaaaaaaaaaaaaaaaa/[capability]"),
    # Cut where a capability starts, as nginx's access log does (names.loggable_path).
    ("/staff/x/AAAAAAAAAAAAAAAAAAAAAA.0.1/a.ipynb", "/staff/x/[capability]"),
    ("/ipythonExercice/" + "a" * 300 + "/a.ipynb/0123456789abcdef",
     "/ipythonExercice/" + "a" * 183),
    ("/shared/" + "A" * 32, "/shared/[token]"),
    ("/ipythonExercice/0123456789abcdef", "/ipythonExercice/[student]"),
    ("/staff/demo/nbaaaaaaaaaaaaaaaa/a.ipynb", "/staff/demo/nbaaaaaaaaaaaaaaaa/a.ipynb"),
])
def test_log_lines_name_no_capability_student_id_or_token(path: str, logged: str) -> None:
    from aiohttp.test_utils import make_mocked_request

    from nbunits.dispatcher.app import log_path

    assert log_path(make_mocked_request("GET", path)) == logged


def test_a_student_s_action_is_answered_in_their_page_s_language(tmp_path):
    """The extension says its page's language in Accept-Language: the helper is asked
    in it, its words are shown when they are in it, and the dispatcher's own are too."""
    said = {"ok": False, "code": "student_limit", "message": "Trop.", "student_hint": "Moins.",
            "language": "fr"}
    english = {"ok": False, "code": "student_limit", "message": "Too many.",
               "student_hint": "Fewer."}
    replies = iter([said, english, english])
    helper = FakeHelper(lambda r: next(replies))
    action = f"/_nbunits/student/demo/{USER}/{CAP}/share"
    french = {"Accept-Language": "fr"}

    async def test(client: TestClient) -> None:
        resp = await client.post(action, json={"notebook": "a.ipynb"}, headers=french)
        assert resp.status == 409 and (await resp.json())["message"] == "Trop. Moins."
        assert helper.requests[-1]["language"] == "fr"
        # English words of the helper's own: in French, what the status means.
        resp = await client.post(action, json={"notebook": "a.ipynb"}, headers=french)
        assert (await resp.json())["message"] == i18n.text("fr", "status.409.message") + " " + \
            i18n.text("fr", "status.409.hint")
        resp = await client.post(action, json={"notebook": "a.ipynb"})
        assert (await resp.json())["message"] == "Too many. Fewer."
        assert helper.requests[-1]["language"] == "en"
        asked = len(helper.requests)
        resp = await client.post(action, data="not json", headers=french)
        assert resp.status == 400
        assert (await resp.json())["message"].startswith(i18n.text("fr", "action.bad_request"))
        assert len(helper.requests) == asked

    run_app(tmp_path, helper, test)


def test_a_student_s_action_without_the_helper_is_said_in_their_language(tmp_path):
    async def test(client: TestClient) -> None:
        resp = await client.post(f"/_nbunits/student/demo/{USER}/{CAP}/info",
                                 json={"notebook": "a.ipynb"}, headers={"Accept-Language": "fr"})
        assert resp.status == 503 and resp.headers["Content-Language"] == "fr"
        assert (await resp.json())["message"].startswith(i18n.text("fr", "status.503.message"))

    settings = Settings(etc_dir=tmp_path / "etc", state_dir=tmp_path / "state",
                        run_dir=tmp_path / "run")
    settings.courses_conf_dir.mkdir(parents=True)
    settings.course_file("demo").write_text(
        CourseConfig(name="demo", source=tmp_path / "masters", legacy="open").to_toml())

    async def main() -> None:  # no helper listening
        async with TestClient(TestServer(create_app(settings))) as client:
            await test(client)

    asyncio.run(main())
