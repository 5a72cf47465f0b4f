"""Several nbunits hosts behind an nbunits front, each a throwaway systemd.

The boxes share one network namespace (testbed/netns.py): each host's nginx
listens on an address of its own (127.0.1.N:80), the front's on FRONT_ADDRESS
(80 and 443, TLS with the tests' CA); the front reaches the hosts over TCP, and a
killed host stops answering at its address. This machine reaches the front by the
server name through a forwarder (testbed/forward.py), as for a single box.

Storage the hosts share (docs/admin.md, "Beyond one host"): one folder of this machine
bound as /home in every host, and one per shared folder of /var/lib/nbunits
(SHARED_STATE). It stands in for NFS, which this machine's kernel lacks: the same
inodes, so flock(2) between boxes behaves as NFS locks between machines.
"""

from __future__ import annotations

import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from testbed import handed
from testbed.deploy import (
    IMAGE_STORE,
    IMAGE_STORE_IN_BOX,
    LIFTED_CAPS,
    REPO,
    SERVER,
    SHARED_IN_BOX,
    VENV,
    Site,
    use_checkout,
)
from testbed.forward import Forwarder, Names
from testbed.harness import Bind, SystemdBox
from testbed.netns import NetworkNamespace
from testbed.tls import TestCA

FRONT_ADDRESS = "127.0.1.100"
# The address the front's connections to the hosts come from: in one namespace the
# kernel picks 127.0.0.1 for any 127/8 destination (on real machines, the front's
# address on the hosts' network).
FRONT_SOURCE = "127.0.0.1"
# What follows a student from host to host, besides /home (docs/admin.md, "Beyond one host").
SHARED_STATE = ("students", "tokens", "copies", "shares", "aliases", "locks", "nonces")
NBUNITS = str(VENV / "bin" / "nbunits")


@dataclass
class Host:
    name: str
    address: str  # nginx listens on address:80
    box: SystemdBox

    @property
    def upstream(self) -> str:
        return f"{self.address}:80"

    def nbunits(self, *args: str, check: bool = True) -> str:
        out = self.box.run(NBUNITS, *args, check=check).stdout
        handed.scan_text(out)  # links an admin is given
        return out

    def runs(self, unit: str) -> bool:
        return self.box.systemctl("is-active", "--quiet", unit, check=False).returncode == 0


