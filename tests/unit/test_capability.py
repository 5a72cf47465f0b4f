"""Capabilities: generations (revocation), expiry, nginx's revoked map, the wake
path's own check, and the start-limit rule of the wake path."""

import json
import logging
import re
import runpy
from pathlib import Path

import pytest

from nbunits.admin.seccomp import CLONE_NEWUSER, without_subvolumes, without_user_namespaces
from nbunits.core import i18n
from nbunits.core.config import ConfigError, CourseConfig, Server, Settings
from nbunits.core.names import CAPABILITY_RE, StudentUnits, user_for
from nbunits.helper import capability as caps
from nbunits.helper.provision import parse_usec, reset_wait

REPO = Path(__file__).resolve().parents[2]
UNITS = StudentUnits("demo", user_for("s1"))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = Settings(etc_dir=tmp_path / "etc", state_dir=tmp_path / "state")
    settings.etc_dir.mkdir()
    settings.capability_secret.write_text("s3cret\n")
    return settings


def course(**values: object) -> CourseConfig:
    return CourseConfig(name="demo", source=Path("/srv/demo"), **values)  # type: ignore[arg-type]


def test_a_revoked_generation_is_no_longer_current_and_goes_into_nginx_map(settings):
    first = caps.current_grant(settings, course(), UNITS, running=False)
    old = caps.capability("s3cret", UNITS, first)
    assert CAPABILITY_RE.fullmatch(old) and old.endswith(".0.9999999999")
    assert caps.is_current(settings, UNITS, old)
    new_grant = caps.revoke(settings, course(), UNITS)
    new = caps.capability("s3cret", UNITS, new_grant)
    assert not caps.is_current(settings, UNITS, old) and caps.is_current(settings, UNITS, new)
    assert f'"demo/{UNITS.user}/0" 1;' in caps.revoked_map(settings)
    assert f'"demo/{UNITS.user}/1"' not in caps.revoked_map(settings)
    # Another student's capability, a forged one, or none at all: never current.
    other = StudentUnits("demo", user_for("s2"))
    assert not caps.is_current(settings, other, caps.capability("s3cret", other))
    assert not caps.is_current(settings, UNITS, "A" * 22 + ".1.9999999999")
    assert not caps.is_current(settings, UNITS, new + "x")


def test_links_expire_but_never_under_a_running_server(settings):
    config = course(link_lifetime=8 * 3600 + 7200)
    grant = caps.current_grant(settings, config, UNITS, running=False, now=1000)
    assert grant.expires == 1000 + 8 * 3600 + 7200
    # Still long enough for a whole server run: the same link.
    assert caps.current_grant(settings, config, UNITS, running=False, now=2000) == grant
    # Not any more, and the server is stopped: a new expiry.
    later = caps.current_grant(settings, config, UNITS, running=False, now=9000)
    assert later.expires == 9000 + 8 * 3600 + 7200
    # While it runs, the link it started with, whatever the time.
    assert caps.current_grant(settings, config, UNITS, running=True, now=99999) == later
    cap = caps.capability("s3cret", UNITS, later)
    assert caps.is_current(settings, UNITS, cap, now=later.expires)
    assert not caps.is_current(settings, UNITS, cap, now=later.expires + 1)


def test_link_lifetime_must_outlast_a_server_run():
    with pytest.raises(ConfigError, match="link_lifetime"):
        course(link_lifetime=60)
    with pytest.raises(ConfigError, match="disk_quota"):
        course(disk_quota="lots")
    with pytest.raises(ConfigError, match="terminals"):
        course(terminals="no")


def test_terminals_are_a_course_setting_in_jupyters_config(settings):
    for terminals in (True, False):
        config = json.loads(caps.jupyter_config(course(terminals=terminals), UNITS,
                                                "A" * 22 + ".0.1", settings.server))
        assert config["ServerApp"]["terminals_enabled"] is terminals


