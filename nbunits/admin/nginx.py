"""nginx: nbunits' configuration files, rendered from the [server] settings.

The files in nginx/ are real nginx configuration with a few @PLACEHOLDERS@ for
what differs between servers: the names browsers use, TLS, and the load balancers
whose word about the scheme and the client is believed. `nbunits install` writes
them and checks the result with `nginx -t`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from importlib import resources

from nbunits.core import i18n
from nbunits.core.config import Server
from nbunits.core.files import fill
from nbunits.core.pages import busy_html

CONF_D = "conf.d/nbunits.conf"
FRONT_CONF_D = "conf.d/nbunits-front.conf"  # a front (several hosts): instead of CONF_D
BASE = "snippets/nbunits-base.conf"
LOCATIONS = "snippets/nbunits-locations.conf"
PROXY = "snippets/nbunits-proxy.conf"
# Students' servers: on the server's name (one origin), or on their own origins.
STUDENTS = "snippets/nbunits-students.conf"
STUDENTS_ELSEWHERE = "snippets/nbunits-students-elsewhere.conf"
STUDENT_LOCATIONS = "snippets/nbunits-student-locations.conf"
SITE = "sites-enabled/nbunits"
STUDENT_SITE = "sites-enabled/nbunits-students"
REVOKED = "snippets/nbunits-revoked.map"  # capability.REVOKED_MAP
# Mozilla's "intermediate" profile: browsers of the last years, forward secrecy only.
TLS_SETTINGS = """\
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:\
ECDHE-RSA-CHACHA20-POLY1305;
    ssl_prefer_server_ciphers off;
    ssl_session_timeout 1d;
    ssl_session_cache shared:nbunits_tls:10m;
    # Locations set it again (an add_header there hides this one): see nbunits.conf.
    add_header Strict-Transport-Security $nbunits_hsts always;"""
# In every server block of nbunits (the default one too: nginx reads a request's
# headers with the default server's buffers until it knows the name).
HEADER_BUFFERS = """\
    # A student's page can set cookies with JavaScript for "/" or a parent domain
    # (nginx cannot stop it): Chromium then sends up to 180 of 4 KB, 737 KB in one
    # Cookie line. Such a request must not be a 400 (a "cookie bomb" would lock the
    # student out); nginx drops the header before any upstream (nbunits-proxy.conf).
    large_client_header_buffers 2 1m;"""


def template(name: str) -> str:
    return (resources.files("nbunits") / "data" / "nginx" / name).read_text()


def http_conf(server: Server, tls_listen: Sequence[str] = ()) -> str:
    proxies = "\n".join(f"    {proxy} 1;" for proxy in server.trusted_proxies)
    return fill(template("nbunits-http.conf"), {
        "TRUSTED_PROXIES": proxies or "    # none: no X-Forwarded-* header is believed",
        "HTTPS": https_target(server, tls_listen),
        "LAUNCH_RATE": str(server.launch_rate),
        "LAUNCH_BURST": str(server.launch_burst),
        "STUDENT_ORIGIN": student_origin_map(server),
        "BUSY_PAGE_MAP": busy_page_map(),
    })


def busy_page_map() -> str:
    """nginx's map to the page of a client over its launch rate: "<method>.<language>"
    for a language other than the default that the browser names first ("" : English).
    A map reads no weights: the first tag of Accept-Language decides."""
    lines = ['    default "";']
    for language, tag in _first_tags():
        lines.append(f'    "~*^(GET|HEAD): *{tag}([-_,;]|$)" "GET.{language}";')
        lines.append(f'    "~*^[A-Z]+: *{tag}([-_,;]|$)" "POST.{language}";')
    return "\n".join(lines)


def unavailable_map() -> str:
    """A front's map to the language of its page when no host answers ("": English)."""
    return "\n".join(['    default "";', *(f'    "~*^ *{tag}([-_,;]|$)" "{language}";'
                                             for language, tag in _first_tags())])


def _first_tags() -> list[tuple[str, str]]:
    """(language, its tag as a regular expression) for each language but the default."""
    return [(language, re.escape(language.lower())) for language in i18n.available()[1:]]


