import json

import pytest

from nbunits import staff
from nbunits.errors import NbunitsError

SECRET = "s3cret"


def test_links_verify_and_expire():
    url = staff.link(SECRET, "demo", "nbaaaaaaaaaaaaaaaa", "w1/a b.ipynb", hours=1, now=1000)
    assert url.startswith("/staff/demo/nbaaaaaaaaaaaaaaaa/w1/a%20b.ipynb?expires=4600&sig=")
    sig = url.rsplit("sig=", 1)[1]
    staff.check(SECRET, "demo", "nbaaaaaaaaaaaaaaaa", "w1/a b.ipynb", "4600", sig, now=2000)
    for args, now in [(("demo", "nbaaaaaaaaaaaaaaaa", "w1/a b.ipynb", "4600", sig), 5000),  # expired
                      (("demo", "nbbbbbbbbbbbbbbbbb", "w1/a b.ipynb", "4600", sig), 2000),  # other student
                      (("demo", "nbaaaaaaaaaaaaaaaa", "w1/a b.ipynb", "9999", sig), 2000),  # longer
                      (("demo", "nbaaaaaaaaaaaaaaaa", "w1/a b.ipynb", "x", sig), 2000)]:
        with pytest.raises(NbunitsError) as info:
            staff.check(SECRET, *args, now=now)
        assert info.value.code == "forbidden"
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
