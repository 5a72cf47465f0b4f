"""What root does with a teacher's repository and the builder's output, as data only:
requirements.txt's lines, masters read without following links, the build's
export copied and its layers checked before the shared store takes them, and
the image's configuration as students' units carry it. (The integration side:
tests/integration/test_course_walls.py.)"""

import hashlib
import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest

from nbunits.admin import course_image, image_import
from nbunits.admin.builder import printable, properties
from nbunits.admin.publish import check_masters, publish
from nbunits.core.config import Server, Settings
from nbunits.core.errors import NbunitsError
from nbunits.core.rootfs import unit_words
from nbunits.core.run import MAX_LINE, run_streamed
from nbunits.helper.notebooks import MAX_NOTEBOOK_BYTES, read_plain

NOTEBOOK = json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})

# --- requirements.txt ---------------------------------------------------------------

GOOD = ["tabulate", "tabulate==0.9.0", "numpy>=1.24,<3", "Foo_Bar.baz ~= 1.2",
        "pandas[excel, plot]>=2", 'requests; python_version >= "3.8"', "six (>=1.0)",
        "# a comment", "", "   ", "tabulate  # pinned later",
        "tabulate==0.9.0 --hash=sha256:" + "a" * 64]
BAD = ["--index-url http://evil/simple", "-i http://evil/simple", "--extra-index-url http://e/",
       "-f http://evil/", "--find-links=/tmp", "-e .", "-e git+https://x/y.git#egg=y", ".",
       "./pkg", "../pkg", "/srv/pkg.whl", "pkg @ https://evil/pkg.tar.gz",
       "pkg@file:///etc/shadow", "https://evil/pkg-1.0-py3-none-any.whl", "-r other.txt",
       "-c constraints.txt", "--requirement x", "pkg --install-option=--prefix=/",
       "pkg --global-option=build_ext", "${HOME}/pkg", "pkg \\", "--pre", "--no-binary :all:",
       "--trusted-host evil", "pkg==1.0 --hash=md5:abc", "C:\\pkg.whl", "pkg; os.system('x')@"]


@pytest.mark.parametrize("line", GOOD)
def test_plain_requirements_are_taken(line):
    course_image.check_requirements(f"tabulate\n{line}\n")


@pytest.mark.parametrize("line", BAD)
def test_options_urls_and_paths_are_refused_naming_the_line(line):
    with pytest.raises(NbunitsError) as info:
        course_image.check_requirements(f"tabulate\n{line}\n")
    assert info.value.code == "bad_requirements"
    assert f"line 2: {line.strip()!r}" in info.value.message


def test_spec_files_are_read_as_regular_files_only_and_bounded(tmp_path):
    (tmp_path / "requirements.txt").symlink_to("/dev/zero")
    with pytest.raises(NbunitsError, match="symbolic link"):
        course_image.find_spec(tmp_path)
    (tmp_path / "requirements.txt").unlink()
    os.mkfifo(tmp_path / "requirements.txt")  # opened non-blocking: never waits
    with pytest.raises(NbunitsError, match="not a regular file"):
        course_image.find_spec(tmp_path)
    (tmp_path / "requirements.txt").unlink()
    with (tmp_path / "Containerfile").open("wb") as f:
        f.truncate(course_image.MAX_SPEC_BYTES + 1)
    with pytest.raises(NbunitsError, match="larger than 1 MiB"):
        course_image.find_spec(tmp_path)


def test_a_repository_copied_as_a_context_has_no_link_hidden_or_special_file(tmp_path):
    source, target = tmp_path / "repo", tmp_path / "context"
    (source / "sub").mkdir(parents=True)
    target.mkdir()
    (source / "sub" / "data.csv").write_text("a,b\n")
    (source / ".git").mkdir()
    (source / ".secret").write_text("x")
    (source / "shadow").symlink_to("/etc/shadow")
    (source / "up").symlink_to("..")
    os.mkfifo(source / "fifo")
    course_image.copy_plain(source, target, 1 << 20)
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*")) == ["sub", "sub/data.csv"]
    with pytest.raises(NbunitsError, match="larger than image_build_disk"):
        course_image.copy_plain(source, tmp_path / "small", 2)


