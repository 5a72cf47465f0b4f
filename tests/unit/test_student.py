"""A student's own actions (the Course menu): validation, the capability check,
what changed, shared static versions."""

import asyncio
import json

import nbformat
import pytest

from nbunits.core.config import CourseConfig, Settings
from nbunits.core.errors import NbunitsError
from nbunits.core.names import InvalidName, StudentUnits, user_for
from nbunits.core.protocol import ProtocolError, StudentRequest, decode_request
from nbunits.helper import shares
from nbunits.helper.capability import Grant, capability, write_grant
from nbunits.helper.copies import describe_changes
from nbunits.helper.service import handle_request

SECRET = "s" * 64
USER = user_for("0123abcd")
CAP = capability(SECRET, StudentUnits("demo", USER))


def notebook(*cells: tuple[str, str]) -> bytes:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source, id=cid) for cid, source in cells]
    return nbformat.writes(nb).encode()


def test_student_requests_are_validated_before_anything():
    ok = StudentRequest("demo", USER, CAP, "reset", "w1/a.ipynb")
    assert decode_request({"action": "student", **ok.to_json()}) == ok
    assert StudentRequest("demo", USER, CAP, "info", "").notebook == ""
    for bad, error in [(("demo", USER, CAP, "delete", "a.ipynb"), ProtocolError),
                       (("demo", USER, CAP, "reset", ""), InvalidName),
                       (("demo", USER, CAP, "share", "../a.ipynb"), InvalidName),
                       (("demo", USER, "short", "info", ""), InvalidName),
                       (("demo", "root", CAP, "info", ""), InvalidName),
                       (("Demo", USER, CAP, "info", ""), InvalidName)]:
        with pytest.raises(error):
            StudentRequest(*bad)


def test_what_changed_names_new_cells_and_counts_differing_ones():
    copy = notebook(("a", "x = 1"), ("b", "y = 2  # mine"), ("mine", "print(x)"))
    master = notebook(("a", "x = 1"), ("b", "y = 2"), ("c", "\n# Exercise 3\nz = 3"),
                      ("d", "w = 4"))
    assert describe_changes(copy, master) == [
        "2 new cells: \u201c# Exercise 3\u201d, \u201cw = 4\u201d.",
        "1 cell of the new version differs from yours (your own changes included)."]
    assert describe_changes(copy, copy) == []
    assert describe_changes(b"not a notebook", master)[0].startswith("4 new cells")


def test_shares_are_refreshed_at_the_same_link_and_revoked(tmp_path):
    settings = Settings(state_dir=tmp_path)
    units = StudentUnits("demo", USER)
    token = shares.share(settings, units, "a.ipynb", "<p>v1</p>")
    assert shares.page(settings, token) == "<p>v1</p>"
    assert shares.share(settings, units, "a.ipynb", "<p>v2</p>") == token
    assert shares.page(settings, token) == "<p>v2</p>"
    assert shares.load(settings, units) == {"a.ipynb": token}
    assert shares.unshare(settings, units, "a.ipynb") and not shares.unshare(settings, units,
                                                                             "a.ipynb")
    with pytest.raises(NbunitsError) as exc:
        shares.page(settings, token)
    assert exc.value.code == "unknown_share"


def test_the_helper_checks_the_capability_again(tmp_path):
    settings = Settings(etc_dir=tmp_path / "etc", state_dir=tmp_path / "state")
    (tmp_path / "demo").mkdir()
    settings.courses_conf_dir.mkdir(parents=True)
    settings.course_file("demo").write_text(
        CourseConfig(name="demo", source=tmp_path / "demo").to_toml())
    settings.capability_secret.write_text(SECRET + "\n")

    def ask(cap: str) -> dict:
        return asyncio.run(handle_request(settings, {
            "action": "student", "course": "demo", "user": USER, "capability": cap,
            "what": "info", "notebook": ""}))

    assert ask("A" * 22)["code"] in ("forbidden", "bad_capability")  # not even its shape
    # No grant (never provisioned): no capability is current, the same answer as a
    # wrong one (nothing tells whether the student exists).
    assert ask(CAP)["code"] == "forbidden"
    write_grant(settings, StudentUnits("demo", USER), Grant())
    assert ask(CAP)["code"] == "unknown_student"  # the right capability, no notebook yet
    assert "admin" not in json.dumps(ask(CAP)).lower()


def test_pages_for_students_offer_the_way_back_and_no_admin_hints():
    from nbunits.dispatcher.pages import NGINX_PAGES, STUDENT_MESSAGES

    texts = [" ".join(m) for m in STUDENT_MESSAGES.values()]
    texts += [f"{message} {hint}" for _, message, hint in NGINX_PAGES.values()]
    for text in texts:
        assert "course page" in text, text
        assert not any(w in text.lower() for w in ("nbunits ", "admin", "journal", "nginx")), text
