"""Bad input gets a clear answer and changes nothing: no user, no unit, no file."""

from __future__ import annotations

import asyncio
import secrets

import pytest
import yarl

from .conftest import Nbunits, client

BROKEN = "/var/lib/nbunits/courses/demo/broken.ipynb"


@pytest.fixture(scope="module")
def with_broken_master(nb: Nbunits):
    # A master damaged on disk after publishing (course add would have refused it).
    nb.box.write_file(BROKEN, '{"cells": [ this is not json')
    nb.box.run("ln", "-sf", "/etc/passwd", "/var/lib/nbunits/courses/demo/escape.ipynb")
    yield
    nb.box.run("rm", "-f", BROKEN, "/var/lib/nbunits/courses/demo/escape.ipynb")


CASES = [
    # (url, status, words the page must say)
    ("/ipythonExercice/nosuchcourse/welcome.ipynb/{id}", 404, "This course is not available"),
    ("/ipythonExercice/demo/nosuch.ipynb/{id}", 404, "This notebook is not in the course"),
    ("/ipythonExercice/demo/%2e%2e/welcome.ipynb/{id}", 400, "invalid notebook path"),
    ("/ipythonExercice/demo/%2E%2E%2Fdemo%2Fwelcome.ipynb/{id}", 400, "invalid notebook path"),
    ("/ipythonExercice/demo/week1/..%2f..%2fwelcome.ipynb/{id}", 400, "invalid notebook path"),
    ("/ipythonExercice/demo/escape.ipynb/{id}", 400, "leaves the course"),
    ("/ipythonExercice/demo/week1/loops.txt/{id}", 400, "invalid notebook path"),
    ("/ipythonExercice/demo/welcome.ipynb/bad%20id", 400, "invalid student id"),
    ("/ipythonExercice/demo/welcome.ipynb/" + "a" * 300, 400, "invalid student id"),
    ("/ipythonExercice/demo/welcome.ipynb/%00abc", 400, "Bad Request"),  # nginx refuses NUL itself
    ("/ipythonExercice/Demo%40x/welcome.ipynb/{id}", 400, "invalid course name"),
    ("/ipythonExercice/demo/broken.ipynb/{id}", 500, "broken.ipynb is not valid JSON"),
]


def test_bad_requests_are_refused_and_change_nothing(nb: Nbunits, with_broken_master) -> None:
    users, units = nb.users(), nb.student_units()
    homes = sorted(p.name for p in nb.home.iterdir())

    async def scenario() -> list[tuple[str, int, str]]:
        answers = []
        async with client(nb) as session:
            for url, _, _ in CASES:
                # encoded=True: send the path as written, as a hostile client would.
                raw = yarl.URL(url.format(id=secrets.token_hex(16)), encoded=True)
                async with session.get(raw,
                                       allow_redirects=False) as resp:
                    answers.append((url, resp.status, await resp.text()))
        return answers

    for (url, status, words), (_, got, page) in zip(CASES, asyncio.run(scenario())):
        assert got == status, f"{url}: {got} {page[:300]}"
        assert words in page, f"{url}: {page[:300]}"
        assert "Traceback" not in page
    assert nb.users() == users, "a bad request created a user"
    assert nb.student_units() == units, "a bad request started a unit"
    assert sorted(p.name for p in nb.home.iterdir()) == homes, "a bad request wrote a home"
