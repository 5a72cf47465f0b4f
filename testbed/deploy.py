"""nbunits installed in a box as an admin installs it, and this machine's way to it.

`deploy` runs `nbunits install` for a server name (nginx on 80, and 443 with a
certificate from the tests' CA), makes the name resolve in the box, and returns a
`Site`: this machine's address for that name (a forwarder into the box's network),
the CA, and aiohttp sessions that reach it as a browser does. `box_folders` and
`use_checkout` give a box what every nbunits box needs: homes, a shared folder, the
image store, and this checkout's code on top of the product venv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from testbed import handed
from testbed.forward import Forwarder, Names
from testbed.harness import Bind, SystemdBox
from testbed.tls import TestCA

REPO = Path(__file__).resolve().parents[1]
# The image store every box uses at /var/lib/nbunits/images; another one on this
# machine (an image being reworked) with NBUNITS_TEST_IMAGE_STORE.
IMAGE_STORE = Path(os.environ.get("NBUNITS_TEST_IMAGE_STORE", "/var/lib/nbunits/images"))
IMAGE_STORE_IN_BOX = "/var/lib/nbunits/images"
VENV = Path("/opt/nbunits/venv")
SHARED_IN_BOX = "/srv/nbunits-test"
BUILD_IN_BOX = "/var/lib/nbunits/build"  # Settings.build_dir
# The name browsers use for the nbunits server, and the LMS's.
SERVER = "notebooks.mooc.test"
LMS = "lms.mooc.test"
# In the box's network: the load balancer connects from LB_PEER (the trusted proxy),
# and listens on LB_LISTEN; a client reaching it comes from LB_CLIENT.
LB_PEER, LB_LISTEN, LB_CLIENT = "127.0.0.2", "127.0.0.3", "127.0.0.5"
# Admission control's caps (nbunits.toml [server]) lifted: a test session or a
# bench is one client of nginx that creates students at will (the fuzz tests:
# thousands); test_admission.py sets small ones while it runs.
LIFTED_CAPS = ("[server]\nlaunch_rate = 1000000\nlaunch_burst = 100000\n"
               "new_students_per_minute = 1000000\n")



@dataclass
class Site:
    """How the tests reach a box's nbunits: its name, this machine's address for
    it (a forwarder into the box's network), and the CA that signed its certificate."""

    box: SystemdBox
    shared: Path
    names: Names
    ca: TestCA | None
    server: str = SERVER

    @property
    def base(self) -> str:
        return f"{'https' if self.ca else 'http'}://{self.server}"

    def url(self, path: str) -> str:
        return self.base + path

    def session(self, *, limit: int = 100, timeout: float = 180,
                base: str | None = None) -> aiohttp.ClientSession:
        """An aiohttp session to nbunits, as a browser: by name, verifying TLS."""
        connector = aiohttp.TCPConnector(
            resolver=self.names, limit=limit,
            ssl=self.ca.client_context() if self.ca else False)
        return aiohttp.ClientSession(base or self.base, connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=timeout),
                                     trace_configs=[handed.trace_config()])


def deploy(box: SystemdBox, shared: Path, *, tls: bool = True, server: str = SERVER,
           student_domain: str = "", extra: Sequence[str] = ()) -> Site:
    """Install nbunits in `box` for `server` as an admin would (nginx on 80, and on
    443 with TLS), make the name resolve there, and reach it from here. With a
    `student_domain`, every student has their own origin under it (a wildcard
    name, and a certificate for it too)."""
    install = ["install", "--server-name", server, "--listen", "80"]
    wildcard = [f"*.{student_domain}"] if student_domain else []
    if student_domain:
        install += ["--student-domain", student_domain]
    ca = None
    if tls:
        ca = TestCA(shared / "tls")
        pair = ca.issue(server, *wildcard)
        install += ["--tls-listen", "443",
                    "--tls-cert", f"{SHARED_IN_BOX}/tls/{pair.cert.name}",
                    "--tls-key", f"{SHARED_IN_BOX}/tls/{pair.key.name}"]
    hosts = box.read_file("/etc/hosts")
    box.write_file("/etc/hosts", hosts + f"127.0.0.1 {server} {LMS}\n")
    box.run(str(VENV / "bin" / "nbunits"), *install, *extra)
    return reach(box, shared, ca, server, wildcard)


def reach(box: SystemdBox, shared: Path, ca: TestCA | None, server: str = SERVER,
          also: Sequence[str] = ()) -> Site:
    """This machine's way to a box's nginx: an address of its own for `server` (and
    the names `also`, "*.DOMAIN" for a wildcard)."""
    front = Forwarder(box.leader_pid, 443 if ca else 80).start()
    if ca:  # plain HTTP too, on the same address (it redirects)
        Forwarder(box.leader_pid, 80, listen_host=front.listen_host).start()
    names = Names({name: front.listen_host for name in (server, *also)})
    return Site(box, shared, names, ca, server)


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
    nbunits box needs (those two, the shared image store, the course image builder's
    folder, this checkout). The builder's rootless podman keeps its storage there:
    podman's storage does not work on the box's overlay root."""
    shutil.rmtree(work, ignore_errors=True)
    home, shared, build = work / "home", work / "shared", work / "build"
    home.mkdir(parents=True)
    shared.mkdir()
    build.mkdir()
    return home, shared, [Bind(home, "/home"), Bind(shared, SHARED_IN_BOX),
                          Bind(IMAGE_STORE, IMAGE_STORE_IN_BOX), Bind(build, BUILD_IN_BOX),
                          Bind(REPO, "/opt/nbunits/src", readonly=True)]


@contextmanager
def btrfs_homes(home: Path, size: str = "16G") -> Iterator[None]:
    """Mount a fresh btrfs with quotas on `home` (a sparse file, loop-mounted), as a
    deployment whose courses set disk_quota would have its homes (docs/admin.md, "Disk
    quotas"; `btrfs quota enable` is the admin's step). Unmounted at the end."""
    image = home.with_name(home.name + ".btrfs")
    subprocess.run(["truncate", "-s", size, str(image)], check=True)
    subprocess.run(["mkfs.btrfs", "-q", str(image)], check=True, capture_output=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(home)], check=True)
    try:
        subprocess.run(["btrfs", "quota", "enable", str(home)], check=True)
        yield
    finally:
        subprocess.run(["umount", str(home)], check=False)  # the loop device goes with it
        image.unlink(missing_ok=True)


def show_btrfs_sysfs(box: SystemdBox) -> None:
    """Give the box the kernel's /sys/fs/btrfs, as a host has it: nspawn's /sys is a
    tmpfs, and sysfs is where nbunits (unprivileged) sees whether a btrfs has quotas
    on (nbunits/helper/btrfs.py, quotas_enabled)."""
    box.nsenter("sh", "-ec", "mount -o remount,rw /sys; mkdir -p /sys/fs/btrfs; "
                "mkdir -p /run/nbunits-test-sysfs; "
                "mount -t sysfs sysfs /run/nbunits-test-sysfs; "
                "mount --bind /run/nbunits-test-sysfs/fs/btrfs /sys/fs/btrfs; "
                "umount /run/nbunits-test-sysfs; mount -o remount,ro /sys")
