"""The oracle of the raw-path fuzz test (test_fuzz.py): what nginx and nbunits must
answer to any path under /nb/, /staff/ and /_nbunits/, computed from the request
alone, as docs/security.md and nginx's documented behaviour say.

nginx routes by the normalized path ($uri: percent-decoded, "//" merged, "." and
".." resolved; a NUL byte, a bad escape or ".." above the root: 400) and answers
itself for what it refuses; the refusal's page comes from the dispatcher, with
nginx's status. The rules, as the README and docs/security.md give them:

- a path nginx cannot normalize: 400; then, a name this server does not serve: 421;
- /nb/<course>/<user>/<capability>/...: the student's server if the capability is
  theirs (the grants), else nginx's 403 (its page: nothing reached a student's
  server); anything else under /nb/: 403;
- /_nbunits/wake/ and /_nbunits/page/ are internal: 404; actions under
  /_nbunits/student/ are POSTs: 403 to a GET;
- /staff/<course>/<user>/<notebook>?expires=&sig=: 200 for exactly a link the
  admin was given, else 400, 403 or 404;
- a prefix location's name without its slash: nginx's 301 to it, on this server;
- anything else: 404.
The student's own server answers as Jupyter does (any status but a server error;
its redirects stay in the student's own prefix, on this server) or, stopped, is
woken: a 307 back to exactly the URI asked for (RFC 3986's equivalence: aiohttp
decodes escaped unreserved characters), if it is plainly under the prefix, or a
503 to retry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, unquote_to_bytes, urlsplit

import yarl

from nbunits.core.names import CAPABILITY_RE, COURSE_RE, USER_RE

from .conftest import SERVER
from .fuzzing import Answer, sent_url

# nginx's locations that pass on to a program and end in "/": their name without
# it is redirected there (internal ones are not: 404).
PROXIED = ("/ipythonExercice/", "/staff/", "/lti/", "/shared/")
INTERNAL = ("/_nbunits/page/", "/_nbunits/wake/")
NB_RE = re.compile(rf"/nb/({COURSE_RE.pattern})/({USER_RE.pattern})/({CAPABILITY_RE.pattern})/")
ACTION_RE = re.compile(rf"/_nbunits/student/{COURSE_RE.pattern}/{USER_RE.pattern}/"
                       rf"{CAPABILITY_RE.pattern}/(?:info|reset|share|unshare)")
HANDOFF_RE = re.compile(rf"/_nbunits/handoff/{COURSE_RE.pattern}/{USER_RE.pattern}")


# What nginx's refusals show (its error_page, served by the dispatcher): a page
# written for students; for a name the dispatcher does not serve, its own 421 page
# (with nginx's status).
NGINX_PAGES = {403: b"This link does not work (any more).",
               404: b"There is nothing at this address."}
WRONG_ADDRESS = b"<title>Wrong address</title>"


@dataclass(frozen=True)
class Expect:
    """`kind`: "status" (exactly `status`), "nginx" (nginx refused: exactly `status`
    and its page: nothing reached a student's server), "redirect" (exactly `status`
    to `location`), "staff-refused" (400, 403 or 404), "own" (the student's server:
    `location` is its prefix), "refused-host" (421 from the dispatcher)."""

    kind: str
    status: int = 0
    location: str = ""
    host: str = ""


@dataclass(frozen=True)
class Grants:
    """What the test gave out: the students' capabilities and one staff link."""

    servers: dict[tuple[str, str, str], str]  # (course, user, capability): whose
    staff_path: str  # /staff/<course>/<user>/<notebook>
    staff_query: str  # expires=...&sig=...


def nginx_uri(raw_path: str) -> str | None:
    """$uri as nginx makes it from the path sent (as latin-1 text); None: 400."""
    try:
        decoded = unquote_to_bytes(raw_path)
    except ValueError:
        return None
    if b"\0" in decoded or re.search(r"%(?![0-9A-Fa-f]{2})", raw_path):
        return None
    segments: list[bytes] = []
    parts = decoded.split(b"/")[1:]
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == b"..":
            if not segments:
                return None  # above the root
            segments.pop()
            if last:
                segments.append(b"")
        elif part == b"." or (part == b"" and not last):
            if last:
                segments.append(b"")
        else:
            segments.append(part)
    return "/" + b"/".join(segments).decode("latin-1")


def nginx_host(host: str) -> str:
    """The server name nginx matches a Host against: lower case, no port, no final dot."""
    return host.lower().split(":", 1)[0].rstrip(".")


def dispatcher_serves(host: str) -> bool:
    """The dispatcher's own check of Host (a port of digits allowed)."""
    name, _, port = host.rpartition(":")
    return (name if name and port.isdigit() else host).lower() == SERVER


