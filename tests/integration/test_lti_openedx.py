"""Open edX's own LTI consumer (lti-consumer-xblock) as the LMS, through nginx on a
real systemd: LTI 1.1 and two LTI 1.3 components (each its own client id and key),
one learner under three ids, roles as edX sends them, the staff page, key rotation,
and the MFE -> LMS -> notebook framing in Chromium."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from nbunits.core.names import user_for
from testbed.browser import open_exercise
from testbed.forward import Names
from testbed.sites import CHROMIUM, HttpsSite, framing_page, launch_chromium
from tests import openedx

from .conftest import SERVER, SHARED_IN_BOX, Nbunits, client

COURSE, CONTEXT = "openedx", "course-v1:OpenedX+Py101+2026"
LMS = "https://lms.mooc.test"
AUTH = LMS + "/api/lti_consumer/v1/launch/"
BASE = f"https://{SERVER}"  # what client(nb) is, for the URLs the platform signs
KEY, SECRET = "openedx-key", secrets.token_hex(16)
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _key() -> tuple[rsa.RSAPrivateKey, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()).decode()


def _jwks(*pairs: tuple[rsa.RSAPrivateKey, str]) -> str:
    return json.dumps({"keys": [
        {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())), "kid": kid}
        for key, kid in pairs]})


def _component(pem: str, kid: str, client_id: str) -> openedx.Platform13:
    return openedx.Platform13(LMS, f"{BASE}/lti/1.3/login", f"{BASE}/lti/1.3/launch", pem, kid,
                              client_id=client_id)


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: str


async def _reply(resp: aiohttp.ClientResponse) -> Reply:
    return Reply(resp.status, dict(resp.headers), await resp.text())


class Lms:
    """The course in Open edX: one LTI 1.1 passport, two LTI 1.3 components."""

    def __init__(self, nb: Nbunits) -> None:
        self.nb = nb
        (self.key_a, pem_a), (self.key_b, pem_b) = _key(), _key()
        self.a = _component(pem_a, "a1", str(uuid.uuid4()))
        self.b = _component(pem_b, "b1", str(uuid.uuid4()))
        shared = nb.shared
        (shared / "openedx-a.json").write_text(_jwks((self.key_a, "a1")))
        (shared / "openedx-b.json").write_text(_jwks((self.key_b, "b1")))
        (shared / "openedx-11.secret").write_text(SECRET + "\n")
        nb.nbunits("course", "add", COURSE, "--dir", "/opt/nbunits/src/examples/demo",
                   "--lti-context-id", CONTEXT, "--lti11-key", KEY,
                   "--lti11-secret-file", f"{SHARED_IN_BOX}/openedx-11.secret",
                   "--lti13-issuer", LMS, "--lti13-client-id", self.a.client_id,
                   "--lti13-deployment-id", "1", "--lti13-auth-url", AUTH,
                   "--lti13-keys-url", f"file://{SHARED_IN_BOX}/openedx-a.json",
                   "--legacy", "open")  # FUN's legacy link too, as it sends it
        nb.nbunits("course", "update", COURSE, "--lti13-client-id", self.b.client_id,
                   "--lti13-auth-url", AUTH,
                   "--lti13-keys-url", f"file://{SHARED_IN_BOX}/openedx-b.json")

    async def launch11(self, session: aiohttp.ClientSession, user_id: str, role: str,
                       custom: list[str]) -> Reply:
        form = openedx.launch11(f"{BASE}/lti/1.1/launch", KEY, SECRET, user_id=user_id,
                                role=role, context_id=CONTEXT,
                                resource_link_id=f"block-v1:OpenedX+Py101+2026+type@lti_consumer"
                                                 f"+block@{uuid.uuid4().hex}", custom=custom)
        async with session.post("/lti/1.1/launch", data=urlencode(form), headers=FORM,
                                allow_redirects=False) as resp:
            return await _reply(resp)

    async def launch13(self, session: aiohttp.ClientSession, component: openedx.Platform13,
                       sub: str, role: str, custom: list[str], forum_role: str = "",
                       content_item: dict[str, object] | None = None,
                       resource_link_id: str = "", context_id: str = CONTEXT) -> Reply:
        started = component.login(external_user_id=sub, role=role, context_id=context_id,
                                  resource_link_id=resource_link_id or _block(),
                                  custom=custom, forum_role=forum_role,
                                  content_item=content_item)
        return await self.through(session, started)

    async def through(self, session: aiohttp.ClientSession, started: openedx.Launch13,
                      headers: dict[str, str] | None = None) -> Reply:
        """The browser: the tool's login, the platform's answer, posted to the tool."""
        login = urlsplit(started.login_url)
        async with session.get(f"{login.path}?{login.query}", allow_redirects=False) as resp:
            assert resp.status == 302, await resp.text()
            location = resp.headers["Location"]
        assert location.startswith(AUTH + "?")
        form = started.answer(location)
        async with session.post("/lti/1.3/launch", data=form, allow_redirects=False,
                                headers=headers) as resp:
            return await _reply(resp)


def _block() -> str:
    return f"block-v1:x+type@lti_consumer+block@{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def lms(nb: Nbunits) -> Lms:
    return Lms(nb)


def _user(resp: Reply) -> str:
    location = resp.headers.get("Location", "")
    parts = urlsplit(location).path.split("/")
    assert resp.status == 302 and parts[1:3] == ["nb", COURSE], (resp.status, location)
    return parts[3]


def test_one_learner_one_copy_by_legacy_link_lti11_and_both_lti13_components(
        nb: Nbunits, lms: Lms) -> None:
    anon, external = secrets.token_hex(16), str(uuid.uuid4())  # what edX sends in 1.1 / 1.3

    async def scenario() -> None:
        async with client(nb) as session:
            user = _user(await lms.launch11(session, anon, "student",
                                            ["notebook=week1/loops.ipynb"]))
            assert user == user_for(anon)
            async with session.get(f"/ipythonExercice/{COURSE}/welcome.ipynb/{anon}",
                                   allow_redirects=False) as resp:
                assert _user(await _reply(resp)) == user
            # The admin links edX's 1.3 id to the 1.1 one: both components reach it.
            linked = nb.nbunits("student", "link-ids", COURSE, anon, external)
            assert user in linked.stdout
            for component in (lms.a, lms.b):
                assert _user(await lms.launch13(session, component, external, "student",
                                                ["notebook=welcome.ipynb"])) == user
            # Linking the other way would hide that work: refused, nothing changes.
            refused = nb.nbunits("student", "link-ids", COURSE, str(uuid.uuid4()), anon,
                                 check=False)
            assert refused.returncode != 0 and "has work" in refused.stderr
    asyncio.run(scenario())
    assert nb.users() >= {user_for(anon)} and user_for(external) not in nb.users()


def test_roles_as_edx_sends_them_and_the_staff_page(nb: Nbunits, lms: Lms) -> None:
    learner, moderator, teacher = secrets.token_hex(16), str(uuid.uuid4()), str(uuid.uuid4())

    async def scenario() -> None:
        async with client(nb) as session:
            learner_user = _user(await lms.launch11(session, learner, "student",
                                                    ["notebook=welcome.ipynb"]))
            # A forum moderator (edX: TeachingAssistant in 1.3) is a learner here.
            assert _user(await lms.launch13(session, lms.a, moderator, "student",
                                            ["notebook=welcome.ipynb"],
                                            forum_role="Group Moderator")) == user_for(moderator)
            # Course staff naming no student (the component's parameters are the
            # learners'): the staff page, with a read-only link to each copy.
            for resp in (await lms.launch11(session, secrets.token_hex(16), "staff",
                                            ["notebook=welcome.ipynb"]),
                         await lms.launch13(session, lms.b, teacher, "instructor",
                                            ["notebook=welcome.ipynb"])):
                page = resp.body
                assert resp.status == 200 and "Students' copies of" in page, page[:300]
                assert learner in page and "Traceback" not in page
                link = re.search(rf'href="(/staff/{COURSE}/{learner_user}/welcome\.ipynb\?[^"]+)"',
                                 page)
                assert link, page
                async with session.get(link.group(1).replace("&amp;", "&")) as view:
                    assert view.status == 200 and "Read-only view" in await view.text()
            # Written in Studio as custom_student=ID (edX sends custom_custom_student).
            resp = await lms.launch11(session, secrets.token_hex(16), "instructor",
                                      ["custom_notebook=welcome.ipynb",
                                       f"custom_student={learner}"])
            assert resp.status == 302 and resp.headers["Location"].startswith(
                f"/staff/{COURSE}/{learner_user}/welcome.ipynb?"), resp.headers.get("Location")
    asyncio.run(scenario())
    assert user_for(teacher) not in nb.users()


def test_a_rotated_key_is_a_clear_401_until_the_timer_fetches_it(nb: Nbunits, lms: Lms) -> None:
    new_key, new_pem = _key()
    rotated = _component(new_pem, "a2", lms.a.client_id)
    student = str(uuid.uuid4())

    async def launch() -> Reply:
        async with client(nb) as session:
            return await lms.launch13(session, rotated, student, "student",
                                      ["notebook=welcome.ipynb"])

    resp = asyncio.run(launch())
    assert resp.status == 401
    journal = nb.box.run("journalctl", "-u", "nbunits-dispatcher.service", "--no-pager",
                         "-o", "cat").stdout
    assert "signed with an unknown key" in journal and "refresh-keys" in journal
    (nb.shared / "openedx-a.json").write_text(
        _jwks((lms.key_a, "a1"), (new_key, "a2")))
    # What nbunits-refresh-keys.timer runs (installed and enabled by nbunits install).
    assert nb.box.systemctl("is-enabled", "nbunits-refresh-keys.timer").stdout.strip() == "enabled"
    nb.box.systemctl("start", "nbunits-refresh-keys.service")
    assert _user(asyncio.run(launch())) == user_for(student)


def test_key_files_are_checked_when_set(nb: Nbunits, lms: Lms) -> None:
    nb.box.write_file("/root/platform.json", _jwks((lms.key_a, "a1")))
    nb.box.run("chmod", "600", "/root/platform.json")
    failed = nb.nbunits("course", "update", COURSE, "--lti13-client-id", lms.a.client_id,
                        "--lti13-keys", "/root/platform.json", "--lti13-keys-url", "",
                        check=False)
    assert failed.returncode != 0 and "cannot read /root/platform.json" in failed.stderr
    nb.box.write_file("/etc/nbunits/garbage.json", "{not keys")
    failed = nb.nbunits("course", "update", COURSE, "--lti13-client-id", lms.a.client_id,
                        "--lti13-keys", "/etc/nbunits/garbage.json", "--lti13-keys-url", "",
                        check=False)
    assert failed.returncode != 0 and "not a JWKS or PEM" in failed.stderr
    assert lms.a.client_id in nb.box.read_file(f"/etc/nbunits/courses/{COURSE}.toml")
    assert "garbage" not in nb.box.read_file(f"/etc/nbunits/courses/{COURSE}.toml")


# The same time for both answers: the notebook shown where it may be framed, and
# Chromium's refusal where it may not (its server warm in both: a slow start is
# neither).
FRAMING_BUDGET_MS = 30_000
# What Chromium says in the console when frame-ancestors blocks a frame (Chromium
# 156: "Framing '...' violates ... "frame-ancestors ..."; older: "Refused to frame").
REFUSED_TO_FRAME = re.compile(r"(Framing|Refused to frame) 'https://notebooks\.mooc\.test/'"
                              r".*frame-ancestors", re.S)


@dataclass(frozen=True)
class Framed:
    shown: bool  # the notebook is on the page
    refused: list[str]  # Chromium's console lines refusing to frame it
    inner: str  # the innermost frame's URL
    seconds: float


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (scripts/setup)")
def test_mfe_frames_lms_frames_notebook_in_chromium(nb: Nbunits, tmp_path: Path) -> None:
    """Courseware is the learning MFE framing the LMS's xblock view, which frames
    us: Chromium checks frame-ancestors against every ancestor, so the course lists
    both origins. Three HTTPS sites: apps.mooc.test, lms.mooc.test, notebooks.mooc.test.
    A refusal is Chromium's own (its console says why), not a slow start: each
    student's server is started before Chromium opens the page."""
    from playwright.sync_api import sync_playwright

    ca = nb.site.ca
    assert ca is not None
    mfe, lms = "apps.mooc.test", "lms.mooc.test"
    # The LMS's xblock view frames the exercise link of the learner named in its path;
    # the MFE frames the LMS URL it is given.
    lms_site = HttpsSite(ca.server_context(ca.issue(lms)), framing_page(
        lambda r: nb.site.url("/ipythonExercice/mfe/welcome.ipynb/" + r.path.rsplit("/", 1)[-1])))
    mfe_site = HttpsSite(ca.server_context(ca.issue(mfe)),
                         framing_page(lambda r: r.query.get("xblock", "")))
    names = Names({**nb.site.names.names, lms: lms_site.start(), mfe: mfe_site.start()})

    def framed(origins: str, home: Path) -> Framed:
        # A student's Jupyter gets the course's origins when it starts: a new student,
        # whose server is up before the browser asks (warm).
        nb.nbunits("course", "update", "mfe", "--lms-origin", origins)
        student = secrets.token_hex(16)
        asyncio.run(_warm(nb, "mfe", student))
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright, names, ca.cert, home)
            try:
                page = browser.new_context().new_page()
                console: list[str] = []  # every frame's
                page.on("console", lambda message: console.append(message.text))
                started = time.monotonic()
                page.goto(f"https://{mfe}/learning/course/{CONTEXT}/home?xblock="
                          f"https://{lms}/xblock/{student}")
                notebook = page.frame_locator("#f").frame_locator("#f").locator(".jp-Notebook")
                deadline = started + FRAMING_BUDGET_MS / 1000
                while time.monotonic() < deadline and not notebook.count() and not [
                        line for line in console if REFUSED_TO_FRAME.search(line)]:
                    page.wait_for_timeout(100)
                took = time.monotonic() - started
                inner = page.frames[-1].url if len(page.frames) == 3 else ""
                return Framed(notebook.count() > 0,
                              [line for line in console if REFUSED_TO_FRAME.search(line)],
                              inner, took)
            finally:
                browser.close()

    nb.add_course("mfe")
    allowed = framed(f"https://{mfe} https://{lms}", tmp_path / "a")
    blocked = framed(f"https://{lms}", tmp_path / "b")
    print(f"allowed: {allowed}\nblocked: {blocked}")
    assert allowed.shown and not allowed.refused, allowed
    assert allowed.inner.startswith(f"https://{SERVER}/nb/mfe/"), allowed
    # Chromium blocks the MFE's view: it says so, for frame-ancestors, in the same time.
    assert blocked.refused and not blocked.shown, blocked
    assert f"frame-ancestors 'self' https://{lms}" in blocked.refused[0], blocked
    assert not blocked.inner.startswith(f"https://{SERVER}/nb/"), blocked


