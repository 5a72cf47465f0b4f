"""A bare Debian 12 machine, for the test that runs README's setup on one
(tests/integration/test_setup.py).

The root is debootstrap's minbase of bookworm (the least a Debian 12 system has:
apt and dpkg, no Python, no compiler, no podman), unpacked afresh for each run
from a tarball cached in /var/cache/nbunits (made once from the Debian mirror, as
images/build makes its base; its .debs shared with images/build), with this
checkout's files copied in as a clone would have them. Commands run in it under
systemd-nspawn without booting it (as the test harness runs its boxes: no
systemd outside, each in a cgroup of its own), so nothing there runs as a service.

What this machine lends it, as caches, and as the environment machines of this kind
have (none of it is something setup installs):
- apt's package cache (/var/cache/apt/archives) and, for its lists and pip's cache,
  folders of their own under /var/cache/nbunits/bare: a run downloads what changed;
- the CA bundle and /etc/pip.conf (outbound TLS goes through this environment's proxy);
- /var/cache/nbunits and the image store: images/build there finds the image up to
  date, as it does here once scripts/setup ran (else it builds it, as it would here).
It shares this machine's network (apt and pip reach their mirrors); a policy-rc.d
keeps apt from starting services (nginx would take this machine's port 80).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from testbed.harness import Bind, cgroup_roots, enter_cgroups_and_exec

CACHE = Path(os.environ.get("NBUNITS_CACHE_DIR", "/var/cache/nbunits"))
MIRROR = os.environ.get("NBUNITS_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SECURITY = os.environ.get("NBUNITS_DEBIAN_SECURITY_MIRROR", "http://deb.debian.org/debian-security")
SUITE = "bookworm"
RECIPE = "1"  # bump when what the tarball holds changes
CHECKOUT = "/root/nbunits"
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
       "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb"}
# apt and dpkg settings that only make a throwaway root faster (no fsync, no
# documentation), and the rule Debian's container images keep: no service starts.
APT_CONF = 'Dpkg::Options { "--force-unsafe-io"; };\nAcquire::Languages "none";\n'
DPKG_EXCLUDES = "path-exclude=/usr/share/doc/*\npath-exclude=/usr/share/man/*\n" \
                "path-exclude=/usr/share/locale/*\npath-include=/usr/share/doc/*/copyright\n"
POLICY_RC = "#!/bin/sh\n# A throwaway root: apt starts no service.\nexit 101\n"


def tarball() -> Path:
    """The cached minbase root; made from the Debian mirror the first time (~1 min)."""
    key = hashlib.sha256(f"{RECIPE} {SUITE} {MIRROR}".encode()).hexdigest()[:16]
    path = CACHE / f"bare-{SUITE}-{key}.tar"
    if path.exists():
        return path
    (CACHE / "debs").mkdir(parents=True, exist_ok=True)
    work = CACHE / f"bare-{os.getpid()}.tmp"
    shutil.rmtree(work, ignore_errors=True)
    try:
        subprocess.run(["unshare", "--mount", "--propagation", "private", "--",
                        "debootstrap", "--variant=minbase", f"--cache-dir={CACHE / 'debs'}",
                        SUITE, str(work / "root"), MIRROR],
                       check=True, capture_output=True, text=True)
        subprocess.run(["tar", "--numeric-owner", "-C", str(work / "root"), "-cf",
                        str(work / "root.tar"), "."], check=True)
        (work / "root.tar").rename(path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return path


def make_root(work: Path, checkout: Path) -> Path:
    """A fresh bare root in `work`, with `checkout`'s files (git's view: tracked and
    new files, nothing it ignores, no .venv) at CHECKOUT."""
    root = work / "root"
    root.mkdir(parents=True)
    subprocess.run(["tar", "--numeric-owner", "-C", str(root), "-xf", str(tarball())], check=True)
    (root / "etc/apt/sources.list").write_text(
        f"deb {MIRROR} {SUITE} main\ndeb {MIRROR} {SUITE}-updates main\n"
        f"deb {SECURITY} {SUITE}-security main\n")
    (root / "etc/apt/apt.conf.d/90nbunits-bare").write_text(APT_CONF)
    (root / "etc/dpkg/dpkg.cfg.d/90nbunits-bare").write_text(DPKG_EXCLUDES)
    (root / "usr/sbin/policy-rc.d").write_text(POLICY_RC)
    (root / "usr/sbin/policy-rc.d").chmod(0o755)
    for name in ("etc/resolv.conf", "etc/pip.conf", "etc/ssl/certs/ca-certificates.crt"):
        if (Path("/") / name).exists():
            (root / name).unlink(missing_ok=True)
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path("/") / name, root / name)
    local_cas = Path("/usr/local/share/ca-certificates")
    if local_cas.is_dir():
        shutil.copytree(local_cas, root / local_cas.relative_to("/"), dirs_exist_ok=True)
    files = subprocess.run(["git", "-C", str(checkout), "ls-files", "-z", "--cached", "--others",
                            "--exclude-standard"], check=True, capture_output=True).stdout
    dest = root / CHECKOUT.lstrip("/")
    dest.mkdir(parents=True)
    with tarfile.open(work / "checkout.tar", "w") as tar:
        for name in filter(None, files.decode().split("\0")):
            if (checkout / name).exists():
                tar.add(checkout / name, arcname=name, recursive=False)
    subprocess.run(["tar", "-C", str(dest), "-xf", str(work / "checkout.tar")], check=True)
    return root


def caches() -> list[Bind]:
    """What a run borrows from this machine (see the docstring)."""
    bare = CACHE / "bare"
    for name in ("lists", "pip"):
        (bare / name).mkdir(parents=True, exist_ok=True)
    binds = [Bind(Path("/var/cache/apt/archives"), "/var/cache/apt/archives"),
             Bind(bare / "lists", "/var/lib/apt/lists"),
             Bind(bare / "pip", "/root/.cache/pip"),
             Bind(CACHE, "/var/cache/nbunits")]
    store = Path(os.environ.get("NBUNITS_TEST_IMAGE_STORE", "/var/lib/nbunits/images"))
    if store.is_dir():
        binds.append(Bind(store, "/var/lib/nbunits/images"))
    return binds


def run(root: Path, argv: Sequence[str], *, binds: Sequence[Bind] = (),
        env: Mapping[str, str] | None = None, timeout: float = 900,
        cwd: str = CHECKOUT) -> subprocess.CompletedProcess[str]:
    """`argv` in the root, as root, under systemd-nspawn (no boot), output captured."""
    name = f"nbunits-bare-{os.getpid()}"
    cgroups = []
    for top in cgroup_roots():
        cgroup = top / "nbunits-harness" / name
        cgroup.mkdir(parents=True, exist_ok=True)
        cgroups.append(str(cgroup / "cgroup.procs"))
    cmd = ["systemd-nspawn", f"--directory={root}", f"--machine={name}", "--register=no",
           "--keep-unit", "--link-journal=no", "--as-pid2", "--quiet", "--console=pipe",
           f"--chdir={cwd}", *(b.nspawn_flag() for b in binds),
           *(f"--setenv={k}={v}" for k, v in {**ENV, **(env or {})}.items()), "--", *argv]
    try:
        return subprocess.run(["/bin/sh", "-c", enter_cgroups_and_exec, "sh", *cgroups, "--",
                               *cmd], capture_output=True, text=True, timeout=timeout,
                              env=ENV, stdin=subprocess.DEVNULL)
    finally:
        for cgroup in cgroups:
            try:
                os.rmdir(Path(cgroup).parent)
            except OSError:
                pass


def remove(work: Path) -> None:
    """The root, once nothing is mounted under it (never rm -rf through a mount)."""
    mounts = Path("/proc/self/mountinfo").read_text()
    if f" {work}/" in mounts or f" {work} " in mounts:
        raise RuntimeError(f"something is still mounted under {work}; left in place")
    shutil.rmtree(work, ignore_errors=True)


STEPS = (("scripts/setup", ["bash", "scripts/setup"]),
         ("scripts/lint", ["bash", "scripts/lint"]),
         ("unit tests", [".venv/bin/python", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                         "tests/unit"]),
         ("scripts/setup, again", ["bash", "scripts/setup"]))


@dataclass
class Outcome:
    """What a bare machine made of README's setup: each step's seconds, and the first
    step that failed with its output (None: none failed)."""

    before: subprocess.CompletedProcess[str] | None = None  # what the root had first
    took: dict[str, float] = field(default_factory=dict)
    failed: tuple[str, subprocess.CompletedProcess[str]] | None = None
    last: subprocess.CompletedProcess[str] | None = None  # the last step's (setup again)
    error: BaseException | None = None


class Background:
    """README's setup on a fresh bare root, in a thread of its own: it is mostly waiting
    on apt and pip (~3 min), so the test session starts it first and the other tests
    run meanwhile (tests/integration/conftest.py); test_setup.py waits for it."""

    def __init__(self, checkout: Path) -> None:
        self.checkout = checkout
        self.work = Path(f"/var/tmp/nbunits-bare-{os.getpid()}")
        self.outcome = Outcome()
        self._thread = threading.Thread(target=self._run, name="bare-debian-12", daemon=True)

    def start(self) -> Background:
        self._thread.start()
        return self

    def wait(self, timeout: float = 1800) -> Outcome:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"README's setup on a bare Debian 12 took over {timeout:g} s")
        return self.outcome

    def _run(self) -> None:
        remove(self.work)
        try:
            root = make_root(self.work, self.checkout)
            self.outcome.before = run(root, ["sh", "-c",
                                             "command -v python3 gcc podman nginx || true"])
            for name, argv in STEPS:
                started = time.monotonic()
                result = run(root, argv, binds=caches())
                self.outcome.took[name] = round(time.monotonic() - started, 1)
                self.outcome.last = result
                if result.returncode != 0:
                    self.outcome.failed = (name, result)
                    return
        except BaseException as exc:  # noqa: BLE001 -- the test reports it
            self.outcome.error = exc
        finally:
            remove(self.work)