def _quoted(html: str) -> str:
    """`html` as an nginx single-quoted string."""
    return "'" + html.replace("\\", "\\\\").replace("'", "\\'") + "'"


def unavailable_pages() -> str:
    """A front's page when no host answers, one per language (core/pages.py)."""
    lines = [f'        if ($nbunits_front_language = "{language}") {{\n            return 503 '
             f'{_quoted(busy_html(language, 10, reload=True, kind="unavailable"))};\n        }}'
             for language, _ in _first_tags()]
    english = busy_html(i18n.DEFAULT, 10, reload=True, kind="unavailable")
    return "\n".join([*lines, f"        return 503 {_quoted(english)};"])


def busy_pages(retry_after: int) -> str:
    """The pages of @nbunits_busy, one per language and kind (core/pages.py), for
    nginx's single-quoted strings."""
    lines = []
    for language, _ in _first_tags():
        for kind, reload in (("GET", True), ("POST", False)):
            page = busy_html(language, retry_after, reload=reload, kind="launches")
            lines.append(f'    if ($nbunits_busy_page = "{kind}.{language}") {{\n'
                         f"        return 503 {_quoted(page)};\n    }}")
    english = {reload: _quoted(busy_html(i18n.DEFAULT, retry_after, reload=reload,
                                        kind="launches")) for reload in (True, False)}
    lines.append(f"    if ($request_method !~ ^(GET|HEAD)$) {{\n"
                 f"        return 503 {english[False]};\n    }}")
    lines.append(f"    return 503 {english[True]};")
    return "\n".join(lines)


def student_domain_re(server: Server) -> str:
    """The student domain in a regular expression (a DNS name: only dots to escape)."""
    return server.student_domain.replace(".", r"\.")


def student_hosts(server: Server) -> str:
    """Every student's host name, as nginx's server_name regex."""
    return f"~^nb[a-z2-7]{{16}}\\.{student_domain_re(server)}$"


def student_origin_map(server: Server) -> str:
    """$nbunits_wrong_origin's values: on one origin never; with per-student
    origins, unless the host is the path's own user's (a backreference)."""
    if not server.student_domain:
        return "    default 0;  # one origin: the server's names (server_name)"
    return (f'    default 1;\n    "~^(nb[a-z2-7]{{16}})\\.{student_domain_re(server)}/\\1$" 0;')


def https_target(server: Server, tls_listen: Sequence[str]) -> str:
    """Where plain HTTP is sent (quoted for a map): the same name, on the port nginx
    serves TLS on (a load balancer's TLS is taken to be on 443); "" without TLS."""
    return f'"https://$host{https_port(tls_listen)}"' if server.https else '""'


def https_port(tls_listen: Sequence[str]) -> str:
    """":PORT" for the first TLS `listen` address, "" for 443 (or none)."""
    if not tls_listen:
        return ""
    first = tls_listen[0].split()[0]
    port = first if first.isdigit() else (re.findall(r":([0-9]+)$", first) or ["443"])[0]
    return "" if port == "443" else f":{port}"


def real_ip(server: Server, indent: str = "") -> str:
    if server.trusted_proxies:
        lines = [*(f"set_real_ip_from {p};" for p in server.trusted_proxies),
                 f"real_ip_header {server.proxy_header};", "real_ip_recursive on;"]
    else:
        lines = ["# (no trusted proxy: the client is the peer that connected)"]
    return "\n".join(indent + line for line in lines)


def base_conf(server: Server) -> str:
    return fill(template("nbunits-base.conf"), {"REAL_IP": real_ip(server)})


def locations_conf(server: Server) -> str:
    students = STUDENTS_ELSEWHERE if server.student_domain else STUDENTS
    return fill(template("nbunits-locations.conf"), {
        "LAUNCH_BURST": str(server.launch_burst),
        # One launch more is allowed this many seconds later.
        "RETRY_AFTER": str(retry_after(server)),
        "BUSY_PAGES": busy_pages(retry_after(server)),
        "STUDENTS": f"include /etc/nginx/{students};"})


