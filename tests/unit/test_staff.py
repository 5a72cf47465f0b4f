import asyncio
import json

import pytest

from nbunits.core.config import CourseConfig, Settings
from nbunits.core.errors import NbunitsError
from nbunits.core.names import StudentUnits, user_for
from nbunits.helper import staff
from nbunits.helper.service import handle_request

SECRET = "s3cret"


def test_links_verify_and_expire():
    url = staff.link(SECRET, "demo", "nbaaaaaaaaaaaaaaaa", "w1/a b.ipynb", hours=1, now=1000)
    assert url.startswith("/staff/demo/nbaaaaaaaaaaaaaaaa/w1/a%20b.ipynb?expires=4600&sig=")
    sig = url.rsplit("sig=", 1)[1]
    staff.check(SECRET, "demo", "nbaaaaaaaaaaaaaaaa", "w1/a b.ipynb", "4600", sig, now=2000)
    for args, now in [(("demo", "nbaaaaaaaaaaaaaaaa", "w1/a b.ipynb", "4600", sig), 5000),  # expired
                      (("demo", "nbbbbbbbbbbbbbbbbb", "w1/a b.ipynb", "4600", sig), 2000),  # other student
                      (("demo", "nbaaaaaaaaaaaaaaaa", "w1/a b.ipynb", "9999", sig), 2000)]:  # longer
        with pytest.raises(NbunitsError) as info:
            staff.check(SECRET, *args, now=now)
        assert info.value.code == "forbidden"
    for expires, bad_sig in [("x", sig), ("9" * 5000, sig), ("\u00b2", sig), ("4600", "x"),
                             ("4600", sig.upper()), ("4600", sig + "0")]:
        with pytest.raises(NbunitsError) as info:
            staff.check(SECRET, "demo", "nbaaaaaaaaaaaaaaaa", "w1/a b.ipynb", expires, bad_sig,
                        now=2000)
        assert info.value.code == "bad_request"
    with pytest.raises(NbunitsError):
        staff.link(SECRET, "demo", "nbaaaaaaaaaaaaaaaa", "a.ipynb", hours=10_000)


def test_render_escapes_everything_a_student_wrote():
    nb = {"cells": [
        {"cell_type": "markdown", "source": ["<script>alert(1)</script>"], "metadata": {}},
        {"cell_type": "code", "source": "print('<b>')", "execution_count": 3, "metadata": {},
         "outputs": [{"output_type": "stream", "name": "stdout", "text": ["<img src=x onerror=1>"]},
                     {"output_type": "execute_result", "data": {"text/html": "<script>x</script>",
                                                                "text/plain": "42"}},
                     {"output_type": "display_data", "data": {"image/png": "iVBORw0KGgo=\n"}}]}],
        "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    html = staff.render(json.dumps(nb).encode(), "demo / nb / a.ipynb")
    assert "<script>" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "In [3]" in html and "42" in html
    assert 'src="data:image/png;base64,iVBORw0KGgo="' in html


MARKUP = '"><meta http-equiv=refresh content="0;url=//evil"><form action=//evil><script>x()</script>'


def test_render_escapes_a_notebook_whose_every_field_is_hostile():
    nb = {"cells": [
        {"cell_type": MARKUP, "source": MARKUP},
        {"cell_type": "code", "source": [MARKUP, 7, None], "execution_count": MARKUP,
         "outputs": [{"output_type": "stream", "text": MARKUP, "name": MARKUP},
                     {"output_type": "error", "ename": MARKUP, "evalue": [MARKUP],
                      "traceback": [MARKUP]},
                     {"output_type": "display_data", "data": {"image/png": MARKUP}},
                     {"output_type": "display_data", "data": {"image/png": "iVBO\"><x"}},
                     {"output_type": "execute_result", "data": {"text/plain": [MARKUP, {}],
                                                                "text/html": MARKUP}},
                     {"output_type": MARKUP, "data": MARKUP}, MARKUP, None]},
        {"cell_type": "code", "source": "", "execution_count": {"x": MARKUP}, "outputs": MARKUP},
        MARKUP, None, [MARKUP]],
        "metadata": {"title": MARKUP}, "nbformat": MARKUP}
    html = staff.render(json.dumps(nb).encode(), MARKUP)
    assert "<meta http-equiv=refresh" not in html and "<form" not in html
    assert "<script>" not in html and "=//evil\"" not in html
    assert html.count("&lt;meta http-equiv=refresh") >= 6
    for hostile in (b"[]", b'"x"', b"null", b"{", b'{"cells": "x"}', b'{"cells": [1, "<b>"]}'):
        try:
            page = staff.render(hostile, "t")
        except NbunitsError as exc:
            assert exc.code == "broken_notebook"
        else:
            assert "<b>" not in page


def test_the_helper_signs_staff_links_only_for_students_of_the_course(tmp_path):
    settings = Settings(etc_dir=tmp_path / "etc", state_dir=tmp_path / "state")
    source = tmp_path / "demo"
    (source / "w1").mkdir(parents=True)
    (source / "w1" / "a.ipynb").write_text("{}")
    settings.courses_conf_dir.mkdir(parents=True)
    settings.course_file("demo").write_text(CourseConfig(name="demo", source=source).to_toml())
    settings.capability_secret.write_text(SECRET + "\n")
    student, user = "0123abcd", user_for("0123abcd")

    def ask(**request: str) -> dict:
        return asyncio.run(handle_request(settings, {"action": "staff_link", "course": "demo",
                                                     "student": student, "notebook": "w1/a.ipynb",
                                                     **request}))

    assert ask()["code"] == "unknown_student"  # never came: no link, nothing created
    token = settings.token_file(StudentUnits("demo", user))
    token.parent.mkdir(parents=True)
    token.write_text("JUPYTER_TOKEN=x\n")
    assert ask()["code"] == "unknown_student"  # no id record: not this student's user
    settings.students_dir.mkdir(parents=True)
    (settings.students_dir / user).write_text(student + "\n")
    url = ask()["url"]
    assert url.startswith(f"/staff/demo/{user}/w1/a.ipynb?expires=")
    expires, sig = (part.split("=")[1] for part in url.split("?")[1].split("&"))
    staff.check(SECRET, "demo", user, "w1/a.ipynb", expires, sig)
    assert ask(notebook="w1/nosuch.ipynb")["code"] == "unknown_notebook"
    assert ask(notebook="../a.ipynb")["code"] == "bad_notebook"
    assert ask(student="a b")["code"] == "bad_student"
    assert ask(course="other")["code"] == "unknown_course"
