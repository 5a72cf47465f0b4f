"""A course's own image, from its repository: requirements.txt, or a Containerfile.

Built at `course add/update` with `podman build --isolation chroot` (no registry,
no OCI runtime) into the shared image store, on the base image that is already
there, so a course costs only its own layer on disk. The image carries a hash of
its spec (label org.nbunits.spec): it is rebuilt only when that changes. The tag
moves only when a build succeeds, so a failed build leaves the previous image in
service; running containers keep the image they started with (old images stay,
untagged, until `images/build --prune`), and students get the new one at their
next start.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nbunits.core.config import DEFAULT_IMAGE, CourseConfig, Settings
from nbunits.core.data import data_dir
from nbunits.core.errors import Code, NbunitsError
from nbunits.core.names import course_image
from nbunits.core.run import CommandError, run, run_streamed

Say = Callable[[str], None]

LABEL = "org.nbunits.spec"
# images/build's: podman records a store's runroot and refuses any other one.
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
PIP_CONF = Path("/etc/pip.conf")  # "the configured index": the host's pip settings
DEFAULT_CONTAINERFILE = Path(str(data_dir() / "images" / "course.Containerfile"))
_FROM_BASE_RE = re.compile(r"^\s*FROM\s+\$\{?BASE\}?(\s|$)", re.MULTILINE | re.IGNORECASE)


class ImageError(NbunitsError):
    pass


@dataclass(frozen=True)
class Spec:
    """What a course's image is made of, in its repository."""

    containerfile: Path  # the course's own, or images/course.Containerfile
    context: Path  # the repository, or a folder holding only requirements.txt
    requirements: bytes

    def digest(self, base_id: str) -> str:
        h = hashlib.sha256()
        for part in (self.containerfile.read_bytes(), self.requirements, base_id.encode(),
                     _read(PIP_CONF)):
            h.update(hashlib.sha256(part).digest())
        return "sha256:" + h.hexdigest()


def find_spec(source: Path) -> Spec | None:
    """The repository's image spec; None if it has neither file (the base image, then)."""
    own, requirements = source / "Containerfile", source / "requirements.txt"
    if own.is_file() and not own.is_symlink():
        if not _FROM_BASE_RE.search(own.read_text(errors="replace")):
            raise ImageError(Code.BAD_CONTAINERFILE, f"{own}: a course's Containerfile builds on "
                             "the nbunits base image", hint="start it with: ARG BASE / FROM $BASE")
        return Spec(own, source, _read(requirements))
    if requirements.is_file() and not requirements.is_symlink():
        return Spec(DEFAULT_CONTAINERFILE, source, requirements.read_bytes())
    return None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def store_podman(settings: Settings, *args: str, check: bool = True) -> str:
    """podman on the shared store, as root; its files stay readable to students."""
    try:
        return run(["podman", "--root", str(settings.image_store),
                    "--runroot", str(settings.image_build_runroot),
                    "--storage-driver", "overlay", "--events-backend", "none", *args],
                   check=check).stdout.strip()
    finally:
        _readable(settings.image_store)


def _readable(store: Path) -> None:
    """Root podman rewrites its JSON files 0600: students' podman must read them."""
    for path in store.glob("overlay-*/*.json"):
        os.chmod(path, 0o644)


def image_id(settings: Settings, image: str) -> str:
    """The id of `image` in the shared store; "" if it is not there."""
    return store_podman(settings, "image", "inspect", "--format", "{{.Id}}", image, check=False)


def check_image(settings: Settings, image: str) -> None:
    if not image_id(settings, image):
        raise ImageError(Code.UNKNOWN_IMAGE, f"image {image} is not in the image store "
                         f"{settings.image_store}: students could not start",
                         hint="build it first (sudo images/build, or nbunits image build), "
                              "or give a course repository a requirements.txt")


def build(settings: Settings, config: CourseConfig, source: Path, say: Say, *,
          force: bool = False) -> str:
    """The image the course's students should run, built first if its spec changed."""
    spec = find_spec(source)
    name = course_image(config.name)
    if spec is None:
        return DEFAULT_IMAGE if config.image == name else config.image
    if config.image not in (DEFAULT_IMAGE, name):
        raise ImageError(Code.BAD_REQUEST, f"course {config.name} builds its own image from its "
                         f"repository; it cannot also run {config.image}",
                         hint="remove requirements.txt and Containerfile from the repository, "
                              "or keep the default image")
    base = image_id(settings, DEFAULT_IMAGE)
    if not base:
        check_image(settings, DEFAULT_IMAGE)
    digest = spec.digest(base)
    current = store_podman(settings, "image", "inspect", "--format",
                           f'{{{{index .Labels "{LABEL}"}}}}', name, check=False)
    if current == digest and not force:
        say(f"image {name} is up to date")
        return name
    say(f"building image {name} from {spec.containerfile.name}"
        f"{' and requirements.txt' if spec.requirements else ''} on {DEFAULT_IMAGE}")
    with tempfile.TemporaryDirectory(prefix="nbunits-image-", dir="/var/tmp") as tmp:
        context = spec.context
        if spec.containerfile == DEFAULT_CONTAINERFILE:
            context = Path(tmp, "context")
            context.mkdir()
            (context / "requirements.txt").write_bytes(spec.requirements)
        pip_conf = PIP_CONF if PIP_CONF.is_file() else Path(tmp, "empty")
        ca = HOST_CA if HOST_CA.is_file() else Path(tmp, "empty")
        Path(tmp, "empty").touch()
        argv = ["podman", "--root", str(settings.image_store),
                "--runroot", str(settings.image_build_runroot),
                "--storage-driver", "overlay", "--events-backend", "none",
                "build", "--isolation", "chroot", "--network", "host", "--pull=never",
                "--layers=false", "--build-arg", f"BASE={DEFAULT_IMAGE}",
                "--secret", f"id=pip-ca,src={ca}", "--secret", f"id=pip-conf,src={pip_conf}",
                "--label", f"{LABEL}={digest}", "--label", f"org.nbunits.course={config.name}",
                "-t", name, "-f", str(spec.containerfile), str(context)]
        own = "requirements.txt" if spec.containerfile == DEFAULT_CONTAINERFILE else "Containerfile"
        try:
            run_streamed(argv, lambda line: say(f"  | {line}"))
        except CommandError as exc:
            raise ImageError(Code.IMAGE_BUILD_FAILED,
                             f"the image of course {config.name} did not build: {why(exc)}",
                             hint=f"the course is unchanged and its students keep the previous "
                                  f"image; fix {own} (the build's output is above) and run "
                                  "course update again") from exc
        finally:
            _readable_tree(settings.image_store)
    size = store_podman(settings, "image", "ls", "--format", "{{.Size}}", name, check=False)
    say(f"built image {name} ({size.splitlines()[0] if size else '?'})")
    return name


def why(exc: CommandError) -> str:
    """The telling line of a failed build: pip's or podman's error, else the last one."""
    lines = [line.strip() for line in exc.stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith(("ERROR:", "Error:", "error:")) and "exit status" not in line:
            return line
    return lines[-1] if lines else str(exc)


def _readable_tree(store: Path) -> None:
    """Students' rootless podman reads the store as another uid (images/build's chmod)."""
    run(["chmod", "-R", "a+rX", str(store)])
