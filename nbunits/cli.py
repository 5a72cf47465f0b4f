"""The `nbunits` command, for admins: install, courses, students, images."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import NoReturn

from .config import CourseConfig, Settings, list_courses, load_course, load_settings
from .errors import NbunitsError
from .names import check_course, user_for
from .notebooks import NotebookError, find_masters, validate
from .run import is_root, run
from .systemd import daemon_reload, fill, static_units, systemctl
from .users import lookup

logger = logging.getLogger("nbunits")

VENV = Path(sys.prefix)
SYSTEMD_DIR = Path("/etc/systemd/system")
GENERATOR_LINK = Path("/etc/systemd/system-generators/nbunits-generator")
NGINX_DIR = Path("/etc/nginx")


def die(message: str, hint: str | None = None) -> NoReturn:
    print(f"nbunits: error: {message}", file=sys.stderr)
    if hint:
        print(f"nbunits: hint: {hint}", file=sys.stderr)
    sys.exit(1)


def step(message: str) -> None:
    print(f"==> {message}", flush=True)


def data_file(*parts: str) -> str:
    return (resources.files("nbunits") / "data").joinpath(*parts).read_text()


def write_file(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace a file atomically (readers never see half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


# --- install ---------------------------------------------------------------

def cmd_install(settings: Settings, args: argparse.Namespace) -> None:
    require_root()
    step("system user nbunits (runs the dispatcher)")
    if run(["getent", "passwd", "nbunits"], check=False).returncode != 0:
        run(["useradd", "--system", "--user-group", "--no-create-home",
             "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", "nbunits"])
    step(f"folders under {settings.etc_dir} and {settings.state_dir}")
    for path, mode in ((settings.etc_dir, 0o755), (settings.courses_conf_dir, 0o755),
                       (settings.state_dir, 0o755), (settings.masters_dir, 0o755),
                       (settings.tokens_dir, 0o700), (settings.students_dir, 0o700)):
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, mode)
    write_file(settings.etc_dir / "storage.conf",
               fill(data_file("images", "storage.conf"), {"IMAGE_STORE": str(settings.image_store)}))

    step(f"units in {SYSTEMD_DIR}, generator {GENERATOR_LINK}")
    for unit in static_units():
        write_file(SYSTEMD_DIR / unit.name, unit.read_text())
    GENERATOR_LINK.parent.mkdir(parents=True, exist_ok=True)
    GENERATOR_LINK.unlink(missing_ok=True)
    GENERATOR_LINK.symlink_to(VENV / "bin" / "nbunits-generator")

    if not args.no_nginx:
        install_nginx(args.listen)
    step("systemctl daemon-reload; enable the dispatcher and helper sockets")
    daemon_reload()
    systemctl("enable", "--now", "nbunits-dispatcher.socket", "nbunits-helper.socket")
    # A running dispatcher or helper keeps old code until restarted.
    systemctl("try-restart", "nbunits-dispatcher.service", "nbunits-helper.service")
    print("nbunits is installed. Next: nbunits course add NAME --dir FOLDER")


def install_nginx(listen: Sequence[str]) -> None:
    step(f"nginx configuration in {NGINX_DIR}")
    write_file(NGINX_DIR / "conf.d" / "nbunits.conf", data_file("nginx", "nbunits-http.conf"))
    write_file(NGINX_DIR / "snippets" / "nbunits-locations.conf",
               data_file("nginx", "nbunits-locations.conf"))
    if listen:
        lines = "\n".join(f"    listen {address};" for address in listen)
        write_file(NGINX_DIR / "sites-enabled" / "nbunits",
                   fill(data_file("nginx", "nbunits-site.conf"), {"LISTEN": lines}))
    run(["nginx", "-t", "-q"])
    systemctl("enable", "nginx.service")
    systemctl("reload-or-restart", "nginx.service")


# --- courses ---------------------------------------------------------------

def cmd_course_add(settings: Settings, args: argparse.Namespace) -> None:
    require_root()
    name = check_course(args.name)
    source = Path(args.dir).resolve()
    if not source.is_dir():
        die(f"{args.dir} is not a folder")
    if settings.course_file(name).exists():
        die(f"course {name} exists already", hint=f"nbunits course show {name}")
    # Checks the settings before anything is written.
    settings_kwargs = {k: v for k, v in (("image", args.image),) if v}
    CourseConfig(name=name, source=settings.masters_dir / name, **settings_kwargs)

    step(f"checking the notebooks in {source}")
    broken = check_masters(source)
    target = settings.masters_dir / name
    step(f"publishing into {target}")
    publish(source, target, skip=broken)
    config = CourseConfig(name=name, source=target, **settings_kwargs)
    write_file(settings.course_file(name), config.to_toml())
    step("systemctl daemon-reload (renders the course's units)")
    daemon_reload()
    published = [nb for nb in find_masters(target)]
    print(f"course {name}: {len(published)} notebook(s) published"
          + (f", {len(broken)} skipped" if broken else ""))
    for notebook in published:
        print(f"  /ipythonExercice/{name}/{notebook}/<student id>")


def check_masters(source: Path) -> set[str]:
    broken = set()
    for notebook in find_masters(source):
        try:
            validate((source / notebook).read_bytes(), notebook)
        except NotebookError as exc:
            print(f"  skipped: {exc.message}", file=sys.stderr)
            broken.add(notebook)
    return broken


def publish(source: Path, target: Path, skip: set[str]) -> None:
    """Copy the course folder (root-owned, world-readable), swapping it in whole."""
    staging = target.with_name(f".{target.name}.new")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging, symlinks=False,
                    ignore=shutil.ignore_patterns(".git", ".*"))
    for notebook in skip:
        (staging / notebook).unlink()
    for path in [staging, *staging.rglob("*")]:
        os.chown(path, 0, 0, follow_symlinks=False)
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        staging.rename(target)
        shutil.rmtree(old)
    else:
        staging.rename(target)


def cmd_course_list(settings: Settings, args: argparse.Namespace) -> None:
    for name in list_courses(settings):
        try:
            course = load_course(settings, name)
            count = sum(1 for _ in find_masters(course.source))
            print(f"{name}\t{count} notebook(s)\t{course.source}")
        except NbunitsError as exc:
            print(f"{name}\tBROKEN: {exc}")


def cmd_course_show(settings: Settings, args: argparse.Namespace) -> None:
    course = load_course(settings, args.name)
    print(f"# {settings.course_file(course.name)}")
    print(course.to_toml(), end="")
    print("# notebooks:")
    for notebook in find_masters(course.source):
        print(f"#   {notebook}")


# --- students --------------------------------------------------------------

def cmd_student_find(settings: Settings, args: argparse.Namespace) -> None:
    user = user_for(args.id)
    student = lookup(settings, args.id)
    state = f"home {student.home}" if student else "not provisioned yet"
    print(f"{user}\t{state}")


# --- images ----------------------------------------------------------------

def cmd_image_build(settings: Settings, args: argparse.Namespace) -> None:
    require_root()
    script = resources.files("nbunits") / "data" / "images" / "build"
    env = {**os.environ, "NBUNITS_IMAGE_STORE": str(settings.image_store)}
    argv = ["bash", str(script), *(["--force"] if args.force else [])]
    os.execvpe("bash", argv, env)


# --- plumbing --------------------------------------------------------------

def require_root() -> None:
    if not is_root():
        die("this command changes the system and must run as root", hint="use sudo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nbunits", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(subparsers: argparse._SubParsersAction, name: str, func: Callable, help: str
            ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = subparsers.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    p = add(sub, "install", cmd_install, "install units, configuration and nginx snippets")
    p.add_argument("--listen", action="append", default=[], metavar="ADDR",
                   help="also enable an nginx site listening on ADDR (e.g. 80, 127.0.0.1:8080)")
    p.add_argument("--no-nginx", action="store_true", help="leave nginx alone")

    course = sub.add_parser("course", help="publish and inspect courses").add_subparsers(
        dest="course_command", required=True)
    p = add(course, "add", cmd_course_add, "publish a course from a folder of notebooks")
    p.add_argument("name")
    p.add_argument("--dir", required=True, help="folder with the master notebooks")
    p.add_argument("--image", help="container image (default localhost/nbunits/jupyter:latest)")
    add(course, "list", cmd_course_list, "list the courses")
    p = add(course, "show", cmd_course_show, "show a course's settings and notebooks")
    p.add_argument("name")

    student = sub.add_parser("student", help="find students").add_subparsers(
        dest="student_command", required=True)
    p = add(student, "find", cmd_student_find, "the Linux user of an edX student id")
    p.add_argument("id")

    image = sub.add_parser("image", help="build images").add_subparsers(
        dest="image_command", required=True)
    p = add(image, "build", cmd_image_build, "build the Jupyter image into the shared store")
    p.add_argument("--force", action="store_true", help="rebuild even if up to date")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        args.func(load_settings(), args)
    except NbunitsError as exc:
        if args.debug:
            raise
        die(exc.message, exc.hint)


if __name__ == "__main__":
    main()
