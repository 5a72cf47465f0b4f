"""A teacher's repository gets no privilege on the host (issue 26).

One course, built from a repository that turns hostile test by test: a
Containerfile that tries the chroot-in-chroot escape, the box's loopback
services and the host's secrets; requirements.txt lines that name another
index, a URL or a path; a package with no wheel (its setup.py must never run);
an image with a setuid file or a newline in its entrypoint; a build that runs
too long, writes too large a file, or comes from too large a repository;
masters that are links to /dev/zero, /etc/shadow or out of the repository.
Each is refused or built harmlessly, says so clearly, and leaves the box's own
root as it was (the overlay's upper layer: `SystemdBox.written`) and, when
refused, the course's previous image in place.
"""

from __future__ import annotations

import hashlib
import io
import secrets
import subprocess
import sys
import tarfile
import threading
import time

import pytest

from .conftest import IMAGE_STORE, VENV, WORK, Nbunits
from .test_course_repo import WHEELS, image_id, local_index
from .test_courses import Teacher, master

COURSE = "walls"
BUILD_WHEELS = ("setuptools==69.5.1", "wheel==0.43.0")
BUILT: set[str] = set()  # the course's images, removed at the end
IMAGE = f"localhost/nbunits/course-{COURSE}:latest"
# What may be written in the box's own root meanwhile: nbunits' folders, the
# journal, systemd's own state, the builder unit's private /var/tmp, and the
# metrics that nbunits-metrics.timer writes for node-exporter.
ALLOWED = ("/etc/nbunits/", "/var/lib/nbunits/", "/var/log/journal/", "/var/lib/systemd/",
           "/var/tmp/systemd-private-", "/var/lib/prometheus/")
PROBE = '''\
import hashlib, os, socket
def say(*words):
    print("PROBE", *words, flush=True)
# The classic chroot-in-chroot escape (root's chroot isolation let it out).
try:
    os.makedirs("/tmp/jail", exist_ok=True)
    fd = os.open("/", os.O_RDONLY)
    os.chroot("/tmp/jail")
    os.fchdir(fd)
    for _ in range(64):
        os.chdir("..")
    os.chroot(".")
    say("chroot dance done; /etc/nbunits here:", os.path.exists("/etc/nbunits"))
except OSError as exc:
    say("chroot refused:", exc)
for path in ("/root/pwned-TOKEN", "/etc/nbunits/pwned-TOKEN", "/var/lib/nbunits/pwned-TOKEN"):
    try:
        with open(path, "w") as f:
            f.write("pwned")
        say("wrote", path)
    except OSError as exc:
        say("cannot write", path, exc.strerror)
for path in ("/etc/nbunits/capability.secret", "/etc/shadow", "/run/secrets/pip-conf"):
    try:
        with open(path, "rb") as f:
            say("read", path, hashlib.sha256(f.read()).hexdigest())
    except OSError as exc:
        say("cannot read", path, exc.strerror)
for port in (80, 8765):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=3)
        say("REACHED port", port)
    except OSError as exc:
        say("unreachable port", port, exc)
'''
SETUP_PY = '''\
import os
print("NBUNITS-SETUP-PY-RAN", flush=True)
for folder in ("/run/wheels", "/tmp", os.getcwd(), os.path.expanduser("~")):
    try:
        open(os.path.join(folder, "NBUNITS-SETUP-PY-RAN"), "w").close()
    except OSError:
        pass
from setuptools import setup
setup(name="nbunits-evil", version="1.0")
'''