# --- masters ------------------------------------------------------------------------

def test_masters_are_read_without_following_links_and_bounded(tmp_path):
    (tmp_path / "zero.ipynb").symlink_to("/dev/zero")
    (tmp_path / "shadow.ipynb").symlink_to("/etc/shadow")
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "ok.ipynb").write_text(NOTEBOOK)
    (tmp_path / "linked").symlink_to(tmp_path / "real")
    os.mkfifo(tmp_path / "fifo.ipynb")
    with (tmp_path / "huge.ipynb").open("wb") as f:
        f.truncate(MAX_NOTEBOOK_BYTES + 1)
    assert read_plain(tmp_path, "real/ok.ipynb") == NOTEBOOK.encode()
    for name, why in (("zero.ipynb", "symbolic link"), ("shadow.ipynb", "symbolic link"),
                      ("linked/ok.ipynb", "symbolic link"), ("fifo.ipynb", "not a regular file"),
                      ("huge.ipynb", "larger than 32 MiB")):
        with pytest.raises(NbunitsError, match=why):
            read_plain(tmp_path, name)


def test_links_and_special_files_are_reported_and_not_published(tmp_path):
    source, target = tmp_path / "src", tmp_path / "published"
    source.mkdir()
    (source / "ok.ipynb").write_text(NOTEBOOK)
    (source / "zero.ipynb").symlink_to("/dev/zero")
    (source / "etc").symlink_to("/etc")
    os.mkfifo(source / "pipe")
    broken = check_masters(source)
    assert set(broken) == {"zero.ipynb", "etc", "pipe"}, broken
    assert "symbolic link" in broken["zero.ipynb"] and "not a regular file" in broken["pipe"]
    assert publish(source, target, skip=set(broken)) == ["ok.ipynb"]
    assert sorted(p.name for p in target.iterdir()) == ["ok.ipynb"]


# --- the build's export and its layers ------------------------------------------------

