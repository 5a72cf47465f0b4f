"""Launches that cannot be forged, through nginx on a real systemd: LTI 1.1, LTI 1.3
and the legacy link's per-course modes. A refused launch creates nothing."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from urllib.parse import urlencode, urlsplit

import aiohttp
from cryptography.hazmat.primitives.asymmetric import rsa

from nbunits.core.names import user_for
from nbunits.dispatcher.legacy import legacy_signature

from .conftest import SHARED_IN_BOX, Nbunits, client
from .lms import CLIENT, CONTEXT, FORM, ISSUER, SECRET, id_token, lti11_form, lti13_login


def test_secrets_are_kept_from_everyone_but_the_dispatcher(nb: Nbunits, lti_course: str) -> None:
    out = nb.box.run("stat", "-c", "%U:%G %a", f"/etc/nbunits/secrets/{lti_course}.toml").stdout
    assert out.split() == ["root:nbunits", "640"]
    assert SECRET not in nb.box.read_file(f"/etc/nbunits/courses/{lti_course}.toml")


async def open_redirect(session: aiohttp.ClientSession, resp: aiohttp.ClientResponse,
                        course: str) -> tuple[str, str]:
    """A launch's redirect leads to the student's notebook UI: (user, page)."""
    body = await resp.text()
    assert resp.status == 302, f"{resp.status}: {body[:500]}"
    location = resp.headers["Location"]
    parts = urlsplit(location).path.split("/")
    assert parts[1:3] == ["nb", course], location
    async with session.get(location) as page:
        text = await page.text()
        assert page.status == 200, text[:500]
    assert "jupyter-config-data" in text
    return parts[3], text


def test_lti11_signed_launch_opens_the_notebook(nb: Nbunits, lti_course: str) -> None:
    student = secrets.token_hex(16)

    async def scenario() -> str:
        async with client(nb) as session:
            async with session.post("/lti/1.1/launch", data=lti11_form(student), headers=FORM,
                                    allow_redirects=False) as resp:
                user, _ = await open_redirect(session, resp, lti_course)
            return user

    user = asyncio.run(scenario())
    assert (nb.home / user / lti_course / "week1" / "loops.ipynb").is_file()


def test_lti11_forged_or_replayed_launches_create_nothing(nb: Nbunits, lti_course: str) -> None:
    before = nb.users()
    student = secrets.token_hex(16)
    good = lti11_form(student, custom_notebook="welcome.ipynb")
    forged = [
        (lti11_form(secrets.token_hex(16), secret="guessed"), 401),
        (good.replace(student, secrets.token_hex(16)), 401),  # tampered after signing
        (lti11_form(secrets.token_hex(16), context_id="course-v1:Other+1+2"), 403),
        (urlencode({"user_id": student, "context_id": CONTEXT}), 401),  # unsigned
    ]

    async def scenario() -> None:
        async with client(nb) as session:
            for body, status in forged:
                async with session.post("/lti/1.1/launch", data=body, headers=FORM,
                                        allow_redirects=False) as resp:
                    text = await resp.text()
                    assert resp.status == status, (body, text[:300])
                    assert "<h1>" in text and "Traceback" not in text
    asyncio.run(scenario())
    assert nb.users() == before

    async def launch(expected: int) -> str:
        async with client(nb) as session:
            async with session.post("/lti/1.1/launch", data=good, headers=FORM,
                                    allow_redirects=False) as resp:
                assert resp.status == expected, await resp.text()
                return await resp.text()
    asyncio.run(launch(302))
    assert "used already" in asyncio.run(launch(401))
    # A restarted dispatcher (or another host sharing the folder) remembers it too.
    nb.box.systemctl("restart", "nbunits-dispatcher.service")
    assert "used already" in asyncio.run(launch(401))


def test_lti13_login_then_launch_opens_the_notebook(nb: Nbunits, lti_course: str) -> None:
    student = secrets.token_hex(16)

    async def scenario() -> str:
        async with client(nb) as session:
            state, nonce = await lti13_login(session)
            async with session.post("/lti/1.3/launch", allow_redirects=False, data={
                    "state": state, "id_token": id_token(nonce, student)}) as resp:
                user, _ = await open_redirect(session, resp, lti_course)
            return user

    user = asyncio.run(scenario())
    assert (nb.home / user / lti_course / "welcome.ipynb").is_file()


def test_lti13_forged_launches_create_nothing(nb: Nbunits, lti_course: str) -> None:
    before = nb.users()
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    async def scenario() -> None:
        async with client(nb) as session:
            state, nonce = await lti13_login(session)
            cases = [
                ({"state": state, "id_token": id_token(nonce, "x1", other_key)}, 401),
                ({"state": state, "id_token": id_token("not-the-nonce", "x2")}, 401),
                ({"state": "forged", "id_token": id_token(nonce, "x3")}, 401),
            ]
            for form, status in cases:
                async with session.post("/lti/1.3/launch", data=form,
                                        allow_redirects=False) as resp:
                    assert resp.status == status, await resp.text()
            async with session.get("/lti/1.3/login?" + urlencode(
                    {"iss": "https://evil.example.org", "login_hint": "x"}),
                    allow_redirects=False) as resp:
                assert resp.status == 403, await resp.text()
    asyncio.run(scenario())
    assert nb.users() == before


def test_staff_launch_naming_a_student_shows_their_copy(nb: Nbunits, lti_course: str) -> None:
    student, teacher, learner = (secrets.token_hex(16) for _ in range(3))
    before = nb.users()

    async def scenario() -> None:
        async with client(nb) as session:
            async def launch(body: str) -> aiohttp.ClientResponse:
                async with session.post("/lti/1.1/launch", data=body, headers=FORM,
                                        allow_redirects=False) as resp:
                    await resp.read()
                    return resp

            student_user, _ = await open_redirect(session, await launch(
                lti11_form(student)), lti_course)
            # Staff, naming the student: a signed read-only view of the student's copy.
            resp = await launch(lti11_form(teacher, roles="Instructor", custom_student=student))
            location = resp.headers.get("Location", "")
            assert resp.status == 302 and location.startswith(
                f"/staff/{lti_course}/{student_user}/week1/loops.ipynb?expires="), location
            async with session.get(location) as page:
                assert page.status == 200 and "Read-only view" in await page.text()
            # LTI 1.3 too, with the custom claim `student`.
            state, nonce = await lti13_login(session)
            async with session.post("/lti/1.3/launch", allow_redirects=False, data={
                    "state": state, "id_token": id_token(nonce, teacher, claims={"roles": [
                        "http://purl.imsglobal.org/vocab/lis/v2/membership#Instructor"]},
                        student=student)}) as r:
                assert r.status == 302, await r.text()
                assert r.headers["Location"].startswith(
                    f"/staff/{lti_course}/{student_user}/welcome.ipynb?"), r.headers["Location"]
            # A student who never opened anything here: 404, and nothing is created.
            resp = await launch(lti11_form(teacher, roles="Instructor",
                                           custom_student=secrets.token_hex(16)))
            assert resp.status == 404
            resp = await launch(lti11_form(teacher, roles="Instructor", custom_student="../x"))
            assert resp.status == 400
            assert nb.users() == before | {student_user}
            # A learner naming someone else opens their own notebook.
            learner_user, _ = await open_redirect(session, await launch(
                lti11_form(learner, roles="Learner", custom_student=student)), lti_course)
            assert learner_user == user_for(learner)
    asyncio.run(scenario())


def test_legacy_link_modes(nb: Nbunits, lti_course: str) -> None:
    student = secrets.token_hex(16)
    link = f"/ipythonExercice/{lti_course}/welcome.ipynb/{student}"
    before = nb.users()

    async def get(url: str, **headers: str) -> int:
        async with client(nb) as session, \
                session.get(url, headers=headers, allow_redirects=False) as resp:
            await resp.read()
            return resp.status

    assert asyncio.run(get(link)) == 403  # off
    (nb.shared / "legacy.secret").write_text("legacy-secret\n")
    nb.nbunits("course", "update", lti_course, "--legacy", "referrer",
               "--legacy-referrer", "fun-mooc.fr")
    assert asyncio.run(get(link)) == 403
    assert asyncio.run(get(link, Referer="https://fun-mooc.fr.evil.org/x")) == 403
    assert nb.users() == before
    assert asyncio.run(get(link, Referer="https://lms.fun-mooc.fr/courses/x")) == 302

    failed = nb.nbunits("course", "update", lti_course, "--legacy", "signed", check=False)
    assert failed.returncode != 0 and "legacy-secret-file" in failed.stderr
    nb.nbunits("course", "update", lti_course, "--legacy", "signed",
               "--legacy-secret-file", f"{SHARED_IN_BOX}/legacy.secret")
    expires = int(time.time()) + 300
    sig = legacy_signature("legacy-secret", lti_course, "welcome.ipynb", student, expires)
    assert asyncio.run(get(link, Referer="https://lms.fun-mooc.fr/courses/x")) == 403
    assert asyncio.run(get(f"{link}?sig={sig}&expires={expires + 1}")) == 403
    assert asyncio.run(get(f"{link}?sig={sig}&expires={expires}")) == 302


def test_a_course_added_without_a_word_takes_only_signed_launches(
        nb: Nbunits, lti_course: str) -> None:
    """Secure by default (issue 26): no open legacy link unless the admin chooses it,
    and `course add`, `course show` and `status` say how students get in."""
    name = "closed26"
    added = nb.nbunits("course", "add", name, "--dir", "/opt/nbunits/src/examples/demo").stdout
    assert f"course {name}: students cannot get in yet: no LTI settings and the legacy " \
        "link off" in added, added
    assert "--lti11-key" in added and "--legacy signed --legacy-secret-file" in added, added
    link = f"/ipythonExercice/{name}/welcome.ipynb/{secrets.token_hex(16)}"
    before = nb.users()

    async def get(url: str) -> int:
        async with client(nb) as session, session.get(url, allow_redirects=False) as resp:
            await resp.read()
            return resp.status

    assert asyncio.run(get(link)) == 403 and nb.users() == before  # nothing created
    shown = nb.nbunits("course", "show", name).stdout.splitlines()
    assert shown[1] == "# students cannot get in yet: no LTI settings and the legacy link off"
    assert 'legacy = "off"' in shown
    status = nb.nbunits("status").stdout
    assert f"  {name}: students cannot get in yet" in status, status
    assert f"  {lti_course}: students get in by: LTI 1.1, LTI 1.3 (1 registration)" in status

    # Open only if chosen, and then said in capitals, with what it means.
    opened = nb.nbunits("course", "update", name, "--legacy", "open").stdout
    assert "legacy link (OPEN: anyone who knows or guesses a student id)" in opened, opened
    assert "warning: legacy = open" in opened and "--new-students-per-minute" in opened
    assert f"  {name}: students get in by: legacy link (OPEN" in nb.nbunits("status").stdout
    assert json.loads(nb.nbunits("course", "show", name, "--json").stdout)["launch"] == {
        "methods": ["legacy link (OPEN: anyone who knows or guesses a student id)"],
        "open": True}
    assert asyncio.run(get(link)) == 302


def test_lti13_login_with_overlong_hints_is_refused_not_a_502(nb: Nbunits, lti_course: str) -> None:
    # Found by the fuzz test: the hints come back in the redirect's Location header.
    async def login(hint: str) -> int:
        async with client(nb) as session:
            async with session.post("/lti/1.3/login", data={
                    "iss": ISSUER, "client_id": CLIENT, "login_hint": hint},
                    allow_redirects=False) as resp:
                return resp.status

    assert asyncio.run(login("a" * 3000)) == 302
    assert asyncio.run(login("é" * 5000)) == 400
