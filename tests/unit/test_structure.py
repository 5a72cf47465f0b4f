"""The walls and the single places: what each side loads, names vs nginx, where unit
names, URLs, state paths, systemctl calls and error codes are made, templating, TOML
writing, settings, running programs."""

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from nbunits.core.config import ConfigError, CourseConfig, CourseSecrets, load_settings
from nbunits.core.files import TemplateError, fill
from nbunits.core.names import (
    CAPABILITY_RE,
    USER_RE,
    InvalidName,
    StudentUnits,
    check_course,
    parse_unit,
    user_for,
)
from nbunits.core.run import CommandError, run, run_async

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "nbunits"
SIDES = ("core", "dispatcher", "helper", "generator", "admin")


def loaded_by(*modules: str) -> list[str]:
    """Every module a fresh interpreter has loaded after importing `modules`."""
    imports = ", ".join(modules)
    return subprocess.run(
        [sys.executable, "-c", f"import sys, {imports}; print('\\n'.join(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True, cwd=REPO).stdout.split()


def test_the_dispatcher_loads_no_privileged_module():
    out = loaded_by("nbunits.dispatcher.app", "nbunits.dispatcher.__main__")
    assert "nbunits.core.protocol" in out  # the shared part is there
    loaded = [m for m in out if m.split(".")[0] in ("nbformat", "jsonschema", "jupytext")
              or m.startswith(("nbunits.helper", "nbunits.admin", "nbunits.generator"))
              or m in ("nbunits.core.run", "nbunits.core.systemctl")]
    assert loaded == []


def test_the_generator_loads_the_core_only_and_not_the_journal():
    out = loaded_by("nbunits.generator.main")
    loaded = [m for m in out if m.split(".")[0] in ("systemd", "aiohttp", "nbformat")
              or m.startswith(("nbunits.helper", "nbunits.admin", "nbunits.dispatcher"))]
    assert loaded == []


def test_roots_helper_and_the_cli_load_no_text_notebook_reader():
    """jupytext parses a teacher's text at `course add/update` only, in a child process
    (admin/text_notebooks.py): the long-running root helper never loads it, and the
    CLI's other commands do without it."""
    assert [m for m in loaded_by("nbunits.helper.service", "nbunits.admin.cli")
            if m.split(".")[0] in ("jupytext", "yaml")] == []


def test_each_side_says_who_runs_it_and_what_it_may_import():
    for side in SIDES:
        doc = ast.get_docstring(ast.parse((PACKAGE / side / "__init__.py").read_text())) or ""
        assert "import" in doc.lower(), f"nbunits/{side}/__init__.py: say what it may import"
        assert side == "core" or "Runs as:" in doc, f"nbunits/{side}: say who runs it"
    top = (PACKAGE / "__init__.py").read_text()
    assert all(f"{side}/" in top for side in SIDES)
    # Nothing outside the sides: a new module has to choose its side.
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == ["__init__.py"]


# --- the single places, checked in the code itself -----------------------------------

def modules(*skip: str) -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text())) for p in sorted(PACKAGE.rglob("*.py"))
            if "data" not in p.relative_to(PACKAGE).parts
            and str(p.relative_to(PACKAGE)) not in skip]


def template(node: ast.JoinedStr) -> str:
    """An f-string with each value as {}."""
    return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)


UNIT_NAME_RE = re.compile(r"nbunits-.*(@|\.(service|socket|slice|mount|timer))")
URL_PARTS = ("/nb/", "/ipythonExercice/", "/_nbunits/", "/staff/", "/shared/")


def test_unit_names_and_urls_are_made_in_names_py_only():
    found = []
    for path, tree in modules("core/names.py"):
        for node in ast.walk(tree):
            if isinstance(node, ast.JoinedStr) and "{}" in (text := template(node)) and (
                    UNIT_NAME_RE.search(text) or any(part in text for part in URL_PARTS)):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {text}")
    assert found == [], "build these with nbunits/core/names.py"


STATE_ROOTS = ("/var/lib/nbunits", "/etc/nbunits", "/run/nbunits")


def docstrings(tree: ast.Module) -> set[int]:
    return {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)}


