import base64
import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbunits.admin import images
from nbunits.core.config import ConfigError, CourseConfig, Settings, load_course
from nbunits.core.errors import NbunitsError
from nbunits.core.names import COURSE_RE, PODMAN_RUNROOT_MAX, RESERVED_COURSES, StudentUnits
from nbunits.generator.main import generate
from nbunits.generator.render import render_course
from nbunits.helper import activity


def make_store(folder: Path, *, layers: int = 1, entrypoint: list[str] | None = None) -> Path:
    """An image store as podman writes it, with localhost/nbunits/jupyter:latest."""
    ids = [f"{n:064x}" for n in range(1, layers + 1)]
    (folder / "overlay-layers").mkdir(parents=True)
    (folder / "overlay-layers" / "layers.json").write_text(json.dumps(
        [{"id": i, **({"parent": ids[n - 1]} if n else {})} for n, i in enumerate(ids)]))
    image = "f" * 64
    (folder / "overlay-images" / image).mkdir(parents=True)
    (folder / "overlay-images" / "images.json").write_text(json.dumps(
        [{"id": image, "names": ["localhost/nbunits/jupyter:latest"], "layer": ids[-1]}]))
    key = "=" + base64.b64encode(f"sha256:{image}".encode()).decode()
    config = {"Env": ["PATH=/opt/jupyter/bin:/usr/bin", "NOTE=50% $HOME"],
              "WorkingDir": "/home/student",
              "Entrypoint": ["/usr/bin/tini", "--"] if entrypoint is None else entrypoint}
    (folder / "overlay-images" / image / key).write_text(json.dumps({"config": config}))
    return folder


def recorded(store: Path) -> Settings:
    """Settings whose /etc records the store's images, as `nbunits install` leaves them
    (the generator reads that record, never the store: admin/images.py)."""
    settings = Settings(etc_dir=store.parent / f"etc-{store.name}", image_store=store)
    settings.etc_dir.mkdir(exist_ok=True)
    assert images.record(settings) == []
    return settings


def make_course(tmp_path: Path, text: str) -> Settings:
    settings = Settings(etc_dir=tmp_path / "etc", state_dir=tmp_path / "state",
                        image_store=make_store(tmp_path / "images"))
    settings.courses_conf_dir.mkdir(parents=True)
    (settings.courses_conf_dir / "demo.toml").write_text(text)
    images.record(settings)
    return settings


def test_course_settings_round_trip(tmp_path):
    config = CourseConfig(name="demo", source=Path("/srv/demo"), memory_max="2G", network="slirp4netns")
    settings = make_course(tmp_path, config.to_toml())
    assert load_course(settings, "demo") == config


def test_launch_settings_round_trip(tmp_path):
    config = CourseConfig(name="demo", source=Path("/srv/demo"), legacy="referrer",
                          legacy_referrers=("fun-mooc.fr",), lti_context_id="course-v1:O+N+R",
                          lti_notebooks={"block-v1:O+N+R+type@lti+block@1": "week1/a.ipynb"})
    settings = make_course(tmp_path, config.to_toml())
    assert load_course(settings, "demo") == config


def test_a_course_takes_only_signed_launches_unless_told_otherwise(tmp_path):
    from nbunits.core.config import Lti13Registration
    # A course file without the key (written by hand, or by the first nbunits, before
    # `legacy` existed): the legacy link is off, and nothing says how students get in.
    old = load_course(make_course(tmp_path, '[course]\nsource = "/x"\n'), "demo")
    assert old.legacy == "off" and old.launch_methods() == []
    assert old.how_students_get_in() == ("students cannot get in yet: no LTI settings and "
                                         "the legacy link off")
    # Files written by `course add` carry every setting: an open course stays open.
    kept = CourseConfig(name="demo", source=Path("/x"), legacy="open")
    assert load_course(make_course(tmp_path / "kept", kept.to_toml()), "demo").legacy == "open"
    assert "legacy link (OPEN: anyone who knows or guesses a student id)" in \
        kept.how_students_get_in()
    both = CourseConfig(name="demo", source=Path("/x"), lti11_key="k", legacy="signed",
                        lti13=(Lti13Registration("https://lms", "a"),
                               Lti13Registration("https://lms", "b")))
    assert both.how_students_get_in() == ("students get in by: LTI 1.1, LTI 1.3 "
                                          "(2 registrations), legacy link (signed)")