async def _warm(nb: Nbunits, course: str, student: str) -> None:
    """The student's server started and answering, before any browser asks."""
    async with client(nb) as session:
        opened = await open_exercise(session, course, "welcome.ipynb", student)
        assert opened.page_status == 200, opened.page[:300]


# Open edX's deep_linking_response_endpoint for the component's configuration.
RETURN = LMS + "/api/lti_consumer/v1/lti/7/lti-dl/response"
TICKET = re.compile(r'name="ticket" value="([^"]+)"')
ANSWER = re.compile(r'<form id="answer" method="post" action="([^"]+)">\s*'
                    r'<input type="hidden" name="JWT" value="([^"]+)">')


def _signed(nb: Nbunits) -> int:
    """How many deep-linking answers the dispatcher has signed (its journal)."""
    journal = nb.box.run("journalctl", "-u", "nbunits-dispatcher.service", "--no-pager",
                         "-o", "cat").stdout
    return journal.count("answer signed for client")


async def _pick(session: aiohttp.ClientSession, ticket: str, notebook: str) -> Reply:
    async with session.post("/lti/1.3/deep-link", data={"ticket": ticket, "notebook": notebook},
                            allow_redirects=False) as resp:
        return await _reply(resp)


def test_an_author_picks_the_notebook_by_deep_linking(nb: Nbunits, lms: Lms) -> None:
    """Studio's deep-linking button, as Open edX's own consumer makes it: nbunits
    lists the course's notebooks, signs the author's pick, Open edX's code checks
    the answer with the key nbunits publishes, and the component's next launch
    opens that notebook. Forged, replayed and out-of-course picks, and a request
    that takes no resource link, are refused, and nothing more is signed."""
    author, learner = str(uuid.uuid4()), str(uuid.uuid4())
    before = _signed(nb)
    # The tool's key, made by nbunits install: root's, and readable by the dispatcher only.
    assert nb.box.run("stat", "-c", "%U:%G %a", "/etc/nbunits/lti-tool-key.pem"
                      ).stdout.split() == ["root:nbunits", "640"]

    async def scenario() -> None:
        async with client(nb) as session:
            # Studio's Tool Public Key: what nbunits publishes at its keyset URL.
            async with session.get("/lti/1.3/jwks") as resp:
                assert resp.status == 200, await resp.text()
                [jwk] = (await resp.json())["keys"]
            public = jwt.PyJWK(jwk).key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            component = dataclasses.replace(lms.a, tool_key=public.decode(), return_url=RETURN)
            link = _block()

            def deep_link(platform: openedx.Platform13) -> openedx.Launch13:
                return platform.deep_link_login(external_user_id=author, role="staff",
                                                context_id=CONTEXT, resource_link_id=link)

            # Open edX sends no locale with it: the author's browser's language.
            page = await lms.through(session, deep_link(component), {"Accept-Language": "fr"})
            assert page.status == 200, page.body[:500]
            assert '<html lang="fr">' in page.body and "Choisir le notebook" in page.body
            assert "Week 1: loops" in page.body and "<code>week1/loops.ipynb</code>" in page.body
            assert "Welcome to the nbunits demo course" in page.body
            ticket = TICKET.search(page.body)
            assert ticket, page.body
            # Not nbunits' ticket, a notebook outside the course: refused, nothing signed.
            forged = jwt.encode({"course": COURSE, "iss": LMS, "client_id": component.client_id,
                                 "deployment_id": "1", "return_url": RETURN, "jti": "x",
                                 "iat": int(time.time()), "exp": int(time.time()) + 60},
                                secrets.token_bytes(32), algorithm="HS256")
            for bad, status in (((forged, "week1/loops.ipynb"), 401),
                                ((ticket.group(1), "week9/absent.ipynb"), 404),
                                ((ticket.group(1), "../demo/week1/loops.ipynb"), 400)):
                refused = await _pick(session, *bad)
                assert refused.status == status and 'name="JWT"' not in refused.body, \
                    (bad[1], refused.status, refused.body[:300])
            # The author's pick (the same ticket: a refused pick does not use it).
            answer = await _pick(session, ticket.group(1), "week1/loops.ipynb")
            assert answer.status == 200, answer.body[:500]
            form = ANSWER.search(answer.body)
            assert form and form.group(1) == RETURN, answer.body
            token = form.group(2)
            assert jwt.get_unverified_header(token)["kid"] == jwk["kid"]
            [item] = component.content_items(token)  # Open edX's own check
            assert item["custom"] == {"notebook": "week1/loops.ipynb"}, item
            assert item["url"] == f"{BASE}/lti/1.3/launch" and item["title"] == "Week 1: loops"
            claims = jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["RS256"], audience=LMS)
            assert claims["iss"] == component.client_id
            # Replayed: refused.
            replayed = await _pick(session, ticket.group(1), "week1/loops.ipynb")
            assert replayed.status == 401 and 'name="JWT"' not in replayed.body
            # A learner's launch of that component: the component's own custom
            # parameters are replaced by the item's, and open the chosen notebook.
            opened = await lms.launch13(session, component, learner, "student",
                                        ["notebook=welcome.ipynb"], content_item=item,
                                        resource_link_id=link)
            location = opened.headers.get("Location", "")
            assert _user(opened) == user_for(learner) and location.endswith(
                "/week1/loops.ipynb"), location
            prefix = "/".join(urlsplit(location).path.split("/")[:5]) + "/"
            async with session.get(prefix + "api/contents/week1/loops.ipynb",
                                   headers={"Authorization": f"token {prefix.split('/')[4]}"}) \
                    as resp:
                assert resp.status == 200 and "Week 1: loops" in await resp.text()
            # A platform that takes no resource link here: a clear 400, no ticket.
            no_links = dataclasses.replace(component, accept_types=["link", "html"])
            refused = await lms.through(session, deep_link(no_links))
            assert refused.status == 400 and "does not take an LTI resource link" in refused.body
            assert not TICKET.search(refused.body)
    asyncio.run(scenario())
    assert _signed(nb) == before + 1


