"""Hardening that must not regress: systemd's exposure scores, nginx's config.

Exposure: `systemd-analyze security` rates each unit nbunits installs (templates as
an instance for a real provisioned student). units/security-exposure.json records
the scores; a unit whose score goes up fails the test. After hardening a unit
further, record the new (lower) scores with

    NBUNITS_UPDATE_EXPOSURE=1 scripts/test -k exposure

nginx: gixy-ng (an nginx config analyzer) runs over the installed config, copied
out of the box; any issue fails unless it is listed in GIXY_ACCEPTED with a reason.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets

import pytest

from testbed.browser import Opened, open_exercise
from testbed.harness import SystemdBox

from .conftest import REPO, Nbunits, client

RECORD = REPO / "units" / "security-exposure.json"
SCORE_RE = re.compile(r"Overall exposure level for \S+: (\d+\.\d+)")


@pytest.fixture(scope="module")
def opened(nb: Nbunits) -> Opened:
    """A provisioned student of the demo course whose units have been running."""

    async def launch() -> Opened:
        async with client(nb) as session:
            return await open_exercise(session, "demo", "welcome.ipynb", secrets.token_hex(16))

    return asyncio.run(launch())


@pytest.fixture(scope="module")
def student(opened: Opened) -> str:
    return opened.user


def exposure(nb: Nbunits, unit: str) -> float:
    out = nb.box.run("systemd-analyze", "security", "--no-pager", unit, check=False).stdout
    if os.environ.get("NBUNITS_UPDATE_EXPOSURE") == "1":  # what is left to harden
        print(unit, *(line for line in out.splitlines() if "✗" in line), sep="\n  ")
    match = SCORE_RE.search(out)
    assert match, f"systemd-analyze security {unit}: no score in\n{out[-2000:]}"
    return float(match.group(1))


def installed_units(user: str) -> dict[str, str]:
    """The name in units/ of each unit nbunits installs -> a unit to rate."""
    return {
        "nbunits-dispatcher.service": "nbunits-dispatcher.service",
        "nbunits-helper.service": "nbunits-helper.service",
        "nbunits-unload.service": "nbunits-unload.service",
        "nbunits-listen.service": "nbunits-listen.service",
        "course/nbunits-@COURSE@@.service": f"nbunits-demo@{user}.service",
        "course/nbunits-@COURSE@-proxy@.service": f"nbunits-demo-proxy@{user}.service",
        "course/nbunits-@COURSE@-grade@.service": f"nbunits-demo-grade@{user}.service",
        "nbunits-metrics.service": "nbunits-metrics.service",
        "nbunits-course-end.service": "nbunits-course-end.service",
        "nbunits-scores.service": "nbunits-scores.service",
        "nbunits-roster@.service": "nbunits-roster@exposure.service",
    }


def test_exposure_scores_do_not_get_worse(nb: Nbunits, student: str) -> None:
    scores = {name: exposure(nb, unit) for name, unit in installed_units(student).items()}
    if os.environ.get("NBUNITS_UPDATE_EXPOSURE") == "1":
        RECORD.write_text(json.dumps(scores, indent=2, sort_keys=True) + "\n")
    recorded = json.loads(RECORD.read_text())
    worse = {name: (recorded.get(name), score) for name, score in scores.items()
             if name not in recorded or score > recorded[name]}
    assert not worse, (
        f"exposure got worse (unit: (recorded, now)): {worse}. Harden the unit back, or, "
        f"if the new setting is really needed, record the new scores with "
        f"NBUNITS_UPDATE_EXPOSURE=1 scripts/test -k exposure and say why in the commit."
    )


# Issues gixy may report, as (check, file, text of the pseudo config), each with
# its reason. Nothing else is accepted.
GIXY_ACCEPTED = [
    # Debian's own nginx.conf: its http-level TLS defaults (TLSv1/1.1 allowed, server
    # cipher order) and worker limits. nbunits' own TLS server sets its protocols and
    # ciphers itself (sites-enabled/nbunits) and does not edit the admin's file.
    ("weak_ssl_tls", "/etc/nginx/nginx.conf", ""),
    ("worker_rlimit_nofile_vs_connections", "/etc/nginx/nginx.conf", ""),
    # Upstreams get the Host the browser sent, port included: an LTI 1.1 signature
    # covers the URL the LMS posted to, and Jupyter compares a websocket's Origin
    # with Host. It only reaches them once nginx matched it against server_name
    # (others get the default server's 421), and Jupyter checks it again
    # (local_hostnames); test_names.py sends the spoofed ones.
    ("host_spoofing", "/etc/nginx/snippets/nbunits-proxy.conf", "proxy_set_header Host $http_host"),
]


def accepted(issue: dict[str, str]) -> bool:
    return any(issue["plugin"] == plugin and issue["file"] == file and text in issue["config"]
               for plugin, file, text in GIXY_ACCEPTED)


def gixy_finds_nothing(box: SystemdBox) -> None:
    """gixy-ng over a box's installed nginx config: no issue but the accepted ones."""
    # The test venv is inside the checkout, which the box sees at /opt/nbunits/src.
    python = "/opt/nbunits/src/.venv/bin/python"
    if not (REPO / ".venv" / "lib" / "python3.11" / "site-packages" / "gixy").is_dir():
        pytest.fail("gixy-ng is missing: .venv/bin/pip install -e '.[test]'")
    out = box.run(python, "-m", "gixy", "-f", "json", "/etc/nginx/nginx.conf", check=False)
    issues = json.loads(out.stdout or "null")
    assert isinstance(issues, list), f"gixy failed: {out.stderr[-2000:]}"
    found = [(i["plugin"], i["file"], i["severity"], i["reason"], i["config"])
             for i in issues if not accepted(i)]
    assert not found, f"gixy-ng reports: {found}"
    # ...and it did read nbunits' files (an unresolved include would hide them).
    assert "File not found" not in out.stderr, out.stderr


def test_gixy_finds_nothing_in_the_installed_nginx_config(nb: Nbunits) -> None:
    gixy_finds_nothing(nb.box)


def test_responses_carry_security_headers_and_limits(nb: Nbunits, opened: Opened) -> None:
    async def scenario() -> list[tuple[str, int, dict[str, str]]]:
        answers = []
        async with client(nb) as session:
            for method, url, data in [
                ("GET", "/ipythonExercice/nosuchcourse/a.ipynb/someone", None),
                ("GET", f"{opened.prefix}api/status", None),
                ("POST", "/ipythonExercice/demo/welcome.ipynb/someone", b"x" * 200_000),
            ]:
                async with session.request(method, url, data=data,
                                           allow_redirects=False) as resp:
                    answers.append((url, resp.status, dict(resp.headers)))
        return answers

    answers = asyncio.run(scenario())
    for url, status, headers in answers:
        assert headers.get("X-Content-Type-Options") == "nosniff", (url, status, headers)
        assert headers.get("Referrer-Policy") == "no-referrer", (url, status, headers)
        assert "X-Frame-Options" not in headers, "the notebook must stay embeddable in the LMS"
        assert headers.get("Server") == "nginx", "no version disclosed"
    assert answers[2][1] == 413, "a course link's body is small"