@pytest.mark.parametrize("text, words", [
    ('[course]\nsource = "/x"\nlegacy = "maybe"\n', "legacy"),
    ('[course]\nsource = "/x"\nlegacy = "referrer"\n', "legacy_referrers"),
    ('[course]\nsource = "/x"\nlti_notebooks = {a = "../x.ipynb"}\n', "lti_notebooks"),
    ('[course]\nsource = "/x"\nlti13_keys_url = "https://lms/jwks"\n', "issuer and client_id"),
    ('[course]\nsource = "/x"\n[[course.lti13]]\nissuer = "i"\nclient_id = "c"\n'
     'keys_url = "https://lms/jwks"\n', "keys_url"),
    ('[course]\nsource = "/x"\n[[course.lti13]]\nissuer = "i"\nclient_id = "c"\n'
     'keys = "/k.json"\nkeys_url = "http://lms/jwks"\n', "keys only over https"),
    ('[course]\nsource = "/x"\n[[course.lti13]]\nissuer = "i"\nclient_id = "c"\n'
     'keys = "/k.json"\nkeys_url = "ftp://lms/jwks"\n', "keys only over https"),
    ('[course]\nsource = "/x"\n[[course.lti13]]\nissuer = "i"\nclient_id = "c"\n'
     '[[course.lti13]]\nissuer = "i"\nclient_id = "c"\n', "same issuer and client_id"),
    ('[course]\nsource = "/x"\nlti_staff_roles = ["TeachingAssistant"]\n', "forum roles"),
    ('[course]\nsource = "/x"\nlti_staff_roles = ["Instructor#TeachingAssistant"]\n',
     "forum roles"),
    ('[course]\nsource = "/x"\nlti_staff_roles = ["urn:lti:instrole:ims/lis/Administrator"]\n',
     "context role"),
    ('[course]\nsource = "/x"\nmemory_max = "lots"\n', "memory_max"),
    ('[course]\nsource = "/x"\nnetwork = "host"\n', "network"),
    ('[course]\nsource = "/x"\nnetwork = "slirp4netns"\nnetwork_allow = ["10.1.2.0/33"]\n',
     "network_allow"),
    ('[course]\nsource = "/x"\nnetwork = "slirp4netns"\nnetwork_allow = ["0.0.0.0/0"]\n',
     "network_allow"),
    ('[course]\nsource = "/x"\nnetwork_allow = ["10.1.2.0/24"]\n', "needs network = slirp4netns"),
    ('[course]\nsource = "/x"\ncolour = "red"\n', "unknown settings"),
    ('[course]\nmemory_max = "1G"\n', "source"),
    ('[course]\nsource = "/x"\nproxy_idle_timeout = -1\n', "proxy_idle_timeout"),
    ('[course]\nsource = "/x"\ngrading_timeout = 601\n', "grading_timeout=601 (at most 600"),
])
def test_bad_course_settings_are_named(tmp_path, text, words):
    settings = make_course(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_course(settings, "demo")
    assert words in str(info.value)


def test_unknown_course(tmp_path):
    settings = make_course(tmp_path, '[course]\nsource = "/x"\n')
    with pytest.raises(ConfigError) as info:
        load_course(settings, "other")
    assert info.value.code == "unknown_course"


def test_rendered_units_carry_the_settings_and_no_placeholder(tmp_path):
    config = CourseConfig(name="python3-s2", source=Path("/srv"), memory_max="3G", tasks_max=99,
                          proxy_idle_timeout=33)
    units = render_course(config, recorded(make_store(tmp_path)))
    assert set(units) == {"nbunits-python3-s2@.socket", "nbunits-python3-s2@.service",
                          "nbunits-python3-s2-proxy@.service", "nbunits-python3-s2-lock@.service",
                          "nbunits-python3-s2-jupyter@.socket", "nbunits-python3-s2-grade@.service",
                          "nbunits-python3\\x2ds2.slice"}
    grade = units["nbunits-python3-s2-grade@.service"]
    assert "MemoryMax=3G" in grade and "TimeoutStartSec=180" in grade and "timeout" in grade
    assert "--network=none" in grade and "PrivateNetwork=yes" in grade and "IPAddressDeny=any" in grade
    service = units["nbunits-python3-s2@.service"]
    assert "MemoryMax=3G" in service and "TasksMax=99" in service
    assert "Slice=nbunits-python3\\x2ds2.slice" in service
    # The image's one layer, its configuration quoted for systemd; tini is its init.
    layer = tmp_path / "overlay" / f"{1:064x}" / "diff"
    assert f'--rootfs "{layer}" "/usr/bin/tini" "--"' in service
    assert '"--env=NOTE=50%% $$HOME"' in service and '--workdir="/home/student"' in service
    assert " --init " not in service
    assert "--exit-idle-time=33s" in units["nbunits-python3-s2-proxy@.service"]
    assert not any("@" + key in text for text in units.values()
                   for key in ("COURSE@", "IMAGE@", "SLICE@", "MEMORY_MAX@"))


def test_kernels_reach_neither_private_nor_link_local_addresses_unless_the_course_lists_them(
        tmp_path):
    """The unit's IP firewall (docs/security.md, "Kernels' network"); the host's own
    addresses go on nbunits.slice (helper/firewall.py)."""
    from nbunits.helper.firewall import global_addresses

    def service(**settings: object) -> dict[str, str]:
        config = CourseConfig(name="demo", source=Path("/srv"), **settings)  # type: ignore[arg-type]
        text = render_course(config, recorded(make_store(tmp_path / str(len(settings)))))[
            "nbunits-demo@.service"]
        lines = text.replace("\\\n    ", "").splitlines()  # continuation lines joined
        return dict(line.split("=", 1) for line in lines if line.startswith("IPAddress"))

    plain = service()
    denied = plain["IPAddressDeny"].split()
    for network in ("link-local", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                    "100.64.0.0/10", "fc00::/7", "fe80::/10", "0.0.0.0/8"):
        assert network in denied, (network, denied)
    assert plain["IPAddressAllow"].split() == ["localhost", "10.0.2.3"]
    listed = service(network="slirp4netns", network_allow=("10.77.0.1/24", "fd12::1"))
    assert listed["IPAddressAllow"].split() == ["localhost", "10.0.2.3", "10.77.0.0/24",
                                                "fd12::1/128"]
    shown = ('[{"addr_info": [{"local": "127.0.0.1", "scope": "host"}, {"local": "fe80::1", '
             '"scope": "link"}, {"local": "2001:db8::7", "scope": "global"}]}, {"addr_info": '
             '[{"local": "203.0.113.7", "scope": "global"}, {"local": "10.0.0.5", '
             '"scope": "global"}]}]')
    assert global_addresses(shown) == ["10.0.0.5/32", "203.0.113.7/32", "2001:db8::7/128"]


def test_a_disk_quota_is_set_in_two_steps_before_the_course_folder_is_made(tmp_path):
    config = CourseConfig(name="demo", source=Path("/srv"), disk_quota="2G")
    service = render_course(config, recorded(make_store(tmp_path)))[
        "nbunits-demo@.service"]
    quota = "/opt/nbunits/venv/bin/python3 -m nbunits.helper.quota"
    student = service.index(f"ExecStartPre={quota} folders ${{HOME}} demo\n")
    root = service.index(f"ExecStartPre=+{quota} limit %i demo 2G\n")
    assert student < root < service.index("ExecStart=/bin/sh -c 'mkdir -p -m 0700 \"$$0\"")
    unlimited = render_course(CourseConfig(name="demo", source=Path("/srv")),
                              recorded(make_store(tmp_path / "b")))
    assert "nbunits.helper.quota" not in unlimited["nbunits-demo@.service"]


def test_an_image_without_init_gets_podmans(tmp_path):
    config = CourseConfig(name="demo", source=Path("/srv"))
    store = make_store(tmp_path / "a", entrypoint=[])
    assert "no-conmon --init --read-only" in render_course(config, recorded(store))[
        "nbunits-demo@.service"]


def test_a_layered_image_is_stacked_by_a_read_only_mount_the_units_require(tmp_path):
    config = CourseConfig(name="demo", source=Path("/srv"))
    store = make_store(tmp_path, layers=3)
    units = render_course(config, recorded(store))
    where = "/run/nbunits/rootfs/" + "f" * 64
    mount = units["run-nbunits-rootfs-" + "f" * 64 + ".mount"]
    lower = ":".join(f"{store}/overlay/{n:064x}/diff" for n in (3, 2, 1))  # top first
    assert f"Where={where}\n" in mount and f"Options=ro,lowerdir={lower}\n" in mount
    service = units["nbunits-demo@.service"]
    assert f"RequiresMountsFor={where}\n" in service and f'--rootfs "{where}"' in service
    broken = make_store(tmp_path / "broken", layers=2)
    (broken / "overlay-layers" / "layers.json").write_text(json.dumps([{"id": f"{2:064x}",
                                                                        "parent": "gone"}]))
    with pytest.raises(NbunitsError, match="is missing"):
        images.resolve(broken, "localhost/nbunits/jupyter:latest")
    settings = Settings(etc_dir=tmp_path / "etc-broken", image_store=broken)
    settings.etc_dir.mkdir()
    assert "is missing" in images.record(settings)[0]  # not recorded: the course is skipped
    with pytest.raises(NbunitsError, match="not in the store"):
        render_course(config, settings)


def test_generator_skips_a_broken_course_and_reads_nothing_in_var(tmp_path, monkeypatch):
    settings = make_course(tmp_path, '[course]\nsource = "/x"\n')
    (settings.courses_conf_dir / "broken.toml").write_text("[course\n")
    tokens = settings.tokens_dir / "demo"
    tokens.mkdir(parents=True)
    # Provisioned long ago, not active: not loaded (a click or a link wakes them).
    (tokens / "nbbbbbbbbbbbbbbbbb.env").write_text("JUPYTER_TOKEN=x\n")
    (tokens / "nbaaaaaaaaaaaaaaaa.env").write_text("JUPYTER_TOKEN=x\n")
    activity.mark(settings, StudentUnits("demo", "nbaaaaaaaaaaaaaaaa"))
    (settings.recent_dir / "demo" / "junk").write_text("")
    out = tmp_path / "out"
    out.mkdir()
    # /var (the state, the image store) may not be mounted when generators run.
    hidden = tmp_path / "elsewhere"
    settings.state_dir.rename(hidden)
    settings.image_store.rename(tmp_path / "images-elsewhere")
    problems = generate(settings, out)
    assert len(problems) == 1 and "broken.toml" in problems[0]
    assert (out / "nbunits-demo@.service").is_file()
    assert not (out / "sockets.target.wants").exists()  # nbunits-listen.service's work
    hidden.rename(settings.state_dir)
    # After boot: only the recently active student's socket is started.
    started: list[tuple[str, ...]] = []
    monkeypatch.setattr(activity, "systemctl", lambda *a, check=True: started.append(a) or "")
    assert activity.listen(settings) == 1
    assert started == [("start", "--no-block", "nbunits-demo@nbaaaaaaaaaaaaaaaa.socket")]


# The limits a course's name must fit in every unit it gets, with the longest student:
# podman's runroot (50 characters), a unix socket's path (107 bytes: sun_path), a
# unit's name (255), a container's host name (63).
LONGEST_USER = "nb" + "a" * 16


@settings(max_examples=60, deadline=None)
@given(name=st.from_regex(COURSE_RE, fullmatch=True).filter(
    lambda n: not n.endswith(("-proxy", "-lock", "-jupyter")) and n not in RESERVED_COURSES))
def test_every_course_name_fits_the_limits_of_its_units(tmp_path_factory, name):
    store = recorded(make_store(tmp_path_factory.mktemp("store")))
    units = render_course(CourseConfig(name=name, source=Path("/srv")), store)
    for unit, text in units.items():
        assert len(unit.replace("@.", f"@{LONGEST_USER}.")) <= 255, unit
        text = text.replace("%i", LONGEST_USER)
        for runroot in re.findall(r"--runroot=(\S+)", text):
            assert len(runroot) <= PODMAN_RUNROOT_MAX, runroot
        for socket in re.findall(r"ListenStream=(/\S+)", text):
            assert len(socket.encode()) <= 107, socket
        for host in re.findall(r"--hostname (\S+)", text):
            assert len(host) <= 63, host
    assert re.search(r"--runroot=", "".join(units.values()))