def test_the_interface_is_a_course_setting_and_the_server_s_root_opens_it(settings):
    """Notebook 7's app starts the server and hands its default_url to ServerApp."""
    for interface, root in (("notebook", "/tree"), ("lab", "/lab")):
        config = json.loads(caps.jupyter_config(course(interface=interface), UNITS,
                                                "A" * 22 + ".0.1", settings.server))
        assert config["JupyterNotebookApp"]["default_url"] == root
    assert course().interface == "notebook"
    for bad in ("classic", "Lab", "", None):
        with pytest.raises(ConfigError, match="interface"):
            course(interface=bad)


def test_a_launch_s_link_follows_the_course_s_interface():
    from nbunits.core.names import Target
    from nbunits.helper.provision import Provisioned

    target, cap = Target("demo", "0" * 32, "w1/a.ipynb"), "A" * 22 + ".0.1"
    prefix = f"/nb/demo/{target.user}/{cap}/"
    assert Provisioned(target, cap, False, False).url == prefix + "notebooks/w1/a.ipynb"
    assert Provisioned(target, cap, False, False, interface="lab").url == \
        prefix + "lab/tree/w1/a.ipynb"


def test_the_notebook_page_is_told_the_course_s_stops(settings):
    """What the Course extension reads for its stop warnings (images/extension/src/stopping.ts)."""
    config = json.loads(caps.jupyter_config(
        course(max_lifetime=600, jupyter_idle_timeout=120, kernel_idle_timeout=60, stop_warning=30),
        UNITS, "A" * 22 + ".0.1", settings.server))
    page = config["ServerApp"]["tornado_settings"]["page_config_data"]
    assert {k: v for k, v in page.items() if k.startswith("nbunits") and "Text" not in k
            and "Language" not in k} == {
        "nbunitsMaxLifetime": "600", "nbunitsIdleTimeout": "120",
        "nbunitsKernelIdleTimeout": "60", "nbunitsStopWarning": "30"}


def test_the_notebook_page_is_told_the_course_menu_s_words_in_the_student_s_language(settings):
    """The Course extension's strings (images/extension/src/words.ts), from the catalogs:
    all of the lab.* keys, in the student's language; English for one nbunits lacks."""
    def page(language):
        config = json.loads(caps.jupyter_config(course(), UNITS, "A" * 22 + ".0.1",
                                                settings.server, language))
        data = config["ServerApp"]["tornado_settings"]["page_config_data"]
        return data["nbunitsLanguage"], json.loads(data["nbunitsText"])

    language, words = page("fr")
    assert language == "fr"
    assert words["lab.menu.course"] == "Cours"
    assert words["lab.share.title"] == "Partagé : une version statique"
    assert words["lab.reset.question"] == \
        "Remplacer votre copie de {name} par la version actuelle du cours ?"
    english = {k: v for k, v in i18n.catalog("en").items() if k.startswith("lab.")}
    assert set(words) == set(english) and len(english) > 30
    assert page("xx") == ("en", english)
    assert page("en") == ("en", english)


def test_jupyter_answers_the_server_s_names_or_only_the_student_s_own_host():
    names = ("notebooks.example.org", "nb.example.org")
    for server, hosts in ((Server(names=names), list(names)),
                          (Server(names=names, student_domain="nb.example.org"),
                           [f"{UNITS.user}.nb.example.org"])):
        config = json.loads(caps.jupyter_config(course(), UNITS, "A" * 22 + ".0.1", server))
        assert config["ServerApp"]["local_hostnames"] == hosts


def show(state: str, changed_s: float, interval: str = "1min") -> str:
    return (f"Id=x\nActiveState={state}\nStateChangeTimestampMonotonic={int(changed_s * 1e6)}\n"
            f"StartLimitIntervalUSec={interval}\n")


