"""nginx's files rendered from the [server] settings, and those settings' checks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomli_w

from nbunits.admin import nginx
from nbunits.core.config import ConfigError, Server, load_settings, server_to_toml
from nbunits.core.names import loggable_path


def test_without_a_proxy_no_forwarded_header_is_believed() -> None:
    server = Server(names=("notebooks.example.org",))
    http = nginx.http_conf(server)
    assert "default 0;" in http and " 1;" not in http.split("geo")[1].split("}")[0]
    assert 'http    "";' in http  # no TLS: plain HTTP is served, not redirected
    assert "set_real_ip_from" not in nginx.base_conf(server)


def test_trusted_proxies_are_the_only_ones_believed() -> None:
    server = Server(names=("a.example.org",), trusted_proxies=("10.0.0.5", "192.0.2.0/24"),
                    proxy_header="X-Real-IP")
    http = nginx.http_conf(server)
    assert "    10.0.0.5 1;" in http and "    192.0.2.0/24 1;" in http
    # TLS ends at the balancer: plain HTTP redirects to the same name on 443.
    assert 'http    "https://$host";' in http
    locations = nginx.base_conf(server)
    assert "set_real_ip_from 10.0.0.5;" in locations and "real_ip_header X-Real-IP;" in locations


@pytest.mark.parametrize(("tls_listen", "target"), [
    (["443"], "https://$host"), (["[::]:443", "8443"], "https://$host"),
    (["8443"], "https://$host:8443"), (["127.0.0.1:8443 reuseport"], "https://$host:8443"),
    (["[::1]:9443"], "https://$host:9443")])
def test_plain_http_redirects_to_the_port_tls_is_served_on(tls_listen: list[str],
                                                           target: str) -> None:
    server = Server(names=("a.example.org",), tls_cert="/etc/c.pem", tls_key="/etc/c.key")
    assert f'http    "{target}";' in nginx.http_conf(server, tls_listen)
    assert "return 301 $nbunits_to_https$request_uri;" in nginx.base_conf(server)


def test_the_site_serves_its_names_and_answers_others_421() -> None:
    server = Server(names=("a.example.org", "b.example.org"), tls_cert="/etc/c.pem",
                    tls_key="/etc/c.key")
    site = nginx.site_conf(server, ["80"], ["443"])
    default, named = site.split("server {")[1:]
    assert "listen 80 default_server;" in default and "listen 443 ssl default_server;" in default
    assert "return 421" in default
    assert "server_name a.example.org b.example.org;" in named
    assert "listen 443 ssl;" in named and "ssl_certificate /etc/c.pem;" in named
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in named


@pytest.mark.parametrize("bad", [
    {"names": ("notebooks.example.org;",)}, {"names": ("-x.org",)}, {"names": ("a b",)},
    {"names": ("x" * 64 + ".org",)}, {"trusted_proxies": ("10.0.0.5; allow all",)},
    {"tls_cert": "/c.pem"}, {"tls_cert": "c.pem", "tls_key": "c.key"},
    {"proxy_header": "X-Forwarded-For; evil"},
    {"student_domain": "nb.example.org; return 200"}, {"student_domain": "*.example.org"},
    {"student_domain": "Nb.example.org"}, {"student_domain": "x" * 60 + ("." + "x" * 60) * 3},
])
def test_server_settings_that_would_inject_or_not_work_are_refused(bad: dict) -> None:
    with pytest.raises(ConfigError):
        Server(**bad)


def test_server_settings_round_trip_through_nbunits_toml(tmp_path: Path) -> None:
    server = Server(names=("a.example.org",), trusted_proxies=("10.0.0.0/8",))
    path = tmp_path / "nbunits.toml"
    path.write_text(tomli_w.dumps(server_to_toml(server)))
    assert load_settings(path).server == server
    path.write_text('[server]\nnames = "a.example.org"\n')
    with pytest.raises(ConfigError, match="wrong type"):
        load_settings(path)


SPLIT = Server(names=("notebooks.example.org",), student_domain="nb.example.org",
               tls_cert="/etc/c.pem", tls_key="/etc/c.key")
USER = "nb" + "b" * 16


def _map_entries(text: str, first: str) -> list[tuple[str, str]]:
    """A map's regex entries (pattern as Python's re reads it, value)."""
    block = text.split(first)[1].split("\n}")[0]
    entries = re.findall(r'^\s*"~(.*?)"\s+(\S.*?);', block, re.M)
    return [(pattern.replace("(?<", "(?P<"), value) for pattern, value in entries]


def test_with_per_student_origins_each_student_is_served_on_their_own_host_only() -> None:
    site = nginx.student_site_conf(SPLIT, ["80"], ["443"])
    hosts = re.search(r'server_name "~(.*)";', site)
    assert hosts is not None and "include /etc/nginx/snippets/nbunits-student-locations.conf;" in site
    assert "ssl_certificate /etc/c.pem;" in site and "listen 443 ssl;" in site
    for host, served in ((f"{USER}.nb.example.org", True), ("nb.example.org", False),
                         (f"{USER}.nb.example.org.evil.org", False), (f"{USER}xnb.example.org", False),
                         (f"x.{USER}.nb.example.org", False), (f"{USER}.nbxexample.org", False)):
        assert bool(re.fullmatch(hosts.group(1), host)) is served, host
    # The path's user must be the host's (a backreference): else 404.
    [(pattern, value)] = _map_entries(nginx.http_conf(SPLIT), "$nbunits_wrong_origin {")
    assert value == "0" and "default 1;" in nginx.http_conf(SPLIT)
    assert re.fullmatch(pattern, f"{USER}.nb.example.org/{USER}")
    assert not re.fullmatch(pattern, f"{USER}.nb.example.org/nb{'c' * 16}")
    assert not re.fullmatch(pattern, f"notebooks.example.org/{USER}")
    # The server's name serves no student: old links go to the student's host.
    locations = nginx.locations_conf(SPLIT)
    assert "include /etc/nginx/snippets/nbunits-students-elsewhere.conf;" in locations
    assert "nbunits-students.conf" not in locations
    elsewhere = nginx.snippets(SPLIT)[nginx.STUDENTS_ELSEWHERE] or ""
    assert "return 307 $nbunits_scheme://$nbunits_moved_user.nb.example.org$nbunits_port" in elsewhere


def test_on_one_origin_students_are_served_on_the_server_s_names() -> None:
    server = Server(names=("notebooks.example.org",))
    assert "include /etc/nginx/snippets/nbunits-students.conf;" in nginx.locations_conf(server)
    assert nginx.snippets(server)[nginx.STUDENTS_ELSEWHERE] is None
    assert "$nbunits_wrong_origin {\n    default 0;" in nginx.http_conf(server)
    assert _map_entries(nginx.http_conf(server), "$nbunits_wrong_origin {") == []


def test_every_server_block_takes_a_cookie_bomb_and_no_upstream_gets_a_cookie() -> None:
    sites = (nginx.site_conf(SPLIT, ["80"], ["443"]), nginx.student_site_conf(SPLIT, ["80"], []),
             nginx.front_site_conf(Server(names=("a.example.org",), hosts=("10.0.0.1",)),
                                   ["80"], []))
    for site in sites:
        for block in site.split("server {")[1:]:
            assert "large_client_header_buffers 2 1m;" in block
    assert 'proxy_set_header Cookie "";' in nginx.template("nbunits-proxy.conf")


def test_a_front_passes_students_own_origins_on() -> None:
    front = Server(names=("notebooks.example.org",), student_domain="nb.example.org",
                   hosts=("10.0.0.1",))
    assert 'server_name notebooks.example.org "~^nb[a-z2-7]{16}\\.nb\\.example\\.org$";' in \
        nginx.front_site_conf(front, ["80"], [])


def test_the_access_log_cuts_paths_as_the_dispatcher_s_lines_do() -> None:
    """nginx's $nbunits_log_uri and names.loggable_path: the same rules, in order."""
    entries = _map_entries(nginx.http_conf(Server()), "map $uri $nbunits_log_uri {")

    def nginx_log(path: str) -> str:
        for pattern, value in entries:
            found = re.match(pattern, path)
            if found:
                return path if value == "$uri" else found.expand(
                    value.strip('"').replace("${", "\\g<").replace("}", ">"))
        return path

    cap = "A" * 22 + ".0.9999999999"
    samples = {
        f"/nb/demo/{USER}/{cap}/tree": f"/nb/demo/{USER}/[capability]",
        f"/nb/demo/{USER}/x/tree": f"/nb/demo/{USER}/[capability]", "/nb/demo": "/nb/[capability]",
        f"/_nbunits/student/demo/{USER}/{cap}/info": f"/_nbunits/student/demo/{USER}/[capability]",
        f"/_nbunits/student/demo/{USER}/oops/info": f"/_nbunits/student/demo/{USER}/[capability]",
        f"/_nbunits/wake/demo/{USER}/{cap}": f"/_nbunits/wake/demo/{USER}/[capability]",
        "/ipythonExercice/demo/w1/a.ipynb/s1d": "/ipythonExercice/demo/[student]",
        "/ipythonExercice/s1d": "/ipythonExercice/[student]", "/shared/" + "t" * 32: "/shared/[token]",
        "/shared/": "/shared/[token]", "/lti/1.3/login": "/lti/1.3/login",
        f"/staff/demo/{USER}/a.ipynb": f"/staff/demo/{USER}/a.ipynb",
        f"/_nbunits/handoff/demo/{USER}": f"/_nbunits/handoff/demo/{USER}",
        "/_nbunits/page/not-found": "/_nbunits/page/not-found", "/_nbunits/health": "/_nbunits/health",
        "/x/s1d": "/x/[...]", "/x/\ns1d": "/x/[...]", "/_nbunits/healthy/s1d": "/_nbunits/[...]",
        "/favicon.ico": "/[...]", "/": "/", f"/a{cap}": "/a[capability]",
        "/" + "a" * 255: "/[...]", "/s1d\nx": "/[...]",  # an id typed after the host name
    }
    for path, logged in samples.items():
        assert (nginx_log(path), loggable_path(path)) == (logged, logged), path


def test_a_location_with_pages_of_its_own_keeps_the_servers_403_and_404_pages():
    """An error_page in a location replaces every one it would inherit: such a location
    repeats the server's 403 and 404 pages, or a refusal there is a bare page whose
    path goes to the access log as sent (student ids, capabilities)."""
    for name in ("nbunits-locations.conf", "nbunits-students.conf"):
        text = nginx.template(name)
        for block in re.findall(r"\nlocation [^\n]*\{\n(.*?)\n\}", text, flags=re.S):
            if "error_page" in block:
                assert "error_page 403 /_nbunits/page/bad-link;" in block, (name, block[:200])
                assert "error_page 404 /_nbunits/page/not-found;" in block, (name, block[:200])