def sdist_only_package(nb: Nbunits) -> None:
    """nbunits-evil 1.0 on the box's index as a source distribution only: its setup.py
    says so (and leaves a marker) wherever it runs. The index also has what pip would
    build it with (setuptools, wheel), so only --only-binary keeps it from running."""
    for wheel in BUILD_WHEELS:
        if not list(WHEELS.glob(f"{wheel.replace('==', '-')}-*.whl")):
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                            "--only-binary=:all:", "-d", str(WHEELS), wheel], check=True)
        project = wheel.split("==")[0]
        folder = nb.shared / "index" / "simple" / project
        folder.mkdir(parents=True, exist_ok=True)
        for found in WHEELS.glob(f"{wheel.replace('==', '-')}-*.whl"):
            (folder / found.name).write_bytes(found.read_bytes())
    folder = nb.shared / "index" / "simple" / "nbunits-evil"
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / "nbunits-evil-1.0.tar.gz", "w:gz") as tar:
        for name, text in (("setup.py", SETUP_PY),
                           ("PKG-INFO", "Metadata-Version: 2.1\nName: nbunits-evil\nVersion: 1.0\n")):
            data = text.encode()
            info = tarfile.TarInfo(f"nbunits-evil-1.0/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


class Repo(Teacher):
    """The teacher's repository, whose image spec each test sets."""

    def spec(self, *, containerfile: str | None = None, requirements: str | None = None,
             files: dict[str, str] | None = None, message: str = "spec") -> None:
        for name, text in (("Containerfile", containerfile), ("requirements.txt", requirements)):
            path = self.repo / name
            if text is None:
                path.unlink(missing_ok=True)
            else:
                path.write_text(text)
        self.commit(files or {}, message)


def containerfile(*steps: str) -> str:
    """A course's own Containerfile (a new one each time: the build really runs)."""
    return "\n".join(["ARG BASE", "FROM $BASE", f"# {secrets.token_hex(4)}", *steps]) + "\n"


@pytest.fixture(scope="module")
def repo(nb: Nbunits):
    local_index(nb)
    sdist_only_package(nb)
    repo = Repo(nb, "walls-repo")
    # A new spec each run: the build really runs.
    repo.spec(requirements=f"# {secrets.token_hex(4)}\ntabulate\n",
              files={"intro.ipynb": master("print('hi')")}, message="a good course")
    added = nb.nbunits("course", "add", COURSE, "--git", repo.url, "--branch", "main")
    assert "built image" in added.stdout, added.stdout
    BUILT.add(image_id(nb, IMAGE))
    yield repo
    nb.nbunits("course", "remove", COURSE, "--purge", "--yes", check=False)
    nb.box.systemctl("stop", "nbunits-test-index.service", check=False)
    # The images this module made, which the course left untagged in the shared store.
    for image in BUILT - {""}:
        nb.box.run("podman", "--root", "/var/lib/nbunits/images", "--runroot",
                   "/run/nbunits/image-build", "--storage-driver", "overlay", "rmi", image,
                   check=False)


def update(nb: Nbunits, timeout: float = 300, **properties: str):
    """`nbunits course update`, with unit properties for the command (rlimits)."""
    result = nb.box.run(str(VENV / "bin" / "nbunits"), "course", "update", COURSE, check=False,
                        properties=[f"{k}={v}" for k, v in properties.items()], timeout=timeout)
    BUILT.add(image_id(nb, IMAGE))
    return result


def new_paths(nb: Nbunits, before: set[str]) -> list[str]:
    """What the update wrote in the box's own root outside nbunits' folders."""
    return sorted(p for p in nb.box.written() - before if not p.startswith(ALLOWED)
                  and p not in {a.rstrip("/") for a in ALLOWED})


def refused(nb: Nbunits, result, before_image: str, *words: str) -> str:
    """The update failed, said `words`, and left the course's image as it was."""
    said = result.stdout + result.stderr
    assert result.returncode != 0, said[-3000:]
    for word in words:
        assert word in said, (word, said[-3000:])
    assert image_id(nb, IMAGE) == before_image, "the previous image stays the course's"
    return said


def test_a_containerfile_runs_without_privilege_network_or_host_secrets(nb: Nbunits, repo: Repo):
    token = secrets.token_hex(6)
    before = nb.box.written()
    shadow = hashlib.sha256(nb.box.nsenter("cat", "/etc/shadow").stdout.encode()).hexdigest()
    secret = nb.box.nsenter("cat", "/etc/nbunits/capability.secret").stdout.strip()
    repo.spec(containerfile=containerfile("COPY probe.py /probe.py", "RUN python3 /probe.py"),
              files={"probe.py": PROBE.replace("TOKEN", token)}, message="a probe")
    result = update(nb)
    said = result.stdout + result.stderr
    assert result.returncode == 0, said[-3000:]  # built, harmlessly
    assert "PROBE chroot dance done; /etc/nbunits here: False" in said, said[-3000:]
    assert "REACHED" not in said and "PROBE unreachable port 80" in said, said[-3000:]
    assert "PROBE cannot read /etc/nbunits/capability.secret" in said, said[-3000:]
    assert secret not in said and shadow not in said, "no host secret reaches the build"
    assert "PROBE cannot read /run/secrets/pip-conf" in said, "no build secret either"
    # The marker landed in the image (its /root), nowhere in the box or its binds.
    assert new_paths(nb, before) == []
    assert nb.box.nsenter("ls", "/root", "/etc/nbunits").stdout.count(token) == 0
    found = subprocess.run(["find", str(WORK), "-name", f"*{token}*"], capture_output=True,
                           text=True).stdout
    assert found == "", found


# More lines in tests/unit/test_course_walls.py; these, where the index would see them.
@pytest.mark.parametrize("line", [
    "--index-url http://127.0.0.1:8765/evil/",
    "--extra-index-url http://127.0.0.1:8765/evil/",
    "-f http://127.0.0.1:8765/evil/",
    "tabulate @ http://127.0.0.1:8765/evil/tabulate-0.9.0-py3-none-any.whl",
    "-e ./evil", "./evil",
])
def test_a_requirement_that_is_not_plain_is_refused_before_anything_runs(
        nb: Nbunits, repo: Repo, line: str):
    before, image = nb.box.written(), image_id(nb, IMAGE)
    index_log = nb.box.journal("nbunits-test-index.service", lines=10000).count("/evil")
    repo.spec(requirements=f"# {secrets.token_hex(4)}\ntabulate\n{line}\n", message="evil line")
    said = refused(nb, update(nb), image, "requirements.txt, line 3", "not a plain requirement")
    assert "downloading the wheels" not in said and "STEP 1" not in said, "nothing ran"
    assert nb.box.journal("nbunits-test-index.service", lines=10000).count("/evil") == index_log
    assert new_paths(nb, before) == []


def test_a_package_without_a_wheel_is_refused_and_its_setup_py_never_runs(
        nb: Nbunits, repo: Repo):
    before, image = nb.box.written(), image_id(nb, IMAGE)
    repo.spec(requirements=f"# {secrets.token_hex(4)}\nnbunits-evil\n", message="an sdist")
    said = refused(nb, update(nb), image, "No matching distribution found for nbunits-evil")
    assert "NBUNITS-SETUP-PY-RAN" not in said
    assert "GET /simple/nbunits-evil/" in nb.box.journal("nbunits-test-index.service",
                                                          lines=10000), "the index was asked"
    found = nb.box.run("find", "/var/lib/nbunits", "/tmp", "/var/tmp", "-name",
                       "NBUNITS-SETUP-PY-RAN", check=False).stdout
    assert found == "", found
    assert new_paths(nb, before) == []


@pytest.mark.parametrize("step, why", [
    ("RUN cp /bin/sh /opt/sh && chmod u+s /opt/sh", "opt/sh: a setuid or setgid file"),
    # A file capability (CAP_NET_RAW, permitted and effective: VFS_CAP_REVISION_2).
    ("RUN python3 -c \"import os, struct; open('/opt/cap', 'w'); os.setxattr('/opt/cap', "
     "'security.capability', struct.pack('<5I', 0x02000001, 1 << 13, 0, 0, 0))\"",
     "opt/cap: extended attributes"),
    ("RUN touch /opt/theirs && chown 1000:1000 /opt/theirs", "opt/theirs: owned by uid 1000"),
    ('ENTRYPOINT ["/usr/bin/tini", "--", "x\\nExecStartPre=+/bin/touch /root/pwned\\n#"]',
     "Entrypoint holds a control character"),
])
def test_an_image_the_shared_store_must_not_hold_is_refused(nb: Nbunits, repo: Repo,
                                                             step: str, why: str):
    before, image = nb.box.written(), image_id(nb, IMAGE)
    setuid_before = store_setuid_files()
    repo.spec(containerfile=containerfile(step), message="a bad image")
    refused(nb, update(nb), image, "checking the image before the shared store",
            why, "was refused")
    assert store_setuid_files() == setuid_before
    assert new_paths(nb, before) == []


def store_setuid_files() -> str:
    return subprocess.run(["find", str(IMAGE_STORE), "-perm", "/6000", "-type", "f"],
                          capture_output=True, text=True).stdout


def test_a_build_runs_as_the_builder_in_its_sandbox_within_time_and_disk_bounds(
        nb: Nbunits, repo: Repo):
    settings = nb.box.read_file("/etc/nbunits/nbunits.toml")
    nb.box.write_file("/etc/nbunits/nbunits.toml", settings + 'image_build_time = 15\n'
                      'image_build_disk = "64M"\nimage_build_memory = "512M"\n')
    try:
        image = image_id(nb, IMAGE)
        # Too long: stopped at image_build_time; meanwhile, the unit's settings.
        repo.spec(containerfile=containerfile("RUN sleep 600"), message="slow")
        seen: dict[str, str] = {}
        watcher = threading.Thread(target=lambda: seen.update(build_unit(nb)))
        watcher.start()
        started = time.monotonic()
        result = update(nb, timeout=120)
        watcher.join()
        refused(nb, result, image, "took longer than image_build_time (15 s)")
        assert time.monotonic() - started < 60
        assert seen.get("User") == "nbunits-builder", seen
        assert seen.get("MemoryMax") == str(512 << 20), seen
        assert seen.get("LimitFSIZE") == str(64 << 20), seen
        assert seen.get("PrivateNetwork") == "yes" and seen.get("ProtectSystem") == "strict", seen
        assert "/etc/nbunits" in seen.get("InaccessiblePaths", ""), seen
        # A file larger than image_build_disk (LimitFSIZE=).
        repo.spec(containerfile=containerfile("RUN head -c 100M /dev/zero > /big"), message="big")
        refused(nb, update(nb), image, "wrote a file larger than image_build_disk (64M)")
        # Files smaller than that, more than it together (the builder's folder, watched).
        repo.spec(containerfile=containerfile(
            "RUN for i in 1 2 3 4; do head -c 30M /dev/zero > /f$i; done; sleep 60"),
            message="many")
        refused(nb, update(nb), image, "wrote more than image_build_disk (64M) in "
                "/var/lib/nbunits/build/builder; it was stopped")
        # A repository larger than it, as the build's context.
        repo.spec(containerfile=containerfile("RUN true"), message="big data")
        with (repo.repo / "data.bin").open("wb") as f:
            f.truncate(100 << 20)
        repo.git("add", "data.bin")
        repo.git("commit", "--quiet", "-m", "big data")
        refused(nb, update(nb), image, "the repository is larger than image_build_disk")
        repo.git("rm", "--quiet", "data.bin")
        repo.git("commit", "--quiet", "-m", "no big data")
    finally:
        nb.box.write_file("/etc/nbunits/nbunits.toml", settings)


def build_unit(nb: Nbunits, timeout: float = 60) -> dict[str, str]:
    """The build step's unit settings, read while it runs."""
    props = ("User", "MemoryMax", "LimitFSIZE", "PrivateNetwork", "ProtectSystem",
             "InaccessiblePaths", "RuntimeMaxUSec", "ActiveState")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shown = nb.show("nbunits-image-build.service", *props)
        if shown.get("ActiveState") == "active":
            return shown
        time.sleep(0.3)
    return {}


def test_master_links_to_dev_zero_shadow_or_outside_are_reported_and_never_read(
        nb: Nbunits, repo: Repo):
    before = nb.box.written()
    for name, target in (("zero.ipynb", "/dev/zero"), ("shadow.ipynb", "/etc/shadow"),
                         ("secret.txt", "/etc/nbunits/capability.secret"), ("etc", "/etc"),
                         ("up.ipynb", "../walls-repo-outside.ipynb")):
        (repo.repo / name).symlink_to(target)
    (nb.shared / "walls-repo-outside.ipynb").write_text(master("print('outside')"))
    # No image spec: the course runs the base image, nothing to build.
    repo.spec(files={"ok.ipynb": master("print('ok')")}, message="links")
    # Bounded address space: were /dev/zero read, this update would fail, not eat the host.
    result = update(nb, LimitAS="4G")
    said = result.stdout + result.stderr
    assert result.returncode == 0, said[-3000:]
    for name in ("zero.ipynb", "shadow.ipynb", "secret.txt", "etc", "up.ipynb"):
        assert f"skipped: {name}: a symbolic link" in said, (name, said[-3000:])
    published = nb.box.run("ls", "-A", f"/var/lib/nbunits/courses/{COURSE}").stdout.split()
    assert "ok.ipynb" in published and not {"zero.ipynb", "shadow.ipynb", "secret.txt", "etc",
                                            "up.ipynb"} & set(published), published
    assert new_paths(nb, before) == []