def test_a_unit_is_reset_only_once_its_start_limit_interval_has_passed():
    assert reset_wait(show("inactive", 100), now=101) == 0
    assert reset_wait(show("failed", 100), now=101) == 59
    assert reset_wait(show("failed", 100), now=161) == 0
    blocks = "\n".join([show("active", 0), show("failed", 100, "2min 30s"), show("failed", 150)])
    assert reset_wait(blocks, now=200) == 50
    assert parse_usec("1min 30s") == 90 and parse_usec("500ms") == 0.5


def test_the_seccomp_profile_refuses_new_user_namespaces_only():
    default = json.loads(Path("/usr/share/containers/seccomp.json").read_text()) \
        if Path("/usr/share/containers/seccomp.json").exists() else {
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["read", "clone", "clone3", "unshare"],
                          "action": "SCMP_ACT_ALLOW"}]}
    profile = without_user_namespaces(default)
    allowed = [r for r in profile["syscalls"] if r["action"] == "SCMP_ACT_ALLOW"]
    assert not any("clone3" in r["names"] for r in allowed)
    for name in ("clone", "unshare"):
        rules = [r for r in profile["syscalls"] if name in r["names"]]
        assert all(r.get("args") for r in rules), rules  # never allowed unconditionally
        refuse = [r for r in rules if r["action"] == "SCMP_ACT_ERRNO"]
        assert refuse and refuse[0]["args"][0]["valueTwo"] == CLONE_NEWUSER
    assert any("read" in r["names"] for r in allowed)


def test_the_seccomp_profiles_refuse_btrfs_subvolumes_and_snapshots_only():
    default = {"defaultAction": "SCMP_ACT_ERRNO",
               "syscalls": [{"names": ["read", "ioctl"], "action": "SCMP_ACT_ALLOW"}]}
    rules = [r for r in without_subvolumes(default)["syscalls"] if "ioctl" in r["names"]]
    assert all(r.get("args") for r in rules), rules  # never allowed unconditionally

    def action(request: int) -> str:  # as libseccomp compares: all 64 bits of the register
        ops = {"SCMP_CMP_LT": lambda a, r: request < a["value"],
               "SCMP_CMP_GT": lambda a, r: request > a["value"],
               "SCMP_CMP_MASKED_EQ": lambda a, r: request & a["value"] == a["valueTwo"]}
        matched = {r["action"] for r in rules if all(ops[a["op"]](a, r) for a in r["args"])}
        assert len(matched) == 1, (hex(request), matched)
        return matched.pop()

    high_bits = (0, 1 << 32, 0xFFFFFFFF << 32)  # the kernel reads the low 32 bits only
    for high in high_bits:
        # SNAP_CREATE, SUBVOL_CREATE, SNAP_CREATE_V2, SUBVOL_CREATE_V2 (linux/btrfs.h)
        for refused in (0x50009401, 0x5000940E, 0x50009417, 0x50009418):
            assert action(high | refused) == "SCMP_ACT_ERRNO", hex(high | refused)
        # FICLONE (reflinks), TCGETS, FIONREAD, BTRFS_IOC_FS_INFO, the ends of the range
        for allowed in (0x40049409, 0x5401, 0x541B, 0x8400941F, 0x500093FF, 0x50009500):
            assert action(high | allowed) == "SCMP_ACT_ALLOW", hex(high | allowed)
    with_both = without_user_namespaces(without_subvolumes(default))
    assert any("read" in r["names"] for r in with_both["syscalls"]
               if r["action"] == "SCMP_ACT_ALLOW")
    assert [r for r in with_both["syscalls"] if "ioctl" in r["names"]] == rules


