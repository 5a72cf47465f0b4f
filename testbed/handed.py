"""Every secret handed out in a test session, and every log of every box, for the
log-leak test (tests/integration/test_logs.py, which runs last).

The session folder ($NBUNITS_TEST_SESSION, set by the tests' conftest; nothing is
recorded without it) holds:

    secrets.txt     one "KIND VALUE" a line, appended as secrets are seen
    boxes/NAME-N/   for each box, as it is shut down (or before a power cut):
                    journal.txt (journalctl --namespace=* -o verbose), nginx.txt (its logs),
                    secrets.txt (the box's own: keys, current capabilities)

Secrets are seen where the tests receive or send them: every HTTP exchange of the
tests' aiohttp clients (`trace_config`: Site.session, multihost's sessions) and of
their Chromium (`observe_browser`: testbed/sites.py), and the admin commands'
output (`scan_text`), so a capability revoked, a student deleted, a share withdrawn
or a box gone still counts:

- capabilities, share tokens, hand-off tokens, staff and legacy link signatures,
  in what nbunits answers (Location, bodies) and in what the tests send back;
- the LMS's ids of those who launched: of course links and LTI launches that
  opened a notebook or a staff view (LTI 1.1 user_id and custom_student, LTI 1.3
  sub, the custom student and the 1.1 migration claim's user_id).
"""

from __future__ import annotations

import ast
import base64
import binascii
import json
import os
import re
import threading
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl, unquote

import aiohttp

SESSION_ENV = "NBUNITS_TEST_SESSION"

CAPABILITY = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{22}\.[0-9]{1,9}\.[0-9]{1,11}(?![0-9])")
SIGNATURE = re.compile(r"(?:\bsig=|\"sig\": ?\")([0-9a-f]{64})(?![0-9a-f])")
SHARE = re.compile(r"/shared/([A-Za-z0-9_-]{32})(?![A-Za-z0-9_-])")
HANDOFF = re.compile(r"[?&]t=([A-Za-z0-9_-]{1,6000}\.[A-Za-z0-9_-]{43})(?![A-Za-z0-9_-])")
COURSE_LINK = re.compile(r"/ipythonExercice/[^/?]+/(?:[^?]+/)?([^/?]+)(?:\?|$)")
STUDENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+=-]{0,254}")
# Shorter ids cannot be looked for in logs without matching anything.
MIN_ID = 8
LTI_ID_FIELDS = ("user_id", "custom_student", "custom_custom_student")

_lock = threading.Lock()


def session() -> Path | None:
    folder = os.environ.get(SESSION_ENV)
    return Path(folder) if folder else None


def record(kind: str, values: Iterable[str]) -> None:
    folder = session()
    lines = "".join(f"{kind} {v}\n" for v in values if v and "\n" not in v and " " not in v)
    if folder is None or not lines:
        return
    with _lock, open(folder / "secrets.txt", "a") as out:
        out.write(lines)


def recorded() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    folder = session()
    if folder is None or not (folder / "secrets.txt").exists():
        return found
    for line in (folder / "secrets.txt").read_text().splitlines():
        kind, _, value = line.partition(" ")
        found.setdefault(kind, set()).add(value)
    return found