def test_state_paths_are_made_in_config_py_only():
    found = []
    for path, tree in modules("core/config.py"):
        skip = docstrings(tree)
        for node in ast.walk(tree):
            # settings.<something>_dir / "x": a path under nbunits' folders, made here.
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) \
                    and isinstance(node.left, ast.Attribute) and node.left.attr.endswith("_dir"):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.left.attr} / ...")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and id(node) not in skip and node.value.startswith(STATE_ROOTS):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value[:60]!r}")
    # The lock unit's step starts in ~50 ms: it names its one folder without loading
    # the configuration, and this keeps it the same as Settings'.
    from nbunits.core.config import Settings
    from nbunits.helper import hostlock
    assert str(Settings().locks_dir) == hostlock.LOCKS
    found = [f for f in found if f != "nbunits/helper/hostlock.py:33: '/var/lib/nbunits/locks'"]
    assert found == [], "add a Settings property or method (nbunits/core/config.py)"


def test_systemctl_is_called_through_one_wrapper():
    found = []
    for path, tree in modules("core/systemctl.py"):
        for node in ast.walk(tree):
            if isinstance(node, ast.List) and node.elts and isinstance(node.elts[0], ast.Constant) \
                    and node.elts[0].value in ("systemctl", "/bin/systemctl", "/usr/bin/systemctl"):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert found == [], "call nbunits.core.systemctl.systemctl(_async)"


def test_error_codes_come_from_the_registry():
    from nbunits.core.errors import MEANINGS, Code
    assert set(MEANINGS) == set(Code)
    found = []
    for path, tree in modules("core/errors.py"):
        for node in ast.walk(tree):
            # SomeError("a_code", ...), or code="a_code"
            if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str) and re.fullmatch(r"[a-z]+(_[a-z]+)+", node.args[0].value) \
                    and isinstance(node.func, ast.Name | ast.Attribute) \
                    and (getattr(node.func, "id", "") or getattr(node.func, "attr", "")).endswith(("Error", "Busy", "InvalidName", "UnknownKey")):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.args[0].value}")
            found += [f"{path.relative_to(REPO)}:{node.lineno}: code={kw.value.value!r}"
                      for kw in getattr(node, "keywords", []) if kw.arg in ("code", "ERROR_CODE")
                      and isinstance(kw.value, ast.Constant)]
            # exc.code == "a_code", exc.code.startswith("unknown_")
            if isinstance(node, ast.Compare) and isinstance(node.left, ast.Attribute) \
                    and node.left.attr == "code" and any(isinstance(c, ast.Constant) for c in node.comparators):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: compares a code to a string")
            if isinstance(node, ast.Attribute) and node.attr == "startswith" \
                    and isinstance(node.value, ast.Attribute) and node.value.attr == "code":
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: matches a code by prefix")
    assert found == [], "use nbunits.core.errors.Code (and MEANINGS, UNKNOWN)"


# --- names.py and nginx agree ------------------------------------------------------

def nginx_location_regex() -> re.Pattern[str]:
    text = (REPO / "nginx" / "nbunits-students.conf").read_text()
    m = re.search(r'location ~ "(\^/nb/[^"]+)"', text)
    assert m, "the /nb/ location's regex"
    # nginx (PCRE) named groups (?<n>...) are Python's (?P<n>...).
    return re.compile(m[1].replace("(?<", "(?P<"))


GOOD_COURSES = ["demo", "a", "python3-s2", "x_1", "a" * 32]
BAD_COURSES = ["", "-a", "a-", "A", "a.b", "a" * 33, "é", "a/b"]


@pytest.mark.parametrize("course", GOOD_COURSES + BAD_COURSES)
def test_nginx_reaches_exactly_the_units_names_py_makes(course):
    regex = nginx_location_regex()
    user, cap = user_for("s1"), "A" * 21 + "_.3.9999999999"
    try:
        prefix = StudentUnits(course, user).jupyter_prefix(cap)
    except InvalidName:
        # names.py refuses it: nginx must not route it to a student socket either.
        assert not regex.match(f"/nb/{course}/{user}/{cap}/")
        return
    m = regex.match(prefix + "api")
    assert m and m["nbunits_course"] == course and m["nbunits_user"] == user
    assert m["nbunits_cap"] == cap