def test_jupyters_log_filter_replaces_the_capability(monkeypatch, caplog):
    cap = "B" * 22 + ".0.9999999999"
    monkeypatch.setenv("JUPYTER_TOKEN", cap)

    from traitlets.config import Config

    config = Config()
    namespace = runpy.run_path(str(REPO / "units" / "jupyter" / "jupyter_server_config.py"),
                               init_globals={"get_config": lambda: config})
    redact = namespace["RedactCapability"]()
    record = logging.LogRecord("ServerApp", logging.INFO, "x", 1,
                               "running at %s", (f"http+unix://x/nb/demo/u/{cap}/tree",), None)
    assert redact.filter(record) and cap not in record.getMessage()
    assert "[capability]" in record.getMessage()
    sig = "ab" * 32  # a staff link's signature someone sent to their own server
    record = logging.LogRecord("ServerApp", logging.INFO, "x", 1, "404 GET %s",
                               (f"/nb/demo/u/{cap}/x?expires=1&sig={sig}",), None)
    assert redact.filter(record) and sig not in record.getMessage()
    assert config.Application.logging_config["handlers"]["console"]["filters"] == ["nbunits_redact"]
    # The image's extensions stay as they are, but for notebook_shim's (the start-up cost).
    enabled = {"notebook": True, "jupyterlab": True, "notebook_shim": True}
    assert config.ServerApp.jpserver_extensions.get_value(enabled) == {
        "notebook": True, "jupyterlab": True, "notebook_shim": False}


