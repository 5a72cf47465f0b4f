"""One booted systemd with nbunits installed, shared by the integration tests.

The box is a throwaway systemd-nspawn container over an overlay of this machine's
root (testbed/harness.py). Inside: the product venv at /opt/nbunits/venv (built on
the machine by scripts/setup), the shared image store, and the demo course, served
as deployed: nginx on ports 80 and 443 of the box's own network, for the server
name `notebooks.mooc.test`, with a certificate from a CA the tests make and trust,
and a TLS-terminating load balancer (the `lb` fixture) as the one trusted proxy.
The tests reach it by that name, over TCP and TLS (testbed/forward.py).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from testbed import bare, handed
from testbed.deploy import (  # noqa: F401 (the names tests import from here)
    IMAGE_STORE,
    IMAGE_STORE_IN_BOX,
    LB_CLIENT,
    LB_LISTEN,
    LB_PEER,
    LIFTED_CAPS,
    LMS,
    REPO,
    SERVER,
    SHARED_IN_BOX,
    VENV,
    Site,
    box_folders,
    btrfs_homes,
    deploy,
    reach,
    show_btrfs_sysfs,
    use_checkout,
)
from testbed.forward import Forwarder, Names
from testbed.harness import SystemdBox

# Per process, so that several test runs (developers, helpers) can share a machine.
WORK = Path(f"/var/tmp/nbunits-test-{os.getpid()}")
# Every secret handed out and every box's logs, for test_logs.py (testbed/handed.py).
SESSION = Path(f"/var/tmp/nbunits-test-session-{os.getpid()}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "bare: runs README's setup on a bare Debian 12 root "
                            "(test_setup.py; NBUNITS_SKIP_BARE=1 skips it)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.path):
            item.add_marker(pytest.mark.integration)
    # Tests that check what the whole session left behind (test_logs.py) run last.
    items.sort(key=lambda item: item.get_closest_marker("last") is not None)


@pytest.fixture(scope="session", autouse=True)
def log_session(request: pytest.FixtureRequest) -> Iterator[Path]:
    """The session folder of testbed/handed.py, before any box boots; kept if a test
    failed (the boxes' logs are there), else removed."""
    shutil.rmtree(SESSION, ignore_errors=True)
    SESSION.mkdir(parents=True)
    os.environ[handed.SESSION_ENV] = str(SESSION)
    yield SESSION
    del os.environ[handed.SESSION_ENV]
    if request.session.testsfailed:
        print(f"the session's logs and secrets are kept in {SESSION}")
    else:
        shutil.rmtree(SESSION, ignore_errors=True)


def _require_setup() -> None:
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (they boot a systemd container)")
    missing = [str(p) for p in (VENV / "bin" / "nbunits", IMAGE_STORE) if not p.exists()]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run scripts/setup first")


class Nbunits:
    """The box, plus what tests ask of it."""

    def __init__(self, box: SystemdBox, home: Path, shared: Path, site: Site) -> None:
        self.box = box
        self.home = home  # the host folder mounted as /home in the box
        self.shared = shared  # the host folder mounted as SHARED_IN_BOX
        self.site = site

    def nbunits(self, *args: str, check: bool = True):
        result = self.box.run(str(VENV / "bin" / "nbunits"), *args, check=check)
        handed.scan_text(result.stdout)  # links an admin is given (staff links' signatures)
        return result

    def users(self) -> set[str]:
        out = self.box.run("getent", "passwd").stdout
        return {line.split(":")[0] for line in out.splitlines() if line.startswith("nb")} - {"nbunits"}

    def uid(self, user: str) -> int:
        return int(self.box.run("id", "-u", user).stdout)

    def student_units(self) -> list[str]:
        out = self.box.systemctl("list-units", "--all", "--plain", "--no-legend",
                                 "nbunits-*@*").stdout
        return [line.split()[0] for line in out.splitlines() if line.strip()]

    def add_course(self, name: str, **settings: int | str) -> None:
        """Publish the demo notebooks as another course, with some settings changed
        by editing its course file and reloading, as an admin would. Its legacy links
        are open (the tests launch with made-up ids), as an admin must say."""
        self.nbunits("course", "add", name, "--dir", "/opt/nbunits/src/examples/demo",
                     "--legacy", "open")
        path = f"/etc/nbunits/courses/{name}.toml"
        lines = self.box.read_file(path).splitlines()
        for key, value in settings.items():
            text = f'"{value}"' if isinstance(value, str) else str(value)
            lines = [line for line in lines if not line.startswith(f"{key} =")]
            lines.append(f"{key} = {text}")
        self.box.write_file(path, "\n".join(lines) + "\n")
        self.box.systemctl("daemon-reload")

    def processes_of(self, user: str) -> list[str]:
        out = self.box.run("ps", "-u", user, "-o", "pid=,comm=", check=False).stdout
        return [line.strip() for line in out.splitlines() if line.strip()]

    def wait_for(self, unit: str, states: set[str], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            state = self.show(unit, "ActiveState")["ActiveState"]
            if state in states or time.monotonic() > deadline:
                return state
            time.sleep(0.5)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.box.systemctl("show", unit, *(f"--property={p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@pytest.fixture(scope="session", autouse=True)
def bare_machine(request: pytest.FixtureRequest) -> Iterator[bare.Background | None]:
    """README's setup on a fresh bare Debian 12 root (test_setup.py), started with the
    session when that test is to run: it mostly waits on apt and pip (~3 min), so the
    other tests run meanwhile."""
    wanted = os.environ.get("NBUNITS_SKIP_BARE") != "1" and os.geteuid() == 0 and any(
        item.path.name == "test_setup.py" for item in request.session.items)
    run = bare.Background(REPO).start() if wanted else None
    yield run
    if run is not None:
        run.wait()


@pytest.fixture(scope="session")
def nb() -> Iterator[Nbunits]:
    _require_setup()
    home, shared, binds = box_folders(WORK)
    # The homes are a btrfs with quotas, as where courses set disk_quota (test_quota.py).
    with btrfs_homes(home), \
            SystemdBox(f"nbunits-test-{os.getpid()}", binds=binds, private_network=True) as box:
        box.boot()
        show_btrfs_sysfs(box)
        use_checkout(box)
        # Every test is one client of nginx and creates users at will (the fuzz tests:
        # thousands): admission control's caps are lifted here, and
        # test_admission.py sets small ones while it runs.
        box.write_file("/etc/nbunits/nbunits.toml", LIFTED_CAPS)
        site = deploy(box, shared, extra=["--trusted-proxy", LB_PEER])
        nb = Nbunits(box, home, shared, site)
        nb.nbunits("course", "add", "demo", "--dir", "/opt/nbunits/src/examples/demo",
                   "--legacy", "open")
        yield nb
        failed = box.failed_units()
        if failed:
            print("failed units at the end:", failed)
            print(box.journal(*failed))
    shutil.rmtree(WORK, ignore_errors=True)


@pytest.fixture(scope="session")
def lti_course(nb: Nbunits) -> str:
    """A course that takes LTI 1.1 and 1.3 launches from the fake LMS (lms.py)."""
    from .lms import add_course  # lms.py imports this module

    return add_course(nb)


def client(nb: Nbunits, *, limit: int = 100) -> aiohttp.ClientSession:
    """An aiohttp session to nbunits in the box, as a browser: https://notebooks.mooc.test.

    Create it inside the coroutine that uses it (tests call asyncio.run()).
    """
    return nb.site.session(limit=limit)


LB_CONF = """\
# A TLS-terminating load balancer in front of nbunits' nginx (port 80), as a
# MOOC's front would be: it says what the scheme and the client were.
pid /run/nbunits-test-lb.pid;
error_log stderr;
events {}
http {
    access_log off;
    map $http_upgrade $connection_upgrade { default upgrade; '' close; }
    server {
        listen %(listen)s:8443 ssl;
        server_name %(server)s;
        ssl_certificate %(cert)s;
        ssl_certificate_key %(key)s;
        location / {
            proxy_pass http://127.0.0.1:80;
            proxy_bind %(peer)s;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header X-Forwarded-Proto https;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_buffering off;
        }
    }
}
"""


@pytest.fixture(scope="session")
def lb(nb: Nbunits) -> Site:
    """nbunits behind a TLS-terminating load balancer (a second nginx in the box,
    connecting from the one trusted proxy address): the same name, another way in."""
    assert nb.site.ca is not None
    cert = f"{SHARED_IN_BOX}/tls/{SERVER}"
    (nb.shared / "lb.conf").write_text(LB_CONF % {
        "listen": LB_LISTEN, "server": SERVER, "cert": cert + ".pem", "key": cert + ".key",
        "peer": LB_PEER})
    nb.box.run("systemd-run", "--unit=nbunits-test-lb", "--service-type=forking",
               "/usr/sbin/nginx", "-c", f"{SHARED_IN_BOX}/lb.conf")
    front = Forwarder(nb.box.leader_pid, 8443, target_host=LB_LISTEN, listen_port=443,
                      source=LB_CLIENT).start()
    return Site(nb.box, nb.shared, Names({SERVER: front.listen_host}), nb.site.ca)
