"""The walls and the single places: what the dispatcher loads, names vs nginx,
templating, TOML writing, settings, running programs."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from nbunits.config import ConfigError, CourseConfig, CourseSecrets, load_settings
from nbunits.files import TemplateError, fill
from nbunits.names import (
    CAPABILITY_RE,
    USER_RE,
    InvalidName,
    StudentUnits,
    check_course,
    parse_unit,
    user_for,
)
from nbunits.run import CommandError, run, run_async

REPO = Path(__file__).resolve().parents[2]
PRIVILEGED = ("nbunits.provision", "nbunits.copies", "nbunits.users", "nbunits.notebooks",
              "nbunits.helper", "nbunits.courses", "nbformat", "jsonschema")


def test_the_dispatcher_loads_no_privileged_module():
    out = subprocess.run(
        [sys.executable, "-c", "import sys, nbunits.dispatcher.app, nbunits.dispatcher.__main__;"
         " print('\\n'.join(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True, cwd=REPO).stdout.split()
    assert "nbunits.protocol" in out  # the shared part is there
    loaded = [m for m in out if m.split(".")[0] in ("nbformat", "jsonschema")
              or m in PRIVILEGED]
    assert loaded == []


# --- names.py and nginx agree ------------------------------------------------------

def nginx_location_regex() -> re.Pattern[str]:
    text = (REPO / "nginx" / "nbunits-locations.conf").read_text()
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