def test_jupyters_lines_carry_a_level_word_and_cannot_start_a_line_of_their_own():
    """The students' unit reads no "<N>" priority (SyslogLevelPrefix=no): Jupyter's level
    is a word, and text it logs (a file name, a path) cannot forge a line of its own."""
    from traitlets.config import Config

    namespace = runpy.run_path(str(REPO / "units" / "jupyter" / "jupyter_server_config.py"),
                               init_globals={"get_config": lambda: Config()})
    formatter = namespace["level_word_formatter"](format="x")
    forged = "x.ipynb\n[E ServerApp] forged\x00<0>\x1b]0;t\x07\x1b[2J\r\x9b"
    try:
        raise OSError(forged)
    except OSError:
        import sys
        record = logging.LogRecord("ServerApp", logging.WARNING, "x", 1, "Saving %s",
                                   (forged,), sys.exc_info())
    lines = formatter.format(record).split("\n")
    assert lines[:2] == ["[W ServerApp] Saving x.ipynb", "[W ServerApp] | [E ServerApp] forged"
                         "\\x00<0>\\x1b]0;t\\x07\\x1b[2J\\r\\x9b"], lines
    assert all(line.startswith("[W ServerApp] | ") for line in lines[1:]), lines
    assert "Traceback" in lines[2] and len(lines) > 4
    assert not any(re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", line) for line in lines)
    info = logging.LogRecord("ServerApp", logging.INFO, "x", 1, "Jupyter Server is running", (), None)
    assert formatter.format(info) == "[I ServerApp] Jupyter Server is running"


def test_quotas_need_a_home_file_system_mounted_with_user_quotas():
    from nbunits.core.errors import NbunitsError
    from nbunits.helper.quota import check, kib

    with_quota = ("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
                  "30 22 7:0 / /home rw,relatime - ext4 /dev/loop0 rw,usrquota\n")
    check(Path("/home"), with_quota)
    check(Path("/home/nbx"), with_quota)
    for without in ("22 1 8:1 / / rw - ext4 /dev/sda1 rw,usrquota\n"
                    "30 22 7:0 / /home rw - ext4 /dev/loop0 rw\n",
                    "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
                    "30 22 7:0 / /homes rw - ext4 /dev/loop0 rw,usrquota\n"):
        with pytest.raises(NbunitsError, match="no user quotas"):
            check(Path("/home"), without)
    assert kib("2G") == 2 * 1024 * 1024 and kib("512K") == 512


def test_quotas_on_btrfs_need_btrfs_quotas_enabled(tmp_path, monkeypatch):
    from nbunits.core.errors import NbunitsError
    from nbunits.helper import btrfs
    from nbunits.helper.quota import check

    on_btrfs = ("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
                "30 22 7:0 / /home rw,relatime - btrfs /dev/loop0 rw,subvolid=5\n")
    enabled: list[bool] = []
    monkeypatch.setattr(btrfs, "quotas_enabled", lambda folder, sysfs: enabled[-1])
    enabled.append(True)
    check(Path("/home"), on_btrfs)  # no usrquota needed: btrfs has qgroups
    enabled.append(False)
    with pytest.raises(NbunitsError, match="btrfs file system of /home has no quotas enabled"):
        check(Path("/home"), on_btrfs)


@pytest.mark.parametrize(("folder", "converting", "steps"), [
    ("missing", False, ["CREATE"]),
    ("missing", True, ["DROP_CONVERTING", "CREATE"]),
    # A plain directory: copied into a new subvolume, swapped; a half copy left by a
    # crash before the swap is thrown away first (the original is untouched).
    ("directory", False, ["CONVERT"]),
    ("directory", True, ["DROP_CONVERTING", "CONVERT"]),
    ("subvolume", False, []),
    # After the swap: the sibling is the old directory, every file already copied.
    ("subvolume", True, ["DROP_CONVERTING"]),
    ("other", False, ["REFUSE"]),
    ("other", True, ["REFUSE"]),
])
def test_a_course_folder_becomes_a_subvolume_without_losing_a_file(folder, converting, steps):
    from nbunits.helper.btrfs import Kind, decide

    assert [s.name for s in decide(Kind(folder), converting)] == steps


def test_daemon_logs_redact_capabilities_and_signatures_whoever_sent_them():
    from nbunits.core.service import Redact

    cap, sig = "C" * 22 + ".3.9999999999", "ab" * 32
    record = logging.LogRecord("x", logging.WARNING, "x", 1, "GET %s: invalid notebook path %r",
                               (f"/staff/demo/u/{cap}/x?sig={sig}", f"../{cap}"), None)
    assert Redact().filter(record)
    assert cap not in record.getMessage() and sig not in record.getMessage()
    assert "/staff/demo/u/[redacted]/x" in record.getMessage()
    try:
        raise NotADirectoryError(f"/home/student/work/{cap}")
    except OSError as exc:
        record = logging.LogRecord("x", logging.ERROR, "x", 1, "failed", (), (type(exc), exc, None))
    assert Redact().filter(record) and cap not in logging.Formatter().format(record)


def test_daemon_logs_redact_a_course_links_student_id_and_a_shares_token():
    """As aiohttp quotes a request line it cannot parse (the fuzz test sends them)."""
    from nbunits.core.service import Redact

    student, token = "fuzz-student-1", "T" * 32
    line = f"b'GET /ipythonExercice/demo/week1/loops.ipynb/{student}?reset=1 HTTP/1.0'"
    try:
        raise ValueError(f"400, message:\n  Invalid char in url path:\n\n    {line}\n")
    except ValueError as exc:
        record = logging.LogRecord("aiohttp.server", logging.ERROR, "x", 1,
                                   "Error handling request from %s", (f"/shared/{token}",),
                                   (type(exc), exc, None))
    assert Redact().filter(record)
    text = logging.Formatter().format(record)
    assert student not in text and token not in text, text
    assert "/ipythonExercice/demo/[student]" in text and "/shared/[token]" in text
    # Nor in the fields systemd's JournalHandler adds (EXCEPTION_INFO is the exception's repr).
    assert record.exc_info is None and student not in str(record.__dict__)


def test_a_path_the_dispatcher_already_cut_is_left_as_it_is():
    """log_path cuts a refused request's path ("GET /shared/[token]: not shared"); the
    filter after it keeps that line whole, and still cuts what follows a marker."""
    from nbunits.core.service import redact

    for line in ("GET /shared/[token]: This notebook is not shared any more.",
                 "GET /ipythonExercice/demo/[student]: invalid student id",
                 "GET /ipythonExercice/[student]: unknown course"):
        assert redact(line) == line
    assert redact("GET /shared/[token]:T0KEN") == "GET /shared/[token]"
    assert redact("GET /shared/[token]T0KEN x") == "GET /shared/[token] x"
    assert redact("/ipythonExercice/[student]/S1") == "/ipythonExercice/[student]/[student]"
