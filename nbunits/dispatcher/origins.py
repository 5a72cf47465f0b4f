"""Which origin a request came to, and which one a link sends the browser to.

With per-student origins (`[server] student_domain`, docs/admin.md, "Students' own
origins"), each student's server is at https://<user>.<student_domain>/nb/... and
nothing else is: a launch on the server's name redirects there (an absolute URL,
the scheme and port the browser used), and what a student's page asks of the
dispatcher there (their actions, the wake fallback, nginx's error pages) is
accepted only for that same student. Without it every URL stays a path on the
server's own name, as before.
"""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web

from nbunits.core.config import Server
from nbunits.core.names import host_user, origin, student_host

# What a student's own origin may ask of the dispatcher (nginx's student site):
# path prefixes, each followed by <course>/<user>/ (the page is nginx's own).
STUDENT_PATHS = ("/_nbunits/student/", "/_nbunits/wake/")
PAGES = "/_nbunits/page/"


def split_host(host: str) -> tuple[str, str]:
    """A Host header as (name in lower case, port or "")."""
    name, _, port = host.rpartition(":")
    if name and port.isdigit() and not name.endswith(":"):
        return name.lower(), port
    return host.lower(), ""


def host_name(host: str) -> str:
    """A Host header without its port."""
    return split_host(host)[0]


def scheme(request: web.Request) -> str:
    """The scheme the browser used: nginx says it (its TLS or a trusted proxy's)."""
    return request.headers.get("X-Forwarded-Proto", request.scheme)


def serves(server: Server, request: web.Request) -> bool:
    """Whether this request came to a name this server answers for that path: one of
    the server's names, or a student's own origin for that student's own paths."""
    name = host_name(request.host)
    if name in server.names or not server.names:
        return True
    user = host_user(name, server.student_domain)
    if user is None:
        return False
    path = request.path
    if path.startswith(PAGES):
        return True
    parts = path.split("/")
    return path.startswith(STUDENT_PATHS) and len(parts) > 4 and parts[4] == user


def notebook_location(server: Server, request: web.Request, user: str, path: str) -> str:
    """Where a launch sends the browser: the notebook's path, quoted; on the student's
    own origin (an absolute URL) when students have their own."""
    location = quote(path)
    if not server.student_domain:
        return location
    port = split_host(request.host)[1]
    return origin(scheme(request), student_host(user, server.student_domain), port) + location


def main_url(server: Server, request: web.Request, path: str) -> str:
    """A path of the server's own name (a shared page), for a page that may be on a
    student's own origin: absolute there, the path as it is otherwise."""
    name, port = split_host(request.host)
    if not server.student_domain or name in server.names or not server.names:
        return path
    return origin(scheme(request), server.names[0], port) + path