def product_constants(package: Path) -> set[str]:
    """The string constants of nbunits' own code (the package folder's modules).

    Hypothesis draws generated text from the constants of the local modules it finds
    loaded, so the fuzz tests send some as students' ids (a course link for the student
    "images.json" is valid), and a log that names the product's own file or word is no
    leak of that id. (The tests' own ids are constants of the tests: still looked for.)"""
    return {node.value for source in package.rglob("*.py")
            for node in ast.walk(ast.parse(source.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)}


def scan_text(text: str) -> None:
    """What nbunits hands out in text (a Location, a page, a command's output)."""
    record("capability", CAPABILITY.findall(text))
    record("signature", SIGNATURE.findall(text))
    record("share", SHARE.findall(text))
    record("handoff", HANDOFF.findall(text))


def student_id(text: str) -> list[str]:
    return [text] if len(text) >= MIN_ID and STUDENT_ID.fullmatch(text) else []


def scan_request(url: str, body: bytes, status: int, location: str) -> None:
    """What the tests send: capabilities and signatures back; the LMS ids of those
    who launched (a course link or an LTI launch that opened, or showed staff, a
    notebook: ids of hostile requests that nbunits refused are no one's)."""
    scan_text(unquote(url))
    if m := COURSE_LINK.search(url):
        # A hostile link may carry an id where a course or notebook goes: nbunits may
        # quote it as one (an unknown course), which says nothing of whose it is.
        path = unquote(url.split("?", 1)[0][m.start():m.start(1)])
        record("elsewhere", [i for part in path.split("/") for i in student_id(part)])
    if not ((status in (302, 303) and re.search(r"/(?:nb|staff|_nbunits/handoff)/", location))
            or status == 200):
        return
    if m:
        record("student", student_id(unquote(m[1])))
    if not body or len(body) > 100_000 or "/lti/" not in url:
        return
    try:
        form = dict(parse_qsl(body.decode(), keep_blank_values=True))
    except (UnicodeDecodeError, ValueError):
        return
    record("student", [i for f in LTI_ID_FIELDS for i in student_id(form.get(f, ""))])
    claims = _unverified_claims(form.get("id_token", ""))
    migration = claims.get("https://purl.imsglobal.org/spec/lti/claim/lti1p1")
    custom = claims.get("https://purl.imsglobal.org/spec/lti/claim/custom")
    record("student", [i for value in (
        claims.get("sub"), migration.get("user_id") if isinstance(migration, dict) else "",
        custom.get("student") if isinstance(custom, dict) else "")
        if isinstance(value, str) for i in student_id(value)])


def _unverified_claims(token: str) -> dict[str, Any]:
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error, UnicodeDecodeError):
        return {}
    return claims if isinstance(claims, dict) else {}


def trace_config() -> aiohttp.TraceConfig:
    """Hooks for an aiohttp session: every exchange is scanned (see the docstring)."""
    config = aiohttp.TraceConfig()

    async def chunk_sent(_: Any, context: SimpleNamespace,
                         params: aiohttp.TraceRequestChunkSentParams) -> None:
        context.body = getattr(context, "body", b"") + params.chunk

    async def request_end(_: Any, context: SimpleNamespace,
                          params: aiohttp.TraceRequestEndParams) -> None:
        location = params.response.headers.get("Location", "")
        scan_request(str(params.url), getattr(context, "body", b""), params.response.status,
                     location)
        scan_text(location)

    async def body_chunk(_: Any, context: SimpleNamespace,
                         params: aiohttp.TraceResponseChunkReceivedParams) -> None:
        scan_text(params.chunk.decode("utf-8", "replace"))

    config.on_request_chunk_sent.append(chunk_sent)
    config.on_request_end.append(request_end)
    config.on_response_chunk_received.append(body_chunk)
    return config


def observe_browser(context: Any) -> Any:
    """A Playwright browser context whose every response is scanned as the aiohttp
    sessions' are (Chromium follows the redirects that hand out capabilities)."""
    def response(resp: Any) -> None:
        location = resp.headers.get("location", "")
        body = resp.request.post_data_buffer or b""
        scan_request(resp.url, body, resp.status, location)
        scan_text(location)

    context.on("response", response)
    return context


# What of a box is kept for the log-leak test, from the box itself.
BOX_SECRETS = ("/etc/nbunits/capability.secret", "/etc/nbunits/hosts.secret",
               "/etc/nbunits/secrets/*.toml", "/var/lib/nbunits/tokens/*/*.env",
               "/etc/nginx/snippets/nbunits-secret.conf")
_saved = 0


def save_box(box: Any) -> None:
    """Keep a booted box's logs and secrets in the session folder (SystemdBox calls
    it before every shutdown or power cut: testbed/harness.py, on_shutdown)."""
    global _saved
    folder = session()
    if folder is None or not box.booted or getattr(box, "saved_for_session", False):
        return
    box.saved_for_session = True  # once: test_logs.py saves the session box early
    with _lock:
        _saved += 1
        dest = folder / "boxes" / f"{box.name}-{_saved}"
    dest.mkdir(parents=True)
    # Every namespace: the system journal and the students' (their containers' output).
    journal = box.nsenter("journalctl", "--namespace=*", "--no-pager", "-o", "verbose",
                          check=False, timeout=600)
    (dest / "journal.txt").write_text(journal.stdout)
    nginx = box.nsenter("sh", "-c", "cat /var/log/nginx/*.log 2>/dev/null; true", check=False)
    (dest / "nginx.txt").write_text(nginx.stdout)
    own = box.nsenter("sh", "-c", f"cat {' '.join(BOX_SECRETS)} 2>/dev/null; true", check=False)
    (dest / "secrets.txt").write_text(own.stdout)
