"""One booted systemd with nbunits installed, shared by the integration tests.

The box is a throwaway systemd-nspawn container over an overlay of this machine's
root (tests/harness.py). Inside: the product venv at /opt/nbunits/venv (built on
the machine by scripts/setup), the shared image store, real nginx listening on a
unix socket that the tests reach from outside, and the demo course.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.harness import Bind, SystemdBox

REPO = Path(__file__).resolve().parents[2]
# Per process, so that several test runs (developers, helpers) can share a machine.
WORK = Path(f"/var/tmp/nbunits-test-{os.getpid()}")
IMAGE_STORE = Path("/var/lib/nbunits/images")
VENV = Path("/opt/nbunits/venv")
SHARED_IN_BOX = "/srv/nbunits-test"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


def _require_setup() -> None:
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (they boot a systemd container)")
    missing = [str(p) for p in (VENV / "bin" / "nbunits", IMAGE_STORE) if not p.exists()]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run scripts/setup first")


class Nbunits:
    """The box, plus what tests ask of it."""

    def __init__(self, box: SystemdBox, home: Path, shared: Path) -> None:
        self.box = box
        self.home = home  # the host folder mounted as /home in the box
        self.nginx_socket = shared / "nginx.sock"

    def nbunits(self, *args: str, check: bool = True):
        return self.box.run(str(VENV / "bin" / "nbunits"), *args, check=check)

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
        by editing its course file and reloading, as an admin would."""
        self.nbunits("course", "add", name, "--dir", "/opt/nbunits/src/examples/demo")
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


def use_checkout(box: SystemdBox) -> None:
    """Run this checkout's code in the box, like an editable install.

    The venv's dependencies stay; its copy of nbunits is hidden (inside the box only:
    an overlay whiteout) and a .pth points at the bound checkout. So the tests never
    reinstall /opt/nbunits/venv under another test run sharing this machine.
    """
    site = VENV / "lib" / "python3.11" / "site-packages"
    box.run("rm", "-rf", str(site / "nbunits"))
    box.write_file(str(site / "nbunits-checkout.pth"), "/opt/nbunits/src\n")
    where = box.run(str(VENV / "bin" / "python3"), "-c", "import nbunits; print(nbunits.__file__)")
    assert where.stdout.strip() == "/opt/nbunits/src/nbunits/__init__.py", where.stdout


def box_folders(work: Path) -> tuple[Path, Path, list[Bind]]:
    """Fresh folders for a box's homes and for nginx's socket, and the binds that every
    nbunits box needs (those two, the shared image store, this checkout)."""
    shutil.rmtree(work, ignore_errors=True)
    home, shared = work / "home", work / "shared"
    home.mkdir(parents=True)
    shared.mkdir()
    return home, shared, [Bind(home, "/home"), Bind(shared, SHARED_IN_BOX),
                          Bind(IMAGE_STORE, str(IMAGE_STORE)),
                          Bind(REPO, "/opt/nbunits/src", readonly=True)]


@pytest.fixture(scope="session")
def nb() -> Iterator[Nbunits]:
    _require_setup()
    home, shared, binds = box_folders(WORK)
    with SystemdBox(f"nbunits-test-{os.getpid()}", binds=binds, private_network=True) as box:
        box.boot()
        use_checkout(box)
        nb = Nbunits(box, home, shared)
        nb.nbunits("install", "--listen", f"unix:{SHARED_IN_BOX}/nginx.sock")
        nb.nbunits("course", "add", "demo", "--dir", "/opt/nbunits/src/examples/demo")
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


def client(nb: Nbunits) -> aiohttp.ClientSession:
    """An aiohttp session to nginx in the box, as a browser on the server's own site.

    Create it inside the coroutine that uses it (tests call asyncio.run()).
    """
    return aiohttp.ClientSession("http://localhost",
                                 connector=aiohttp.UnixConnector(path=str(nb.nginx_socket)),
                                 timeout=aiohttp.ClientTimeout(total=180))
