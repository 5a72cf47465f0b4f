"""A course's own image, from its repository: requirements.txt, or a Containerfile.

A course's repository is a teacher's work, and nothing in it runs with any
privilege on the host. At `course add/update`, root reads the repository as data
(bounded, never through a symbolic link), checks requirements.txt (plain
requirements only: no option, URL or path) and hands the builder user a copy
(Settings.build_input: the base image, the build context). The builder
(builder.py, units/image/builder.properties) then downloads requirements.txt's
wheels, binary only, from the index /etc/pip.conf names, and builds with rootless
podman, the RUN steps without network, within the [server] image_build_* bounds.
Root checks what it made and loads it into the shared store (image_import.py):
a course costs only its own layer on disk.

The image carries a hash of its spec (label org.nbunits.spec): it is rebuilt only
when that changes. The tag moves only when a build succeeds and its image passes
the checks, so a failed or refused build leaves the previous image in service;
running containers keep the image they started with (old images stay, untagged,
until `images/build --prune`), and students get the new one at their next start.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nbunits.admin import builder, graded, image_import
from nbunits.admin.text_notebooks import FORMATS, HEAD_BYTES, is_text_notebook
from nbunits.core.config import DEFAULT_IMAGE, CourseConfig, Settings, parse_size
from nbunits.core.data import data_dir
from nbunits.core.errors import Code, NbunitsError
from nbunits.core.names import BUILDER_USER, course_image
from nbunits.core.run import run

Say = Callable[[str], None]

LABEL = "org.nbunits.spec"
PIP_CONF = Path("/etc/pip.conf")  # "the configured index": the host's pip settings
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
MAX_SPEC_BYTES = 1 << 20  # a Containerfile, a requirements.txt
_FROM_BASE_RE = re.compile(r"^\s*FROM\s+\$\{?BASE\}?(\s|$)", re.MULTILINE | re.IGNORECASE)
# A plain requirement (PEP 508 without a URL): a name, extras, versions, a marker,
# and pip's --hash options. Nothing else: no option (-i, --index-url, -f, -e, -r,
# -c...), no URL (`pkg @ https://...`), no path, no environment variable.
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_SPEC = r"(?:===|==|~=|!=|<=|>=|<|>)\s*[A-Za-z0-9.*+!_-]+"
_REQUIREMENT_RE = re.compile(
    rf"{_NAME}\s*(?:\[\s*{_NAME}(?:\s*,\s*{_NAME})*\s*\])?"
    rf"\s*(?:\(\s*{_SPEC}(?:\s*,\s*{_SPEC})*\s*\)|{_SPEC}(?:\s*,\s*{_SPEC})*)?"
    r"""\s*(?:;[\w\s.<>=!~'"(),*+-]*)?(?:\s+--hash=sha256:[0-9a-f]{64})*\s*""")


class ImageError(NbunitsError):
    pass


@dataclass(frozen=True)
class Spec:
    """What a course's image is made of, in its repository."""

    containerfile: bytes  # the course's own, or images/course.Containerfile
    own: bool  # the course's own Containerfile: the repository is its context
    source: Path
    requirements: bytes

    def digest(self, base_id: str) -> str:
        h = hashlib.sha256()
        for part in (self.containerfile, self.requirements, base_id.encode(),
                     _read_host(PIP_CONF)):
            h.update(hashlib.sha256(part).digest())
        return "sha256:" + h.hexdigest()


def find_spec(source: Path) -> Spec | None:
    """The repository's image spec; None if it has neither file (the base image, then)."""
    own = read_spec_file(source, "Containerfile", Code.BAD_CONTAINERFILE)
    requirements = read_spec_file(source, "requirements.txt", Code.BAD_REQUIREMENTS)
    check_requirements((requirements or b"").decode(errors="replace"))
    if own is not None:
        if not _FROM_BASE_RE.search(own.decode(errors="replace")):
            raise ImageError(Code.BAD_CONTAINERFILE, f"{source / 'Containerfile'}: a course's "
                             "Containerfile builds on the nbunits base image",
                             hint="start it with: ARG BASE / FROM $BASE")
        return Spec(own, True, source, requirements or b"")
    if requirements is not None:
        default = (data_dir() / "images" / "course.Containerfile").read_bytes()
        return Spec(default, False, source, requirements)
    return None


def read_spec_file(source: Path, name: str, code: Code) -> bytes | None:
    """A file at the repository's top, if there: a regular file (never through a
    symbolic link: one could name /dev/zero or /etc/shadow), at most 1 MiB."""
    try:
        fd = os.open(source / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ImageError(code, f"{source / name}: {exc.strerror} (a symbolic link? nbunits "
                         "never follows links in a repository)",
                         hint=f"make {name} a regular file") from exc
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ImageError(code, f"{source / name} is not a regular file")
        data = f.read(MAX_SPEC_BYTES + 1)
    if len(data) > MAX_SPEC_BYTES:
        raise ImageError(code, f"{source / name} is larger than {MAX_SPEC_BYTES >> 20} MiB")
    return data


def check_requirements(text: str) -> None:
    """Every line of requirements.txt a plain requirement, a comment or blank."""
    for number, line in enumerate(text.splitlines(), 1):
        plain = re.sub(r"(^|\s)#.*", "", line).strip()
        if plain and not _REQUIREMENT_RE.fullmatch(plain):
            raise ImageError(Code.BAD_REQUIREMENTS,
                             f"requirements.txt, line {number}: {line.strip()[:120]!r} is not a "
                             "plain requirement (a package name, extras, versions, a marker)",
                             hint="options (-i, --index-url, --extra-index-url, -f, -e, -r, -c), "
                                  "URLs (pkg @ https://...) and paths are refused: packages come "
                                  "as wheels from the index the admin configured (/etc/pip.conf)")


def _read_host(path: Path) -> bytes:
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
    say(f"building image {name} from {'its Containerfile' if spec.own else 'course.Containerfile'}"
        f"{' and requirements.txt' if spec.requirements.strip() else ''} on {DEFAULT_IMAGE}, "
        f"as {BUILDER_USER}")
    builder.check_builder(settings)
    try:
        with builder.lock(settings):
            try:
                built = _build(settings, spec, base, [f"{LABEL}={digest}",
                                                      f"org.nbunits.course={config.name}"], say)
                _load(settings, built, name, digest)
            finally:  # the repository's copy, root's copy of the result: not kept
                shutil.rmtree(settings.build_context, ignore_errors=True)
                shutil.rmtree(settings.build_import, ignore_errors=True)
    except NbunitsError as exc:
        own = "Containerfile" if spec.own else "requirements.txt"
        refused = exc.code == Code.REFUSED_IMAGE
        raise ImageError(exc.code if refused else Code.IMAGE_BUILD_FAILED,
                         f"the image of course {config.name} "
                         f"{'was refused by the shared store' if refused else 'did not build'}: "
                         f"{exc.message}",
                         hint=f"the course is unchanged and its students keep the previous "
                              f"image; fix {own} (the build's output is above) and run "
                              "course update again") from exc
    size = store_podman(settings, "image", "ls", "--format", "{{.Size}}", name, check=False)
    say(f"built image {name} ({size.splitlines()[0] if size else '?'})")
    return name


def _build(settings: Settings, spec: Spec, base: str, labels: list[str],
           say: Say) -> image_import.Copied:
    """The builder's steps, then root's copy of what they made, checked."""
    disk = parse_size(settings.server.image_build_disk)
    _prepare_input(settings, spec, base, disk, say)
    builder.run_step(settings, "base", [base], say, watch_disk=False)  # root's export
    if spec.requirements.strip():
        say("downloading the wheels of requirements.txt (binary only) from the configured index")
        builder.run_step(settings, "wheels", [base], say, network=True,
                         credentials=_pip_credentials())
    wheels = "with-wheels" if spec.requirements.strip() else "no-wheels"
    builder.run_step(settings, "build", [base, wheels, *labels], say)
    say("checking the image before the shared store takes it")
    base_layers = json.loads(store_podman(settings, "image", "inspect", "--format",
                                          "{{json .RootFS.Layers}}", base))
    copied = image_import.copy_export(settings.builder_export, settings.build_import,
                                      base_layers, disk)
    for layer in copied.own:
        image_import.check_layer(copied.folder / "blobs" / "sha256" / layer.removeprefix("sha256:"),
                                 disk)
    return copied


def _load(settings: Settings, built: image_import.Copied, name: str, digest: str) -> None:
    """Root's checked copy into the shared store; the course's name moves to it."""
    labels = (built.config.get("config") or {}).get("Labels") or {}
    if labels.get(LABEL) != digest:
        raise image_import.RefusedImage("the image does not carry the spec's label "
                                        "(a Containerfile may not set org.nbunits.spec)")
    try:
        new = store_podman(settings, "pull", "-q", f"oci:{built.folder}").splitlines()[-1]
        for other in json.loads(store_podman(settings, "image", "inspect", "--format",
                                             "{{json .RepoTags}}", new)) or ():
            if other != name:
                store_podman(settings, "untag", new, other)
        store_podman(settings, "tag", new, name)
    finally:
        _readable_tree(settings.image_store)


def _prepare_input(settings: Settings, spec: Spec, base: str, disk: int, say: Say) -> None:
    """Root's folder for the builder (read-only to it): the base image, exported from
    the shared store once per base image, and the build's context."""
    settings.build_input.mkdir(mode=0o755, parents=True, exist_ok=True)
    os.chmod(settings.build_input, 0o755)
    if _read_host(settings.build_base_id).decode() != base:
        say(f"exporting {DEFAULT_IMAGE} for the builder (once per base image)")
        shutil.rmtree(settings.build_base, ignore_errors=True)
        settings.build_base_id.unlink(missing_ok=True)
        store_podman(settings, "save", "-q", "--uncompressed", "--format", "oci-dir",
                     "-o", str(settings.build_base), base)
        _readable_tree(settings.build_base)
        settings.build_base_id.write_text(base)
    context = settings.build_context
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(mode=0o755)
    if spec.own:
        for left in copy_plain(spec.source, context, disk):
            say(f"  {left}: graded (nbgrader's), left out of the build's context")
    else:
        (context / "requirements.txt").write_bytes(spec.requirements)
    (context / "Containerfile").write_bytes(spec.containerfile)
    _readable_tree(context)


def copy_plain(source: Path, target: Path, limit: int) -> list[str]:
    """The repository as a build context: folders and regular files only (no symbolic
    link, no hidden file, no device or FIFO), at most `limit` bytes, never following
    a link (each file is opened with O_NOFOLLOW). Graded notebooks and nbgrader's
    gradebook (holds_grading) are left out, and returned: the context is world-readable while the builder
    reads it, and a Containerfile's COPY would put their solutions in the image
    students run (their release versions are in the published course)."""
    total, left = 0, []
    for folder, dirs, files in os.walk(source):
        here = Path(folder)
        dirs[:] = [d for d in dirs if not d.startswith(".") and not (here / d).is_symlink()]
        out = target / here.relative_to(source)
        out.mkdir(mode=0o755, exist_ok=True)
        for name in files:
            if name.startswith("."):
                continue
            try:
                fd = os.open(here / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                continue  # a symbolic link (ELOOP), or gone
            with os.fdopen(fd, "rb") as src:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    continue
                total += st.st_size
                if total > limit:
                    raise ImageError(Code.IMAGE_BUILD_FAILED, f"the repository is larger than "
                                     f"image_build_disk ({limit} bytes): {here / name} and the "
                                     "files before it", hint="raise [server] image_build_disk, "
                                     "or keep large data out of a repository that has a Containerfile")
                data = src.read(st.st_size)  # what it held when counted
            if holds_grading(name, data):
                left.append((here / name).relative_to(source).as_posix())
                continue
            with open(out / name, "xb") as dst:
                dst.write(data)
    return left


def holds_grading(name: str, data: bytes) -> bool:
    """Whether a notebook, or a text notebook (Jupytext's), mentions nbgrader or its
    markers (a source version, which only publishing turns into a release version),
    or is nbgrader's gradebook."""
    suffix = Path(name).suffix
    if name == graded.GRADEBOOK:
        return True
    if suffix != ".ipynb" and not (suffix in FORMATS and is_text_notebook(data[:HEAD_BYTES], suffix)):
        return False
    return b"nbgrader" in data or any(marker.encode() in data for marker in graded.MARKERS)


def _pip_credentials() -> dict[str, Path]:
    """The host's pip settings and CA bundle, for the wheels step only (systemd
    credentials of its unit: the build never sees them)."""
    found = {"pip.conf": PIP_CONF, "ca.crt": HOST_CA}
    return {name: path for name, path in found.items() if path.is_file()}


def _readable_tree(path: Path) -> None:
    """Students' rootless podman (and the builder) read it as another uid."""
    run(["chmod", "-R", "a+rX", str(path)])
