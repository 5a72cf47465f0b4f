import pytest

from nbunits.core.names import (
    InvalidName,
    StudentUnits,
    check_course,
    check_notebook,
    check_student_id,
    course_slice,
    host_user,
    notebook_url,
    origin,
    parse_unit,
    student_host,
    user_for,
)

EDX_ID = "0123456789abcdef0123456789abcdef"


def test_user_names_are_deterministic_valid_and_distinct():
    user = user_for(EDX_ID)
    assert user == user_for(EDX_ID)
    assert user.startswith("nb") and len(user) == 18 and user.islower()
    assert user != user_for(EDX_ID.upper())
    long_id = "x" * 255
    assert len(user_for(long_id)) == 18
    users = {user_for(f"student-{i}") for i in range(20000)}
    assert len(users) == 20000


@pytest.mark.parametrize("bad", ["", "a b", "a/b", "../x", "x\x00", "é", "-abc", "a" * 256,
                                 "a;rm -rf", "a\nb"])
def test_bad_student_ids_are_refused(bad):
    with pytest.raises(InvalidName):
        check_student_id(bad)
    with pytest.raises(InvalidName):
        user_for(bad)


@pytest.mark.parametrize("good", ["demo", "python3-s2", "a", "x_1"])
def test_good_courses(good):
    assert check_course(good) == good


@pytest.mark.parametrize("bad", ["", "Demo", "a:b", "a@b", "-a", "a-", "a" * 33, "helper",
                                 "../x", "a.b", "a b", "demo-proxy", "demo-lock",
                                 "demo-jupyter"])
def test_bad_courses_are_refused(bad):
    with pytest.raises(InvalidName):
        check_course(bad)


@pytest.mark.parametrize("good", ["welcome.ipynb", "week1/loops.ipynb", "w 1/Exo (2).ipynb",
                                  "café.ipynb", "Leçon 1/été #2.ipynb", "数据/分析.ipynb",
                                  "a/b/c/d/e/f/g/h.ipynb"])
def test_good_notebook_paths(good):
    assert str(check_notebook(good)) == good


@pytest.mark.parametrize("bad", ["../x.ipynb", "/etc/x.ipynb", "a/../b.ipynb", "a//b.ipynb",
                                 "x.txt", ".hidden.ipynb", "a/./b.ipynb", "", ".ipynb",
                                 "a\x00.ipynb", "a\\b.ipynb", " a.ipynb", "/".join("a" * 9) + ".ipynb",
                                 "a\u202eb.ipynb", "a\nb.ipynb", "é" * 101 + ".ipynb",
                                 ".git/x.ipynb", "a /b.ipynb"])
def test_bad_notebook_paths_are_refused(bad):
    with pytest.raises(InvalidName):
        check_notebook(bad)


def test_unit_names():
    units = StudentUnits("python3-s2", user_for(EDX_ID))
    assert units.socket == f"nbunits-python3-s2@{units.user}.socket"
    assert units.container == f"nbunits-python3-s2@{units.user}.service"
    assert units.proxy == f"nbunits-python3-s2-proxy@{units.user}.service"
    assert units.jupyter_socket == f"nbunits-python3-s2-jupyter@{units.user}.socket"
    for name, kind in ((units.socket, "socket"), (units.container, "container"),
                       (units.proxy, "proxy"), (units.lock, "lock"),
                       (units.jupyter_socket, "jupyter")):
        parsed = parse_unit(name)
        assert parsed is not None and (parsed.units, parsed.kind) == (units, kind), name
    for other in (f"nbunits-python3-s2-jupyter@{units.user}.service",
                  f"nbunits-python3-s2-proxy@{units.user}.socket"):
        assert parse_unit(other) is None
    assert course_slice("python3-s2") == "nbunits-python3\\x2ds2.slice"
    with pytest.raises(InvalidName):
        StudentUnits("demo", "root")


def test_links_are_percent_encoded():
    from nbunits.core.names import exercise_url
    assert exercise_url("demo", "Leçon 1/café.ipynb", "s1") == \
        "/ipythonExercice/demo/Le%C3%A7on%201/caf%C3%A9.ipynb/s1"


def test_the_link_opens_the_notebook_in_the_course_s_interface():
    units, cap = StudentUnits("demo", user_for(EDX_ID)), "A" * 22 + ".0.1"
    base = f"/nb/demo/{units.user}/{cap}/"
    assert notebook_url(units, cap, "w1/a.ipynb") == base + "notebooks/w1/a.ipynb"
    assert notebook_url(units, cap, "w1/a.ipynb", "notebook") == base + "notebooks/w1/a.ipynb"
    assert notebook_url(units, cap, "w1/a.ipynb", "lab") == base + "lab/tree/w1/a.ipynb"
    with pytest.raises(InvalidName):
        notebook_url(units, cap, "w1/a.ipynb", "classic")
    with pytest.raises(InvalidName):
        notebook_url(units, cap, "../a.ipynb", "lab")


def test_a_student_s_own_origin_is_their_user_under_the_student_domain():
    user = user_for(EDX_ID)
    host = student_host(user, "nb.example.org")
    assert host == f"{user}.nb.example.org"
    assert host_user(host, "nb.example.org") == user
    for other in (f"{user}.nb.example.org.evil", f"x{user}.nb.example.org", "nb.example.org",
                  f"{user}.other.org", f"a.{user}.nb.example.org", "notebooks.example.org"):
        assert host_user(other, "nb.example.org") is None, other
    assert host_user(host, "") is None  # one origin: no host is a student's
    with pytest.raises(InvalidName):
        student_host("evil.org/x", "nb.example.org")
    assert origin("https", host) == f"https://{host}"
    assert origin("http", host, "8080") == f"http://{host}:8080"
    for scheme, port in (("javascript", ""), ("https", "80/x"), ("https", "@evil.org")):
        with pytest.raises(InvalidName):
            origin(scheme, host, port)


def test_every_course_s_podman_runroot_fits_podman_s_limit():
    from nbunits.core.names import PODMAN_RUNROOT_MAX, podman_run_dir
    user = user_for("someone")
    assert podman_run_dir("demo") == "nbunits/podman/demo"  # a short name, as it is
    for course in ("python-intro", "a" * 11, "a" * 12, "python-for-data-science-2026-fall"[:32]):
        runroot = f"/run/{podman_run_dir(course)}/{user}"
        assert len(runroot) <= PODMAN_RUNROOT_MAX, (course, runroot)
    long_one = podman_run_dir("python-for-data-science-2026")
    assert long_one != podman_run_dir("python-for-data-science-2027")
    with pytest.raises(InvalidName):  # the digest is never a course's own name
        check_course(long_one.rsplit("/", 1)[1])


def test_a_course_wide_stop_reaches_its_gradings_and_no_other_courses(monkeypatch) -> None:
    """`course remove` and a course's end stop every unit of its students, a grading
    that runs then included (core/systemctl.py stop_course)."""
    from fnmatch import fnmatch

    from nbunits.core import systemctl
    from nbunits.core.names import StudentUnits

    asked: list[str] = []
    monkeypatch.setattr(systemctl, "systemctl", lambda *args, **kw: asked.extend(args) or "")
    systemctl.stop_course("py")
    assert asked[0] == "stop"
    units, other = StudentUnits("py", user_for("s1")), StudentUnits("py-2", user_for("s1"))
    for name in (units.grading, *units.started):
        assert any(fnmatch(name, p) for p in asked[1:]), name
    assert not any(fnmatch(name, p) for p in asked[1:]
                   for name in (other.grading, *other.started))