def expect(path: str, host: str, grants: Grants) -> Expect:
    url = sent_url(path)
    uri = nginx_uri(url.raw_path)
    if uri is None:  # before nginx chooses a server
        return Expect("status", 400)
    if nginx_host(host) != SERVER:
        return Expect("status", 421)
    if m := NB_RE.match(uri):
        if (m[1], m[2], m[3]) in grants.servers:
            return Expect("own", location=f"/nb/{m[1]}/{m[2]}/{m[3]}/")
        return Expect("nginx", 403, host=host)
    if ACTION_RE.fullmatch(uri):
        return Expect("nginx", 403, host=host)
    if HANDOFF_RE.fullmatch(uri):  # one host: no hand-offs
        return Expect("status", 404) if dispatcher_serves(host) else Expect("refused-host", 421)
    if uri + "/" in PROXIED:
        query = f"?{url.raw_query_string}" if url.raw_query_string else ""
        return Expect("redirect", 301, f"https://{SERVER}{uri}/{query}")
    if uri.startswith("/staff/"):
        if not dispatcher_serves(host):
            return Expect("refused-host", 421)
        return staff(url, grants)
    if uri.startswith("/nb/"):
        return Expect("nginx", 403, host=host)
    if uri.startswith(PROXIED):
        raise AssertionError(f"no oracle for {uri}: the generator does not make these")
    return Expect("nginx", 404, host=host)  # INTERNAL, and what nbunits does not serve


def staff(url: yarl.URL, grants: Grants) -> Expect:
    """The dispatcher's view: the path's segments decoded, the query's parameters."""
    segments = [unquote(s) for s in url.raw_path.split("/")[1:]]
    course, user, *notebook = segments[1:] if len(segments) > 3 else ["", ""]
    wanted = yarl.URL(f"?{grants.staff_query}").query
    asked = url.query
    if f"/staff/{course}/{user}/{'/'.join(notebook)}" == grants.staff_path and all(
            asked.getall(k, []) == [v] for k, v in wanted.items()):
        return Expect("status", 200)
    return Expect("staff-refused")


def wake_return(raw: str, prefix: str) -> bool:
    """Whether the wake may send the browser back to `raw`: plainly under the verified
    prefix (docs/security.md): no dot segments, doubled or encoded slashes or
    control characters once decoded, not overlong."""
    path = raw.partition("?")[0]
    try:
        decoded = unquote(path, errors="strict")
    except UnicodeDecodeError:
        return False
    if len(raw) > 4000 or not (raw.startswith(prefix) and decoded.startswith(prefix)):
        return False
    segments = decoded[len(prefix):].split("/")
    return not (any(s in (".", "..") for s in segments) or "" in segments[:-1]
                or any(ord(c) < 0x20 or c == "\x7f" for c in decoded))


def normal(uri: str) -> str:
    """A URI with its percent-encoded unreserved characters decoded, other escapes
    in upper case: equivalent URIs (RFC 3986, 6.2.2) are equal."""
    def one(m: re.Match[str]) -> str:
        char = chr(int(m[1], 16))
        return char if char.isascii() and (char.isalnum() or char in "-._~") else m[0].upper()
    return re.sub(r"%([0-9A-Fa-f]{2})", one, uri)


def judge(path: str, expected: Expect, got: Answer) -> str:
    if expected.kind == "status":
        ok = got.status == expected.status and not got.location
    elif expected.kind == "nginx":
        page = NGINX_PAGES[expected.status] if dispatcher_serves(expected.host) else WRONG_ADDRESS
        ok = got.status == expected.status and not got.location and page in got.body
    elif expected.kind == "redirect":
        ok = got.status == expected.status and got.location == expected.location
    elif expected.kind == "staff-refused":
        ok = got.status in (400, 403, 404) and not got.location
    elif expected.kind == "refused-host":
        ok = got.status == 421 and not got.location
    else:
        return own(path, expected.location, got)
    return "" if ok else f"expected {expected}, got {got.status} {got.location or got.body[:120]!r}"


def own(path: str, prefix: str, got: Answer) -> str:
    """The student's own server, or its wake."""
    sent = str(sent_url(path).raw_path_qs)
    if got.status == 307:
        if not wake_return(sent, prefix) or normal(got.location) != normal(sent):
            return f"woken, then sent to {got.location!r} (asked {sent!r})"
        return ""
    if got.status == 503:
        return "" if dict(got.headers).get("Retry-After") else "a 503 without Retry-After"
    jupyters_500 = got.status == 500 and got.body.startswith(b'{"message": "Unhandled error"')
    if (got.status >= 500 and not jupyters_500) or b"Traceback" in got.body:
        return f"{got.status}: {got.body[:200]!r}"
    if got.location:
        target = urlsplit(str(sent_url(path).join(yarl.URL(got.location, encoded=True))))
        if (target.scheme, target.netloc) != ("https", SERVER) or \
                not (target.path + "/").startswith(prefix):
            return f"Jupyter redirected out of the student's prefix: {got.location}"
    return ""