def layer(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return out.getvalue()


def entry(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, uid: int = 0,
          gid: int = 0, linkname: str = "", pax: dict[str, str] | None = None) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.linkname = kind, mode, uid, gid, linkname
    info.pax_headers = pax or {}
    return info


def check(tmp_path: Path, *members: tuple[tarfile.TarInfo, bytes], limit: int = 1 << 20) -> None:
    path = tmp_path / "layer.tar"
    path.write_bytes(layer(*members))
    image_import.check_layer(path, limit)


def test_a_layer_of_plain_root_files_passes(tmp_path):
    check(tmp_path, (entry("opt/", tarfile.DIRTYPE, 0o755), b""), (entry("opt/a.py"), b"x"),
          (entry("opt/b.py", tarfile.LNKTYPE, linkname="opt/a.py"), b""),
          (entry("opt/link", tarfile.SYMTYPE, 0o777, linkname="/etc/shadow"), b""),
          (entry("tmp/", tarfile.DIRTYPE, 0o1777), b""), (entry("opt/.wh.gone"), b""),
          (entry("etc/shadow", mode=0o640, gid=42), b""),
          (entry("opt/x", pax={"SCHILY.xattr.user.note": "ok"}), b""))


@pytest.mark.parametrize("member, why", [
    (entry("opt/sh", mode=0o4755), "setuid"),
    (entry("opt/sg", mode=0o2755), "setuid or setgid"),
    (entry("dev/sda", tarfile.BLKTYPE, 0o666), "a device"),
    (entry("dev/mem", tarfile.CHRTYPE, 0o666), "a device"),
    (entry("opt/pipe", tarfile.FIFOTYPE), "a device or FIFO"),
    (entry("opt/ping", pax={"SCHILY.xattr.security.capability": "\x01\x00\x00\x02"}),
     "extended attributes"),
    (entry("opt/x", pax={"SCHILY.xattr.trusted.overlay.opaque": "y"}), "extended attributes"),
    (entry("opt/theirs", uid=1000), "owned by uid 1000"),
    (entry("opt/group", mode=0o664, gid=33), "group 33 may write it"),
    (entry("opt/open", mode=0o666), "world-writable"),
    (entry("opt/dir/", tarfile.DIRTYPE, 0o777), "world-writable"),
    (entry("opt/hard", tarfile.LNKTYPE, linkname="etc/shadow"), "a hard link"),
    (entry("/etc/cron.d/x"), "leaves the image"),
    (entry("opt/../../etc/x"), "leaves the image"),
])
def test_a_layer_the_shared_store_must_not_hold_is_refused(tmp_path, member, why):
    with pytest.raises(image_import.RefusedImage, match=why):
        check(tmp_path, (entry("opt/", tarfile.DIRTYPE, 0o755), b""), (member, b"x"))


def test_an_entry_below_a_symbolic_link_of_the_layer_is_refused(tmp_path):
    with pytest.raises(image_import.RefusedImage, match="below the symbolic link opt/etc"):
        check(tmp_path, (entry("opt/etc", tarfile.SYMTYPE, 0o777, linkname="/etc"), b""),
              (entry("opt/etc/cron.d/x"), b"x"))


def test_a_line_without_end_is_shown_in_pieces_never_whole():
    pieces: list[int] = []
    run_streamed(["sh", "-c", "head -c 20000000 /dev/zero | tr '\\0' a"],
                 lambda line: pieces.append(len(line)))
    assert sum(pieces) == 20_000_000 and max(pieces) <= MAX_LINE


def test_a_layer_larger_than_the_bound_is_refused(tmp_path):
    with pytest.raises(image_import.RefusedImage, match="larger than image_build_disk"):
        check(tmp_path, (entry("a"), b"x" * 600), (entry("b"), b"x" * 600), limit=1000)


def blob(folder: Path, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (folder / "blobs" / "sha256" / digest[7:]).write_bytes(data)
    return digest


def export(tmp_path: Path, base: list[bytes], own: list[bytes], *,
           config: dict | None = None, media: str = image_import.OCI_LAYER) -> tuple[Path, list[str]]:
    """An OCI layout as podman save --uncompressed --format oci-dir writes it."""
    folder = tmp_path / "export"
    (folder / "blobs" / "sha256").mkdir(parents=True)
    digests = [blob(folder, data) for data in [*base, *own]]
    cfg = {"rootfs": {"type": "layers", "diff_ids": digests}, "config": {"Env": ["A=1"]},
           **(config or {})}
    cfg_digest = blob(folder, json.dumps(cfg).encode())
    manifest = {"schemaVersion": 2, "config": {"mediaType": image_import.OCI_CONFIG,
                                               "digest": cfg_digest},
                "layers": [{"mediaType": media, "digest": d} for d in digests]}
    index = {"schemaVersion": 2, "manifests": [
        {"mediaType": image_import.OCI_MANIFEST,
         "digest": blob(folder, json.dumps(manifest).encode())}]}
    (folder / "index.json").write_text(json.dumps(index))
    return folder, digests[:len(base)]


def test_an_export_is_copied_with_only_the_courses_own_layers(tmp_path):
    own = layer((entry("opt/a.py"), b"x"))
    folder, base = export(tmp_path, [b"base layer"], [own])
    copied = image_import.copy_export(folder, tmp_path / "import", base, 1 << 20)
    names = sorted(p.name for p in (copied.folder / "blobs" / "sha256").iterdir())
    assert hashlib.sha256(own).hexdigest() in names
    assert base[0][7:] not in names, "the base's layers are the store's already"
    assert copied.own == ("sha256:" + hashlib.sha256(own).hexdigest(),)
    assert stat.S_IMODE(os.stat(copied.folder).st_mode) == 0o700


def test_an_export_that_is_not_the_base_plus_layers_is_refused(tmp_path):
    folder, base = export(tmp_path, [b"another base"], [b"own"])
    with pytest.raises(image_import.RefusedImage, match="not built on the base image"):
        image_import.copy_export(folder, tmp_path / "import", ["sha256:" + "0" * 64], 1 << 20)
    folder, base = export(tmp_path / "2", [b"base"], [b"own"],
                          media="application/vnd.oci.image.layer.v1.tar+gzip")
    with pytest.raises(image_import.RefusedImage, match="not uncompressed"):
        image_import.copy_export(folder, tmp_path / "import", base, 1 << 20)
    folder, base = export(tmp_path / "3", [b"base"], [b"own" * 1000])
    with pytest.raises(image_import.RefusedImage, match="larger than"):
        image_import.copy_export(folder, tmp_path / "import", base, 100)


def test_an_export_whose_files_are_links_or_not_what_they_say_is_refused(tmp_path):
    folder, base = export(tmp_path, [b"base"], [b"own"])
    own = next(p for p in (folder / "blobs" / "sha256").iterdir()
               if p.name == hashlib.sha256(b"own").hexdigest())
    own.unlink()
    own.symlink_to("/etc/shadow")
    with pytest.raises(image_import.RefusedImage, match="cannot open"):
        image_import.copy_export(folder, tmp_path / "import", base, 1 << 20)
    own.unlink()
    own.write_bytes(b"not own")
    with pytest.raises(image_import.RefusedImage, match="does not match its digest"):
        image_import.copy_export(folder, tmp_path / "import", base, 1 << 20)
    (folder / "index.json").unlink()
    (folder / "index.json").symlink_to("/dev/zero")
    with pytest.raises(image_import.RefusedImage, match="cannot open"):
        image_import.copy_export(folder, tmp_path / "import", base, 1 << 20)


@pytest.mark.parametrize("config, why", [
    ({"Entrypoint": ["/bin/sh", "x\nExecStartPre=+/bin/touch /root/pwned"]}, "Entrypoint"),
    ({"Env": ["A=1\nB=2"]}, "Env"),
    ({"Cmd": ["a\x1b[2J"]}, "Cmd"),
    ({"WorkingDir": "/w\n"}, "WorkingDir"),
    ({"Env": "A=1"}, "not a list"),
    ({"Env": ["A=" + "x" * 300_000]}, "larger than 256 KiB"),
])
def test_a_configuration_students_units_could_not_carry_is_refused(config, why):
    with pytest.raises(image_import.RefusedImage, match=why):
        image_import.check_config({"config": config})


def test_unit_words_never_write_a_control_character():
    words = unit_words(("x\nExecStartPre=+/bin/touch /pwned", 'a"b', "%h", "$HOME", "\\", "\x1b"))
    assert "\n" not in words and "\x1b" not in words
    assert words == ('"x\\x0aExecStartPre=+/bin/touch /pwned" "a\\"b" "%%h" "$$HOME" "\\\\" '
                     '"\\x1b"')


def test_a_builds_output_reaches_the_admin_without_control_characters():
    assert printable("ok\x1b]0;pwned\x07\tdone\r") == "ok\\x1b]0;pwned\\x07\tdone\\x0d"


def test_the_builders_unit_is_bounded_by_the_server_settings():
    settings = Settings(server=Server(image_build_memory="3G", image_build_time=60,
                                      image_build_disk="5G"))
    build = properties(settings, network=False)
    assert all("=" in p and "@" not in p for p in build), build
    for wanted in ("User=nbunits-builder", "MemoryMax=3G", "RuntimeMaxSec=60s",
                   "LimitFSIZE=5G", "PrivateNetwork=yes", "ProtectSystem=strict",
                   "ProtectHome=yes", "InaccessiblePaths=-/etc/nbunits",
                   "BindPaths=/var/lib/nbunits/build/builder"):
        assert wanted in build, wanted
    assert "PrivateNetwork=no" in properties(settings, network=True)
    with pytest.raises(NbunitsError, match="image_build_disk"):
        Server(image_build_disk="infinity")