def test_one_registration_serves_every_component_of_the_course(nb: Nbunits, lms: Lms) -> None:
    """Components sharing one client id and key (openedx-ltistore's reusable
    configuration, or an LTI 1.3 passport shared by duplicated components): each
    resource link opens its own notebook, named by its custom parameter or chosen
    by deep linking (the item Open edX saved, as the test above gets it)."""
    learner = str(uuid.uuid4())
    chosen = {"type": "ltiResourceLink", "title": "Data and a plot",
              "url": f"{BASE}/lti/1.3/launch", "custom": {"notebook": "data-and-plots.ipynb"}}

    async def scenario() -> list[str]:
        async with client(nb) as session:
            opened = [await lms.launch13(session, lms.a, learner, "student",
                                         ["notebook=week1/python-basics.ipynb"],
                                         resource_link_id=_block()),
                      await lms.launch13(session, lms.a, learner, "student", [],
                                         content_item=chosen, resource_link_id=_block())]
            assert [_user(resp) for resp in opened] == [user_for(learner)] * 2
            return [urlsplit(resp.headers["Location"]).path for resp in opened]

    first, second = asyncio.run(scenario())
    assert first.endswith("/week1/python-basics.ipynb"), first
    assert second.endswith("/data-and-plots.ipynb"), second