@dataclass
class Cluster:
    work: Path
    netns: NetworkNamespace
    ca: TestCA
    hosts: dict[str, Host] = field(default_factory=dict)
    front: SystemdBox | None = None
    site: Site | None = None

    @classmethod
    def create(cls, work: Path, name: str) -> Cluster:
        shutil.rmtree(work, ignore_errors=True)
        for folder in ("home", "shared", *(f"state/{s}" for s in SHARED_STATE)):
            (work / folder).mkdir(parents=True)
        # The secrets the admin copies to every host (same capabilities, same hand-off key).
        (work / "capability.secret").write_text(secrets.token_hex(32) + "\n")
        (work / "hosts.secret").write_text(secrets.token_hex(32) + "\n")
        netns = NetworkNamespace(name)
        netns.open()
        return cls(work, netns, TestCA(work / "shared" / "tls"))

    def binds(self) -> list[Bind]:
        return [Bind(self.work / "shared", SHARED_IN_BOX),
                Bind(IMAGE_STORE, IMAGE_STORE_IN_BOX),
                Bind(REPO, "/opt/nbunits/src", readonly=True)]

    def _boot(self, name: str, extra: list[Bind]) -> SystemdBox:
        box = SystemdBox(name, binds=[*self.binds(), *extra], network_namespace=self.netns.path)
        box.boot()
        # Every box of the namespace would listen on Cockpit's port 9090: none does.
        box.systemctl("stop", "cockpit.socket", check=False)
        box.systemctl("reset-failed", check=False)
        use_checkout(box)
        return box

    def add_host(self, name: str, address: str) -> Host:
        """Boot a host and install nbunits as an admin adds one: the first host's
        secrets copied in, `nbunits install --multi-host`, the course."""
        shared = [Bind(self.work / "home", "/home"),
                  *(Bind(self.work / "state" / s, f"/var/lib/nbunits/{s}") for s in SHARED_STATE)]
        box = self._boot(name, shared)
        # nspawn keeps /proc/sys read-only in a namespace it did not make; crun
        # writes the containers' network sysctls there (as in a private network).
        box.nsenter("sh", "-c", "mount --bind /proc/sys/net /proc/sys/net && "
                    "mount -o remount,bind,rw /proc/sys/net")
        box.write_file("/etc/nbunits/nbunits.toml", LIFTED_CAPS)
        box.write_file("/etc/nbunits/capability.secret",
                       (self.work / "capability.secret").read_text(), 0o600)
        box.write_file("/etc/nbunits/hosts.secret", (self.work / "hosts.secret").read_text(),
                       0o640)
        host = Host(name, address, box)
        host.nbunits("install", "--server-name", SERVER, "--listen", f"{address}:80",
                     "--trusted-proxy", FRONT_SOURCE, "--multi-host")
        host.nbunits("course", "add", "demo", "--dir", "/opt/nbunits/src/examples/demo",
                     "--legacy", "open")
        self.hosts[name] = host
        return host

    def install_front(self) -> Site:
        """Boot the front (once) and (re)install it for the hosts now in the cluster."""
        upstreams = [f"--front={h.upstream}" for h in self.hosts.values()]
        if self.front is None:
            self.front = self._boot("mh-front", [])
            pair = self.ca.issue(SERVER)
            self.front.run(NBUNITS, "install", *upstreams, "--server-name", SERVER,
                           "--listen", f"{FRONT_ADDRESS}:80", "--tls-listen", f"{FRONT_ADDRESS}:443",
                           "--tls-cert", f"{SHARED_IN_BOX}/tls/{pair.cert.name}",
                           "--tls-key", f"{SHARED_IN_BOX}/tls/{pair.key.name}")
            forward = Forwarder(self.front.leader_pid, 443, target_host=FRONT_ADDRESS).start()
            self.site = Site(self.front, self.work / "shared", Names({SERVER: forward.listen_host}),
                             self.ca)
        else:  # the full list each time; the rest of [server] is kept
            old = self._workers()
            self.front.run(NBUNITS, "install", *upstreams)
            # nginx reloads gracefully: old workers finish what they have, then exit.
            deadline = time.monotonic() + 30
            while self._workers() & old and time.monotonic() < deadline:
                time.sleep(0.1)
        assert self.site is not None
        return self.site

    def direct(self, host: Host) -> aiohttp.ClientSession:
        """A session to one host's nginx, by the server name, as the front reaches
        it (plain HTTP from the trusted address): what a front that chose this host
        would send."""
        assert self.front is not None
        forward = Forwarder(self.front.leader_pid, 80, target_host=host.address,
                            source=FRONT_SOURCE).start()
        connector = aiohttp.TCPConnector(resolver=Names({SERVER: forward.listen_host}))
        return aiohttp.ClientSession(f"http://{SERVER}", connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=240),
                                     trace_configs=[handed.trace_config()])

    def _workers(self) -> set[str]:
        assert self.front is not None
        out = self.front.run("pgrep", "-f", "nginx: worker process", check=False).stdout
        return set(out.split())

    def kill(self, name: str) -> None:
        """The host dies (power cut): every process of it at once, then the box is gone."""
        self.hosts.pop(name).box.power_cut()

    def close(self) -> None:
        for host in list(self.hosts.values()):
            host.box.shutdown()
        self.hosts.clear()
        if self.front is not None:
            self.front.shutdown()
        self.netns.close()
        shutil.rmtree(self.work, ignore_errors=True)