def retry_after(server: Server) -> int:
    """Seconds until a client over its launch rate may launch once more."""
    return max(1, -(-60 // server.launch_rate))


def students_elsewhere_conf(server: Server) -> str:
    """The server's name with per-student origins: old /nb/ links go there."""
    return fill(template("nbunits-students-elsewhere.conf"),
                {"STUDENT_DOMAIN": server.student_domain})


def snippets(server: Server) -> dict[str, str | None]:
    """nginx's snippets for this server (None: a file that must not be there)."""
    return {BASE: base_conf(server), LOCATIONS: locations_conf(server),
            PROXY: template("nbunits-proxy.conf"),
            STUDENTS: template("nbunits-students.conf"),
            STUDENT_LOCATIONS: template("nbunits-student-locations.conf"),
            STUDENTS_ELSEWHERE: students_elsewhere_conf(server) if server.student_domain
            else None}


def site_conf(server: Server, listen: Sequence[str], tls_listen: Sequence[str]) -> str:
    """The complete site: plain HTTP on `listen`, TLS on `tls_listen` (with a
    certificate), and a default server answering 421 for any other name."""
    return fill(template("nbunits-site.conf"), _site_values(server, listen, tls_listen))


def student_site_conf(server: Server, listen: Sequence[str], tls_listen: Sequence[str]
                      ) -> str:
    """Students' own origins: every <user>.<student_domain>, on the same addresses
    and with the same certificate as the server's site."""
    values = _site_values(server, listen, tls_listen)
    return fill(template("nbunits-student-site.conf"), {
        "LISTEN": values["LISTEN"], "TLS": values["TLS"],
        "HEADER_BUFFERS": HEADER_BUFFERS, "STUDENT_HOSTS": student_hosts(server)})


def front_conf(server: Server, tls_listen: Sequence[str] = ()) -> str:
    """A front's http-level settings: the hosts, hashed by student (docs/admin.md,
    "Beyond one host"), and the same scheme and log maps as a host's."""
    proxies = "\n".join(f"    {proxy} 1;" for proxy in server.trusted_proxies)
    # A host that fails to connect is skipped for 10 s (then tried again).
    hosts = "\n".join(f"    server {host} max_fails=1 fail_timeout=10s;"
                      for host in server.hosts)
    return fill(template("nbunits-front.conf"), {
        "TRUSTED_PROXIES": proxies or "    # none: no X-Forwarded-* header is believed",
        "HTTPS": https_target(server, tls_listen),
        "HOSTS": hosts, "UNAVAILABLE_MAP": unavailable_map()})


def front_site_conf(server: Server, listen: Sequence[str], tls_listen: Sequence[str]) -> str:
    """A front's site: as a host's (names, TLS, 421 for other names), every path
    passed to the student's host."""
    return fill(template("nbunits-front-site.conf"), {
        **_site_values(server, listen, tls_listen), "REAL_IP": real_ip(server, "    "),
        "UNAVAILABLE_PAGES": unavailable_pages()})


def _site_values(server: Server, listen: Sequence[str], tls_listen: Sequence[str]
                 ) -> dict[str, str]:
    plain = [f"    listen {address};" for address in listen]
    secure = [f"    listen {address} ssl;" for address in tls_listen]
    default = [f"{line[:-1]} default_server;" for line in plain + secure]
    tls = ""
    if server.tls_cert:
        tls = (f"    ssl_certificate {server.tls_cert};\n"
               f"    ssl_certificate_key {server.tls_key};\n{TLS_SETTINGS}")
    # A front passes students' own origins on to the hosts, whose nginx checks them.
    names = [*server.names, f'"{student_hosts(server)}"'] if server.student_domain and \
        server.hosts else server.names
    return {"LISTEN_DEFAULT": "\n".join(default), "LISTEN": "\n".join(plain + secure),
            "SERVER_NAMES": " ".join(names), "TLS": tls, "HEADER_BUFFERS": HEADER_BUFFERS}
