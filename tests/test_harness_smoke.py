"""The test harness itself, for real: boots throwaway systemd boxes (testbed/harness.py)."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.harness import Bind, BoxCommandError, SystemdBox

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="booting a systemd-nspawn box needs root"),
    pytest.mark.skipif(shutil.which("systemd-nspawn") is None or shutil.which("nsenter") is None,
                       reason="systemd-nspawn (systemd-container) or nsenter (util-linux) is missing"),
]


@pytest.fixture(scope="module")
def shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bind")


@pytest.fixture(scope="module")
def box(shared_dir: Path) -> Iterator[SystemdBox]:
    with SystemdBox(f"smoke-{os.getpid()}", binds=[Bind(shared_dir, "/srv/shared")]) as box:
        yield box
        assert box.failed_units() == []


def test_boots_to_running(box: SystemdBox) -> None:
    state = box.systemctl("is-system-running", check=False).stdout.strip()
    assert state in ("running", "degraded")
    assert box.nsenter("cat", "/proc/1/comm").stdout.strip() == "systemd"
    assert box.run("hostname").stdout.strip() == box.name


def test_run_as_user(box: SystemdBox) -> None:
    assert box.run("id", "-u", user="nobody").stdout.strip() == "65534"
    assert box.run("id", "-u").stdout.strip() == "0"


def test_run_passes_stdin_env_and_properties(box: SystemdBox) -> None:
    out = box.run("sh", "-c", 'cat; echo "$GREETING"; pwd', input="from stdin\n",
                  env={"GREETING": "hello"}, properties=["WorkingDirectory=/srv"]).stdout
    assert out.splitlines() == ["from stdin", "hello", "/srv"]


def test_failure_names_command_and_stderr(box: SystemdBox) -> None:
    with pytest.raises(BoxCommandError) as caught:
        box.run("sh", "-c", "echo oops >&2; exit 3")
    assert caught.value.returncode == 3
    assert "oops" in str(caught.value) and "exit 3" in str(caught.value)
    assert box.run("false", check=False).returncode == 1


def test_unit_with_user(box: SystemdBox) -> None:
    box.write_file("/etc/systemd/system/nbunits-harness-probe.service", (
        "[Service]\n"
        "Type=oneshot\n"
        "User=nobody\n"
        "StateDirectory=nbunits-harness-probe\n"
        "ExecStart=/bin/sh -c 'id -un > /var/lib/nbunits-harness-probe/who'\n"
    ))
    box.systemctl("daemon-reload")
    box.systemctl("start", "nbunits-harness-probe.service")
    assert box.read_file("/var/lib/nbunits-harness-probe/who").strip() == "nobody"
    result = box.systemctl("show", "--property=Result", "nbunits-harness-probe.service").stdout
    assert result.strip() == "Result=success"


def test_writes_stay_in_the_box(box: SystemdBox) -> None:
    box.run("sh", "-c", "echo probe > /etc/nbunits-harness-probe")
    assert box.run("cat", "/etc/nbunits-harness-probe").stdout == "probe\n"
    assert not Path("/etc/nbunits-harness-probe").exists()


def test_write_file_follows_symlinks_inside_the_box(box: SystemdBox) -> None:
    # /var/run -> /run: followed on the host, this would write to the machine's own /run.
    name = f"nbunits-harness-{secrets.token_hex(4)}"
    box.write_file(f"/var/run/{name}", "inside\n", mode=0o600)
    assert not Path(f"/run/{name}").exists()
    assert box.run("stat", "-c", "%a %U", f"/run/{name}").stdout.strip() == "600 root"
    assert box.run("cat", f"/run/{name}", user="root").stdout == "inside\n"


def test_bind_is_read_write(box: SystemdBox, shared_dir: Path) -> None:
    box.run("sh", "-c", "echo from-box > /srv/shared/from-box")
    assert (shared_dir / "from-box").read_text() == "from-box\n"
    (shared_dir / "from-host").write_text("from-host\n")
    assert box.run("cat", "/srv/shared/from-host").stdout == "from-host\n"


def test_masked_units_and_tun(box: SystemdBox) -> None:
    assert box.systemctl("is-enabled", "apt-daily.timer", check=False).stdout.strip() == "masked"
    assert box.run("stat", "-c", "%a", "/dev/net/tun").stdout.strip() == "666"
    assert box.systemctl("is-active", "nginx.service", check=False).stdout.strip() == "active"
    assert box.run("test", "-e", "/etc/nginx/sites-enabled/default", check=False).returncode != 0


def test_host_network_box_leaves_port_80_alone() -> None:
    with SystemdBox(f"smoke-net-{os.getpid()}", private_network=False) as box:
        assert box.systemctl("is-active", "nginx.service", check=False).stdout.strip() == "active"
        listeners = box.run("ss", "--listening", "--tcp", "--numeric", "--processes").stdout
        assert "nginx" not in listeners


def test_shutdown_leaves_nothing_behind() -> None:
    marker = Path(f"/tmp/nbunits-harness-marker-{secrets.token_hex(4)}")
    marker.write_text("keep me\n")
    try:
        box = SystemdBox(f"smoke-down-{os.getpid()}")
        box.boot()
        assert box.run("test", "-e", str(marker), check=False).returncode != 0  # own /tmp inside
        leader, nspawn = box.leader_pid, box.nspawn_pid
        box.shutdown()
        box.shutdown()  # idempotent
        assert marker.read_text() == "keep me\n"
        for pid in (leader, nspawn):
            assert not _running(pid), f"PID {pid} of the box survived shutdown"
        assert not box.workdir.exists()
        assert str(box.workdir) not in Path("/proc/self/mountinfo").read_text()
        cgroups = Path("/sys/fs/cgroup")
        leftover = [*cgroups.glob(f"nbunits-harness/{box.name}"),
                    *cgroups.glob(f"*/nbunits-harness/{box.name}")]
        assert not leftover
    finally:
        marker.unlink()


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