def test_one_registration_serves_several_courses_each_by_its_context(nb: Nbunits,
                                                                     lms: Lms) -> None:
    """One reusable configuration for every course of the LMS: two nbunits courses
    hold the same registration; each launch goes to the course its context names,
    verified with that course's keys. A context neither course has: 403."""
    other = "course-v1:OpenedX+Py102+2026"
    nb.nbunits("course", "add", "openedx2", "--dir", "/opt/nbunits/src/examples/demo",
               "--lti-context-id", other, "--lti13-issuer", LMS,
               "--lti13-client-id", lms.a.client_id, "--lti13-deployment-id", "1",
               "--lti13-auth-url", AUTH,
               "--lti13-keys-url", f"file://{SHARED_IN_BOX}/openedx-a.json")
    learner = str(uuid.uuid4())

    async def launch(context: str) -> Reply:
        async with client(nb) as session:
            return await lms.launch13(session, lms.a, learner, "student",
                                      ["notebook=welcome.ipynb"], context_id=context)

    first, second = asyncio.run(launch(CONTEXT)), asyncio.run(launch(other))
    assert _user(first) == user_for(learner)
    assert urlsplit(second.headers.get("Location", "")).path.startswith(
        f"/nb/openedx2/{user_for(learner)}/"), (second.status, second.headers, second.body[:300])
    stranger = asyncio.run(launch("course-v1:Nobody+X+1"))
    assert stranger.status == 403 and "Location" not in stranger.headers


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (scripts/setup)")
def test_deep_linking_in_chromium_by_keyboard(nb: Nbunits, lms: Lms, tmp_path: Path) -> None:
    """The author's browser: Open edX's launch form posts the deep-linking request to
    nbunits, the author Tabs to a notebook and presses Enter, and the answer page's
    own script (allowed by its CSP's hash) posts the JWT to Open edX's return URL,
    whose code takes it. The LMS is a site of its own (its launch form, as Open
    edX's launch view writes it) and a Playwright route (its return endpoint)."""
    from playwright.sync_api import expect, sync_playwright

    async def tool_key() -> str:
        async with client(nb) as session, session.get("/lti/1.3/jwks") as resp:
            [jwk] = (await resp.json())["keys"]
        return jwt.PyJWK(jwk).key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    component = dataclasses.replace(lms.a, tool_key=asyncio.run(tool_key()), return_url=RETURN)
    started = component.deep_link_login(external_user_id=str(uuid.uuid4()), role="instructor",
                                        context_id=CONTEXT, resource_link_id=_block())

    async def launch_form(request: aiohttp.web.Request) -> aiohttp.web.Response:
        """Open edX's launch gate: the platform's answer, in a form it posts at once."""
        fields = "".join(f'<input type="hidden" name="{k}" value="{v}">'
                         for k, v in started.answer(request.path_qs).items())
        return aiohttp.web.Response(content_type="text/html", text=(
            f'<!doctype html><form id="f" method="post" action="{BASE}/lti/1.3/launch">'
            f'{fields}</form><script>document.getElementById("f").submit()</script>'))

    ca = nb.site.ca
    assert ca is not None
    login = urlsplit(started.login_url)
    lms_site = HttpsSite(ca.server_context(ca.issue(urlsplit(LMS).netloc)), launch_form)
    names = Names({**nb.site.names.names, urlsplit(LMS).netloc: lms_site.start()})
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright, names, ca.cert, tmp_path / "home")
        try:
            page = browser.new_context().new_page()
            page.route(RETURN, lambda route: route.fulfill(status=200, body="saved"))
            page.goto(f"{BASE}{login.path}?{login.query}")
            expect(page.get_by_role("heading")).to_have_text("Choose this component's notebook")
            for _ in range(8):
                page.keyboard.press("Tab")
                if page.evaluate("document.activeElement.textContent") == "Week 1: loops":
                    break
            with page.expect_request(RETURN) as posted:
                page.keyboard.press("Enter")
            form = parse_qs(posted.value.post_data or "")
        finally:
            browser.close()
    [item] = component.content_items(form["JWT"][0])  # Open edX's own check
    assert item["custom"] == {"notebook": "week1/loops.ipynb"}, item
