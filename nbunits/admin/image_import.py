"""A course image the builder made, into the shared store once root has checked it.

The builder's export (an OCI layout in its own folder, images/course-build) is
the work of a teacher's repository: root reads it as data, never runs it, and
never reads it twice. Each file is opened without following links, must be a
regular file, is bounded in size and hashed as it is copied into root's own
folder (Settings.build_import). The image must be the base image's layers plus
its own; its configuration may carry no control character (the generator writes
its environment and entrypoint into students' units); its own layers may hold nothing the
shared, root-owned store must not (`check_layer`). Then root's podman loads
root's copy (the base image's layers are in the store already: only the course's
are read) and the course's image name moves to it. On any refusal nothing is
loaded and the name stays where it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from nbunits.core.errors import Code, NbunitsError

MAX_JSON = 1 << 20  # index.json, the manifest, the configuration
MAX_LAYERS = 8  # the course's own (podman build --squash makes one)
MAX_MEMBERS = 2_000_000  # entries of a layer
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"  # uncompressed: its digest is its diff id
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


class RefusedImage(NbunitsError):
    def __init__(self, message: str) -> None:
        super().__init__(Code.REFUSED_IMAGE, message)


@dataclass(frozen=True)
class Copied:
    """Root's copy of a built image (an OCI layout), checked but for its layers' content."""

    folder: Path
    config: dict[str, Any]
    own: tuple[str, ...]  # the digests of the course's own layers


def copy_export(export: Path, target: Path, base_layers: list[str], max_bytes: int) -> Copied:
    """Copy the builder's export into `target` (made anew, root's 0700), checking its
    structure: one manifest, uncompressed layers, the base image's layers first."""
    shutil.rmtree(target, ignore_errors=True)
    (target / "blobs" / "sha256").mkdir(mode=0o700, parents=True)
    os.chmod(target, 0o700)
    with _open_dir(export) as fd, _open_dir("blobs", fd) as blobs_fd, \
            _open_dir("sha256", blobs_fd) as sha_fd:
        index = _json(_read(fd, "index.json", MAX_JSON), "index.json")
        manifests = index.get("manifests") if isinstance(index, dict) else None
        if not isinstance(manifests, list) or len(manifests) != 1 \
                or not isinstance(manifests[0], dict):
            raise RefusedImage("the build's export does not hold exactly one image")
        entry = manifests[0]
        digest = _digest(entry.get("digest"))
        raw = _blob(sha_fd, digest, target, MAX_JSON)
        manifest = _json(raw, "the manifest")
        layers, config_digest = _manifest_layers(manifest)
        config = _json(_blob(sha_fd, config_digest, target, MAX_JSON), "the configuration")
        rootfs = config.get("rootfs") if isinstance(config, dict) else None
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        if diff_ids != layers:
            raise RefusedImage("the image's layers are not those its configuration lists")
        if layers[:len(base_layers)] != base_layers:
            raise RefusedImage("the image is not built on the base image (a course's "
                               "Containerfile starts FROM $BASE and keeps its layers)")
        own = tuple(layers[len(base_layers):])
        if len(own) > MAX_LAYERS:
            raise RefusedImage(f"the image adds {len(own)} layers (at most {MAX_LAYERS})")
        left = max_bytes
        for layer in own:
            left -= _blob(sha_fd, layer, target, left, keep=False)
    check_config(config)
    index = {"schemaVersion": 2, "manifests": [{"mediaType": OCI_MANIFEST, "digest": digest,
                                                "size": len(raw)}]}
    (target / "index.json").write_text(json.dumps(index))
    (target / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return Copied(target, config, own)


def _manifest_layers(manifest: Any) -> tuple[list[str], str]:
    if not isinstance(manifest, dict) or manifest.get("schemaVersion") != 2:
        raise RefusedImage("the build's manifest is not an OCI image manifest")
    config, layers = manifest.get("config"), manifest.get("layers")
    if not isinstance(config, dict) or config.get("mediaType") != OCI_CONFIG \
            or not isinstance(layers, list):
        raise RefusedImage("the build's manifest is not an OCI image manifest")
    found = []
    for layer in layers:
        if not isinstance(layer, dict) or layer.get("mediaType") != OCI_LAYER:
            raise RefusedImage("the build's layers are not uncompressed tar archives")
        found.append(_digest(layer.get("digest")))
    return found, _digest(config.get("digest"))


def check_config(config: Any) -> None:
    """What of the configuration reaches students' units (rootfs.py): the environment,
    the entrypoint, the working directory: no control character (the units would hold
    it; a raw newline breaks them), nothing huge."""
    inner = config.get("config") if isinstance(config, dict) else None
    if inner is None:
        return
    if not isinstance(inner, dict):
        raise RefusedImage("the image's configuration is not an object")
    for key in ("Env", "Entrypoint", "Cmd"):
        value = inner.get(key)
        if value is not None and (not isinstance(value, list)
                                  or not all(isinstance(v, str) for v in value)):
            raise RefusedImage(f"the image's {key} is not a list of strings")
        for word in value or ():
            if _CONTROL_RE.search(word):
                raise RefusedImage(f"the image's {key} holds a control character (a newline?): "
                                   f"{word[:60]!r}")
    workdir = inner.get("WorkingDir")
    if workdir is not None and (not isinstance(workdir, str) or _CONTROL_RE.search(workdir)):
        raise RefusedImage(f"the image's WorkingDir is not a path: {str(workdir)[:60]!r}")
    if len(json.dumps(inner)) > 256 * 1024:
        raise RefusedImage("the image's configuration is larger than 256 KiB")


def check_layer(path: Path, max_bytes: int) -> None:
    """A layer of the course's own, before the shared store holds it as root's files:
    no device or FIFO (whiteouts are .wh. files in a layer), no setuid or setgid file,
    no file capability or other extended attribute but user.*, owned by root (a
    group other than root's may not write), nothing world-writable but sticky
    folders, no path leaving the image or going through one of its own symbolic
    links, hard links only to its own earlier files, at most `max_bytes` of content."""
    seen: set[str] = set()
    links: set[str] = set()
    total = 0
    try:
        with tarfile.open(path, "r|") as tar:
            for count, member in enumerate(tar, 1):
                name = _member_name(member.name)
                problem = member_problem(member, name, seen) or _through_link(name, links)
                if problem:
                    raise RefusedImage(f"{name}: {problem}")
                total += member.size if member.isfile() else 0
                if total > max_bytes or count > MAX_MEMBERS:
                    raise RefusedImage(f"its own layer is larger than image_build_disk "
                                       f"({max_bytes} bytes, {MAX_MEMBERS} entries)")
                seen.add(name)
                if member.issym():
                    links.add(name.rstrip("/"))
    except tarfile.TarError as exc:
        raise RefusedImage(f"a layer is not a valid tar archive: {exc}") from exc


def member_problem(member: tarfile.TarInfo, name: str, seen: set[str]) -> str:
    """Why one entry of a layer may not go into the shared store ("" if it may)."""
    if member.isdev():
        return "a device or FIFO"
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        return "an entry of an unknown kind"
    if member.mode & 0o6000 and not member.isdir():
        return "a setuid or setgid file"
    attributes = [k for k in member.pax_headers if "xattr" in k.lower() and not
                  k.startswith("SCHILY.xattr.user.")]
    if attributes:
        return f"extended attributes ({', '.join(sorted(attributes))}; file capabilities?)"
    if member.uid != 0:
        return f"owned by uid {member.uid} (a course image's own files belong to root)"
    if member.gid != 0 and member.mode & 0o020 and not member.issym():
        return f"group {member.gid} may write it"
    if member.mode & 0o002 and not member.issym() and not (member.isdir() and member.mode & 0o1000):
        return "world-writable"
    if member.islnk() and _member_name(member.linkname) not in seen:
        return f"a hard link to {member.linkname!r}, not a file of this layer"
    return ""


def _through_link(name: str, links: set[str]) -> str:
    """An entry below a symbolic link of the same layer would be written wherever the
    link points (podman extracts in a chroot of the layer; refused all the same)."""
    parts = PurePosixPath(name).parts
    for end in range(1, len(parts)):
        if "/".join(parts[:end]) in links:
            return f"below the symbolic link {'/'.join(parts[:end])}"
    return ""


def _member_name(name: str) -> str:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise RefusedImage(f"{name[:80]!r}: a path that leaves the image")
    return path.as_posix().removeprefix("./")


def _digest(value: Any) -> str:
    if not isinstance(value, str) or not DIGEST_RE.fullmatch(value):
        raise RefusedImage(f"not a sha256 digest: {str(value)[:80]!r}")
    return value


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except ValueError as exc:
        raise RefusedImage(f"{what} of the build is not JSON") from exc


def _blob(sha_fd: int, digest: str, target: Path, limit: int, *, keep: bool = True) -> Any:
    """Copy blob `digest` into target's blobs, checking its hash; its bytes if `keep`,
    else its size."""
    hexa = digest.removeprefix("sha256:")
    out = target / "blobs" / "sha256" / hexa
    h, size, kept = hashlib.sha256(), 0, bytearray()
    with _open_file(sha_fd, hexa) as src, open(out, "xb") as dst:
        while chunk := src.read(1 << 20):
            size += len(chunk)
            if size > limit:
                raise RefusedImage(f"a blob of the build is larger than {limit} bytes")
            h.update(chunk)
            dst.write(chunk)
            if keep:
                kept += chunk
    if "sha256:" + h.hexdigest() != digest:
        raise RefusedImage(f"blob {digest} does not match its digest")
    return bytes(kept) if keep else size


def _read(dir_fd: int, name: str, limit: int) -> bytes:
    with _open_file(dir_fd, name) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise RefusedImage(f"{name} of the build is larger than {limit} bytes")
    return data


@contextlib.contextmanager
def _open_file(dir_fd: int, name: str) -> Iterator[IO[bytes]]:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except OSError as exc:
        raise RefusedImage(f"cannot open {name} of the build: {exc.strerror}") from exc
    f = os.fdopen(fd, "rb")
    with f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RefusedImage(f"{name} of the build is not a regular file")
        yield f


@contextlib.contextmanager
def _open_dir(name: str | Path, dir_fd: int | None = None) -> Iterator[int]:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except OSError as exc:
        raise RefusedImage(f"cannot open {name} of the build: {exc.strerror}") from exc
    try:
        yield fd
    finally:
        os.close(fd)
