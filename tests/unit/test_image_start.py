"""images/nbunits_start.py: the image's Jupyter launcher. Its regex cache must give
exactly what `re` compiles, and only to the Python that wrote it."""

import importlib.util
import marshal
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]

PATTERNS: list[tuple[str | bytes, int]] = [
    (r"(?P<major>\d+)\.(?P<minor>\d+)\.(?P<patch>\d+)(?P<rest>.*)", 0),
    (r"^[a-z]+(?:-[a-z]+)*$", re.IGNORECASE | re.MULTILINE),
    ("\\s* ([0-9]+)  # digits\n", re.VERBOSE),
    (rb"(__libc_init)|(GLIBC_([0-9.]+))", 0),
    (r"[^\x00-\x7f]+|(?<=a)b(?!c)", re.ASCII),
]
SAMPLES: list[str] = ["1.2.3-beta", "abc-def", "ABC-", "  # note", "xé ab abc", ""]


@pytest.fixture
def start() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location(
        "nbunits_start", REPO / "images" / "nbunits_start.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    re.purge()
    yield module
    re.purge()


def test_cached_patterns_are_what_re_compiles(start: ModuleType, tmp_path: Path) -> None:
    cache = str(tmp_path / "regex-cache.marshal")
    assert start.write_cache(cache, PATTERNS + PATTERNS) == len(PATTERNS)
    fresh = {key: re.compile(*key) for key in PATTERNS}
    re.purge()
    assert start.load_cache(cache) == len(PATTERNS)
    for (pattern, flags), expected in fresh.items():
        cached = re.compile(pattern, flags)
        assert cached is not expected  # from the cache, not compiled again
        assert (cached.pattern, cached.flags, cached.groups, cached.groupindex) == (
            expected.pattern, expected.flags, expected.groups, expected.groupindex)
        for text in SAMPLES:
            subject: str | bytes = text.encode() if isinstance(pattern, bytes) else text
            got, want = cached.search(subject), expected.search(subject)
            assert (got and (got.span(), got.groups())) == (want and (want.span(), want.groups()))


def test_the_recorded_servers_routes_are_left_out(start: ModuleType, tmp_path: Path) -> None:
    route = f"/{start.RECORD_BASE}/api/kernels/(?P<kernel_id>\\w+-\\w+)"
    assert start.write_cache(str(tmp_path / "cache"), [*PATTERNS, (route, 0)]) == len(PATTERNS)


def test_a_cache_from_another_python_is_ignored(start: ModuleType, tmp_path: Path) -> None:
    cache = tmp_path / "regex-cache.marshal"
    start.write_cache(str(cache), PATTERNS)
    stamp, entries = marshal.loads(cache.read_bytes())
    cache.write_bytes(marshal.dumps((("3.11.0 (other build)", *stamp[1:]), entries)))
    assert start.load_cache(str(cache)) == 0
    cache.write_bytes(b"not marshal")
    assert start.load_cache(str(cache)) == 0
    assert start.load_cache(str(tmp_path / "missing")) == 0


def test_lazy_modules_run_on_first_use(start: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    # A module nothing has imported yet: executing it would insert it in sys.modules' listing.
    monkeypatch.setattr(start, "LAZY_MODULES", frozenset({"tomllib"}))
    monkeypatch.delitem(sys.modules, "tomllib", raising=False)
    finder = start._LazyFinder()
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
    import tomllib

    assert type(tomllib).__name__ == "_LazyModule"  # imported, not yet run
    assert tomllib.loads("a = 1") == {"a": 1}
    assert type(tomllib).__name__ == "module"
