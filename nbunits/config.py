"""Configuration: loaded once into frozen dataclasses and passed explicitly.

Two kinds of files, both TOML:
- /etc/nbunits/nbunits.toml: where things live (optional; defaults below);
- /etc/nbunits/courses/<course>.toml: one course's settings, written by
  `nbunits course add`, read by the generator, the helper and the dispatcher.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import NbunitsError
from .names import StudentUnits, check_course

DEFAULT_CONFIG = Path("/etc/nbunits/nbunits.toml")


class ConfigError(NbunitsError):
    pass


@dataclass(frozen=True)
class Settings:
    """Where nbunits keeps things. The unit files in units/ use these same paths."""

    etc_dir: Path = Path("/etc/nbunits")
    state_dir: Path = Path("/var/lib/nbunits")
    run_dir: Path = Path("/run/nbunits")
    home_base: Path = Path("/home")
    image_store: Path = Path("/var/lib/nbunits/images")

    @property
    def courses_conf_dir(self) -> Path:
        return self.etc_dir / "courses"

    @property
    def masters_dir(self) -> Path:
        return self.state_dir / "courses"

    @property
    def tokens_dir(self) -> Path:
        return self.state_dir / "tokens"

    @property
    def students_dir(self) -> Path:
        return self.state_dir / "students"

    @property
    def copies_dir(self) -> Path:
        return self.state_dir / "copies"

    @property
    def git_dir(self) -> Path:
        return self.state_dir / "git"

    @property
    def helper_socket(self) -> Path:
        return self.run_dir / "helper.sock"

    def course_file(self, course: str) -> Path:
        return self.courses_conf_dir / f"{check_course(course)}.toml"

    def token_file(self, units: StudentUnits) -> Path:
        return self.tokens_dir / units.course / f"{units.user}.env"

    def copies_file(self, units: StudentUnits) -> Path:
        """The manifest of a student's copies: which master each was made from."""
        return self.copies_dir / units.course / f"{units.user}.json"

    def front_socket(self, units: StudentUnits) -> Path:
        return self.run_dir / "front" / units.course / f"{units.user}.sock"

    def home(self, user: str) -> Path:
        return self.home_base / user


def load_settings(path: Path = DEFAULT_CONFIG) -> Settings:
    data = _read_toml(path) if path.exists() else {}
    section = data.get("paths", {})
    known = {f.name for f in dataclasses.fields(Settings)}
    unknown = set(section) - known
    if unknown:
        raise ConfigError("bad_config", f"{path}: unknown settings {sorted(unknown)}")
    return Settings(**{k: Path(v) for k, v in section.items()})


_SIZE_RE = re.compile(r"\d+[KMGT]?|infinity")
_PERCENT_RE = re.compile(r"\d+%")
NETWORKS = ("none", "slirp4netns")


@dataclass(frozen=True)
class CourseConfig:
    """One course's settings. Defaults suit a small course on a small server."""

    name: str
    source: Path  # the folder of master notebooks
    image: str = "localhost/nbunits/jupyter:latest"
    title: str = ""
    # Seconds without a connection before the proxy exits (and the container stops).
    proxy_idle_timeout: int = 120
    # Seconds without activity before Jupyter shuts itself down (open tabs included).
    jupyter_idle_timeout: int = 3600
    # Seconds an idle kernel lives before Jupyter culls it.
    kernel_idle_timeout: int = 1800
    # Hard cap on a container's lifetime, in seconds.
    max_lifetime: int = 8 * 3600
    memory_max: str = "1G"
    cpu_quota: str = "100%"
    tasks_max: int = 512
    course_memory_max: str = "infinity"
    network: str = "none"
    # Where the masters come from, for `nbunits course update`: a git URL (and
    # branch; empty: the remote's default) or a folder.
    git_url: str = ""
    git_branch: str = ""
    origin_dir: str = ""

    def __post_init__(self) -> None:
        check_course(self.name)
        problems = []
        if not _SIZE_RE.fullmatch(self.memory_max):
            problems.append(f"memory_max={self.memory_max!r} (e.g. 1G)")
        if not _SIZE_RE.fullmatch(self.course_memory_max):
            problems.append(f"course_memory_max={self.course_memory_max!r} (e.g. 16G)")
        if not _PERCENT_RE.fullmatch(self.cpu_quota):
            problems.append(f"cpu_quota={self.cpu_quota!r} (e.g. 100%)")
        if self.network not in NETWORKS:
            problems.append(f"network={self.network!r} (one of {', '.join(NETWORKS)})")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/:@-]*", self.image):
            problems.append(f"image={self.image!r}")
        if self.git_url.startswith("-") or any(c.isspace() for c in self.git_url):
            problems.append(f"git_url={self.git_url!r}")
        if self.git_branch and not re.fullmatch(r"[A-Za-z0-9._/][A-Za-z0-9._/-]*", self.git_branch):
            problems.append(f"git_branch={self.git_branch!r}")
        for key in ("proxy_idle_timeout", "jupyter_idle_timeout", "kernel_idle_timeout",
                    "max_lifetime", "tasks_max"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) <= 0:
                problems.append(f"{key} must be a positive whole number")
        if problems:
            raise ConfigError("bad_course_config",
                              f"course {self.name}: invalid " + "; ".join(problems))

    def to_toml(self) -> str:
        lines = ["# nbunits course settings; apply with: systemctl daemon-reload", "[course]"]
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "name":
                continue
            if isinstance(value, int):
                lines.append(f"{field.name} = {value}")
            else:
                lines.append(f"{field.name} = {_toml_string(str(value))}")
        return "\n".join(lines) + "\n"


def _toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def load_course(settings: Settings, course: str) -> CourseConfig:
    path = settings.course_file(course)
    if not path.is_file():
        raise ConfigError("unknown_course", f"unknown course {course!r}",
                          hint="nbunits course list shows the courses")
    return course_from_toml(course, _read_toml(path))


def course_from_toml(course: str, data: dict[str, Any]) -> CourseConfig:
    section = dict(data.get("course", {}))
    known = {f.name for f in dataclasses.fields(CourseConfig)} - {"name"}
    unknown = set(section) - known
    if unknown:
        raise ConfigError("bad_course_config", f"course {course}: unknown settings {sorted(unknown)}")
    if "source" not in section:
        raise ConfigError("bad_course_config", f"course {course}: 'source' is missing")
    section["source"] = Path(section["source"])
    try:
        return CourseConfig(name=course, **section)
    except TypeError as exc:
        raise ConfigError("bad_course_config", f"course {course}: {exc}") from exc


def list_courses(settings: Settings) -> list[str]:
    if not settings.courses_conf_dir.is_dir():
        return []
    return sorted(p.stem for p in settings.courses_conf_dir.glob("*.toml"))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("bad_config", f"{path}: {exc}") from exc