def test_nginx_refuses_users_and_capabilities_names_py_refuses():
    regex = nginx_location_regex()
    user = user_for("s1")
    for bad_user in ("nb" + "a" * 15, "nb" + "1" * 16, "root", user.upper()):
        assert not USER_RE.fullmatch(bad_user)
        assert not regex.match(f"/nb/demo/{bad_user}/{'A' * 22}.0.1/")
    for bad_cap in ("A" * 21, "A" * 21 + "=", "A" * 21 + "/", "A" * 22, "A" * 22 + ".0",
                    "A" * 22 + ".0.", "A" * 22 + ".x.1", "A" * 22 + ".1." + "9" * 12,
                    "A" * 22 + "." + "1" * 10 + ".1"):
        assert not CAPABILITY_RE.fullmatch(bad_cap)
        assert not regex.match(f"/nb/demo/{user}/{bad_cap}/")


def test_unit_names_parse_back_and_proxies_are_not_courses():
    units = StudentUnits("demo", user_for("s1"))
    assert parse_unit(units.socket).kind == "socket"
    assert parse_unit(units.container).kind == "container"
    proxy = parse_unit(units.proxy)
    assert proxy.kind == "proxy" and proxy.units == units  # not a course "demo-proxy"
    assert parse_unit("nbunits-dispatcher.service") is None
    assert parse_unit("nbunits-demo-proxy@x.socket") is None
    assert parse_unit(f"nbunits-demo-proxy@{units.user}.socket") is None
    with pytest.raises(InvalidName):
        check_course("demo-proxy")


# --- templates and TOML ------------------------------------------------------------

def test_fill_fails_on_a_leftover_placeholder():
    assert fill("a=@A@ b=@system-service c@d", {"A": "1"}) == "a=1 b=@system-service c@d"
    with pytest.raises(TemplateError, match="@B@"):
        fill("a=@A@ b=@B@", {"A": "1"})


def test_a_title_with_a_newline_and_quotes_still_loads():
    config = CourseConfig(name="demo", source=Path("/srv/demo"),
                          title='Week 1\n"Loops" \\ and \t tabs',
                          lti_notebooks={'link "1"': "a.ipynb"})
    data = tomllib.loads(config.to_toml())
    assert data["course"]["title"] == config.title
    assert data["course"]["lti_notebooks"] == {'link "1"': "a.ipynb"}
    secrets = CourseSecrets(lti11_secret='s"\n\\')
    assert tomllib.loads(secrets.to_toml())["secrets"]["lti11_secret"] == secrets.lti11_secret


def test_the_unusable_paths_settings_are_refused(tmp_path):
    path = tmp_path / "nbunits.toml"
    assert load_settings(path).etc_dir == Path("/etc/nbunits")  # no file: the defaults
    path.write_text('[paths]\nstate_dir = "/srv/nbunits"\n')
    with pytest.raises(ConfigError, match=r"\[paths\]"):
        load_settings(path)


# --- running programs --------------------------------------------------------------

def test_a_missing_program_or_a_timeout_is_a_command_error():
    with pytest.raises(CommandError) as missing:
        run(["/nonexistent/program", "x"])
    assert missing.value.code == "command_missing"
    assert "/nonexistent/program x could not be started" in missing.value.message
    with pytest.raises(CommandError) as slow:
        run(["sleep", "5"], timeout=0.2)
    assert slow.value.code == "command_timeout" and "sleep 5" in slow.value.message
    import asyncio
    with pytest.raises(CommandError) as slow_async:
        asyncio.run(run_async(["sleep", "5"], timeout=0.2))
    assert slow_async.value.code == "command_timeout"
    with pytest.raises(CommandError) as missing_async:
        asyncio.run(run_async(["/nonexistent/program"]))
    assert missing_async.value.code == "command_missing"


def test_every_command_the_package_installs_resolves():
    """pyproject.toml's [project.scripts]: each is an importable function."""
    import importlib
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    for command, target in scripts.items():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function, None)), command


def test_shipped_files_are_found_through_core_data():
    """units/, nginx/, images/, cockpit/ are read through nbunits/core/data.py, never
    relative to a module's own file (modules move; the package data does not)."""
    found = [str(p.relative_to(REPO)) for p, tree in modules("core/data.py")
             if any(isinstance(n, ast.Name) and n.id == "__file__" for n in ast.walk(tree))]
    assert found == []
