import os
from pathlib import Path, PurePosixPath

import pytest

from nbunits.core.errors import NbunitsError
from nbunits.helper.notebooks import install_copy, master_path, read_master, validate

EXAMPLES = Path(__file__).parents[2] / "examples" / "demo"


def test_examples_are_valid_notebooks():
    assert read_master(EXAMPLES, "week1/loops.ipynb").startswith(b"{")


@pytest.mark.parametrize("data, reason", [
    (b"{not json", "not valid JSON"),
    (b'{"cells": 3}', "not a valid notebook"),
    (b"\xff\xfe", "not valid JSON"),
])
def test_broken_notebooks_say_which_and_why(data, reason):
    with pytest.raises(NbunitsError) as info:
        validate(data, "w1/broken.ipynb")
    assert info.value.code == "broken_notebook"
    assert "w1/broken.ipynb" in info.value.message and reason in info.value.message


def test_master_path_refuses_symlinks_out_and_missing(tmp_path):
    course = tmp_path / "course"
    course.mkdir()
    (tmp_path / "secret.ipynb").write_text("{}")
    (course / "link.ipynb").symlink_to(tmp_path / "secret.ipynb")
    (course / "sub").symlink_to(tmp_path)
    for bad in ("link.ipynb", "sub/secret.ipynb"):
        with pytest.raises(NbunitsError) as info:
            master_path(course, bad)
        assert info.value.code == "bad_notebook"
    with pytest.raises(NbunitsError) as info:
        master_path(course, "missing.ipynb")
    assert info.value.code == "unknown_notebook"


def test_install_copy_creates_once_and_never_overwrites(tmp_path):
    uid, gid = os.getuid(), os.getgid()
    rel = PurePosixPath("demo", "w1", "a.ipynb")
    assert install_copy(tmp_path, rel, b"first", uid, gid) is True
    assert install_copy(tmp_path, rel, b"second", uid, gid) is False
    assert (tmp_path / "demo/w1/a.ipynb").read_bytes() == b"first"
    assert [p.name for p in (tmp_path / "demo/w1").iterdir()] == ["a.ipynb"]


def test_install_copy_does_not_follow_a_students_symlinks(tmp_path):
    home, outside = tmp_path / "home", tmp_path / "outside"
    home.mkdir(), outside.mkdir()
    (home / "demo").symlink_to(outside)
    with pytest.raises(NbunitsError):
        install_copy(home, PurePosixPath("demo", "a.ipynb"), b"x", os.getuid(), os.getgid())
    (home / "b.ipynb").symlink_to(outside / "target.ipynb")
    assert install_copy(home, PurePosixPath("b.ipynb"), b"x", os.getuid(), os.getgid()) is False
    assert list(outside.iterdir()) == []
