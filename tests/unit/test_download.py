"""'Download my work': the zip of a student's course folder that their own Jupyter
streams (units/jupyter/jupyter_server_config.py). Their files and folders only: no
symlink followed or stored, no checkpoints; written to a stream that cannot seek."""

from __future__ import annotations

import asyncio
import io
import os
import runpy
import threading
import zipfile
from pathlib import Path
from typing import Any

import pytest
from traitlets.config import Config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return runpy.run_path(str(REPO / "units" / "jupyter" / "jupyter_server_config.py"),
                          init_globals={"get_config": lambda: Config()})


class Stream:
    """A response body: write only (no seek, no tell)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)

    def flush(self) -> None:
        pass


def a_course_folder(tmp_path: Path) -> Path:
    """A student's folder: their copies, links into the published course, and worse."""
    published = tmp_path / "course"
    (published / "data").mkdir(parents=True)
    (published / "data" / "big.csv").write_text("published data\n")
    (published / "helpers.py").write_text("published = 1\n")
    outside = tmp_path / "other-student"
    outside.mkdir()
    (outside / "secret.txt").write_text("not yours\n")
    work = tmp_path / "work"
    (work / "week1" / ".ipynb_checkpoints").mkdir(parents=True)
    (work / ".ipynb_checkpoints").mkdir()
    (work / "welcome.ipynb").write_text('{"cells": ["mine"]}')
    (work / ".ipynb_checkpoints" / "welcome-checkpoint.ipynb").write_text("old")
    (work / "week1" / "loops.ipynb").write_text("loops")
    (work / "week1" / ".ipynb_checkpoints" / "loops-checkpoint.ipynb").write_text("old")
    (work / "notes").mkdir()
    (work / "notes" / "todo.txt").write_bytes(os.urandom(700_000))  # several chunks
    (work / "empty").mkdir()
    os.symlink(published / "helpers.py", work / "helpers.py")  # notebooks.link_tree's
    os.symlink(published / "data", work / "data")
    os.symlink("/etc/passwd", work / "notes" / "passwd")  # a student's own links
    os.symlink(outside, work / "other")
    os.symlink("..", work / "week1" / "up")
    os.mkfifo(work / "notes" / "pipe")
    return work


def test_the_archive_holds_the_students_files_and_folders_only(config, tmp_path):
    work = a_course_folder(tmp_path)
    out = Stream()
    counts = config["zip_folder"](str(work), "s16", out)
    with zipfile.ZipFile(io.BytesIO(out.data)) as archive:
        assert archive.testzip() is None
        names = sorted(archive.namelist())
        assert names == ["s16/", "s16/empty/", "s16/notes/", "s16/notes/todo.txt", "s16/week1/",
                         "s16/week1/loops.ipynb", "s16/welcome.ipynb"], names
        assert archive.read("s16/welcome.ipynb") == b'{"cells": ["mine"]}'
        assert archive.read("s16/notes/todo.txt") == (work / "notes" / "todo.txt").read_bytes()
    assert counts == {"files": 3, "bytes": 700_000 + 19 + 5, "folders": 4, "links": 5,
                      "other": 1, "unreadable": 0}


def test_a_folder_given_as_a_symlink_is_not_followed(config, tmp_path):
    work = a_course_folder(tmp_path)
    os.symlink(work, tmp_path / "link")
    with pytest.raises(OSError):
        config["zip_folder"](str(tmp_path / "link"), "s16", Stream())


def test_folders_deeper_than_the_bound_are_an_error_not_a_recursion(config, tmp_path):
    deep = tmp_path / "work" / "/".join(["d"] * (config["DOWNLOAD_MAX_DEPTH"] + 1))
    deep.mkdir(parents=True)
    with pytest.raises(OSError, match="deeper than"):
        config["zip_folder"](str(tmp_path / "work"), "s16", Stream())


@pytest.mark.parametrize(("base_url", "name"), [
    ("/nb/s16/nbabcdefghijklmnop/" + "A" * 22 + ".1.2/", "s16-my-work-2026-12-07.zip"),
    ("/nb/data-science_2/nbabcdefghijklmnop/cap/", "data-science_2-my-work-2026-12-07.zip"),
    ("/", "work-my-work-2026-12-07.zip"),
    ('/nb/x"y/u/c/', "work-my-work-2026-12-07.zip"),
])
def test_the_archive_is_named_after_the_course_and_the_day(config, base_url, name):
    assert config["download_name"](base_url, "2026-12-07")[1] == name


def test_a_download_no_one_reads_any_more_ends_the_walk(config, tmp_path):
    """The walk waits while the browser is behind, and ends once it is gone."""
    threads = threading.active_count()
    work = tmp_path / "work"
    work.mkdir()
    for n in range(8):
        (work / f"f{n}").write_bytes(os.urandom(300_000))

    async def go() -> None:
        loop = asyncio.get_running_loop()
        pipe = config["ArchivePipe"](loop, asyncio.Queue(maxsize=1))
        walk = loop.run_in_executor(None, pipe.produce, str(work), "s16")
        first = await pipe.queue.get()
        assert isinstance(first, bytes) and len(first) >= pipe.CHUNK
        await asyncio.sleep(0.2)
        assert not walk.done() and pipe.queue.full()  # held back, not run ahead
        pipe.gone.set()
        while not walk.done():
            while not pipe.queue.empty():
                pipe.queue.get_nowait()
            await asyncio.wait({walk}, timeout=0.05)
        await walk  # ended quietly: no exception sent to a handler that left
        assert all(isinstance(item, bytes) for item in pipe.queue._queue)

    asyncio.run(go())
    assert threading.active_count() <= threads  # the walk's thread ended with it


def test_a_whole_download_ends_with_its_counts_and_none(config, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "a.txt").write_text("a")

    async def go() -> list[object]:
        loop = asyncio.get_running_loop()
        pipe = config["ArchivePipe"](loop, asyncio.Queue(maxsize=4))
        walk = loop.run_in_executor(None, pipe.produce, str(work), "s16")
        items = []
        while (item := await pipe.queue.get()) is not None:
            items.append(item)
        await walk
        return items

    chunk, counts = asyncio.run(go())
    assert isinstance(chunk, bytes) and zipfile.ZipFile(io.BytesIO(chunk)).namelist() == [
        "s16/", "s16/a.txt"]
    assert counts["files"] == 1
