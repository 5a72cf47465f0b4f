"""Admission control's arithmetic (admission.py) and the generator's recent students."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path

import pytest

from nbunits.admin.nginx import http_conf, locations_conf, template
from nbunits.core.config import ConfigError, Server, Settings
from nbunits.core.events import Event
from nbunits.core.names import StudentUnits
from nbunits.helper import activity
from nbunits.helper.admission import Admission, Busy


def test_new_students_per_minute_is_a_sliding_window_and_logged_once(tmp_path, caplog):
    admission = Admission(Server(new_students_per_minute=3), tmp_path, mem_total=1 << 34)
    for t in (0.0, 1.0, 2.0):
        admission.new_student(now=t)
    with caplog.at_level(logging.WARNING):
        for t in (3.0, 4.0, 5.0):
            with pytest.raises(Busy) as refused:
                admission.new_student("demo", "nbaaaaaaaaaaaaaaaa", now=t)
            assert refused.value.code == "busy" and refused.value.retry_after > 0
    lines = [r for r in caplog.records if "admission" in r.getMessage()]
    assert len(lines) == 1 and "3 new students per minute" in lines[0].getMessage()
    # The admin's line is issue 15's "capped" event, naming the launch that met the cap.
    event = lines[0].__dict__
    assert (event["MESSAGE_ID"], event["NBUNITS_EVENT"]) == (Event.CAPPED.value, "capped")
    assert (event["ADMISSION_CAP"], event["COURSE"], event["STUDENT"]) == (
        "new_students", "demo", "nbaaaaaaaaaaaaaaaa")
    admission.new_student(now=60.5)  # the first one left the window


def test_running_servers_are_capped_by_the_memory_budget(tmp_path):
    server = Server(memory_budget="1G", server_memory="256M")
    assert server.max_running(mem_total=1 << 40) == 4
    assert Server(server_memory="1G").max_running(mem_total=8 << 30) == 6  # 75% of RAM
    for user in ("nbaaaaaaaaaaaaaaaa", "nbbbbbbbbbbbbbbbbb"):
        (tmp_path / "demo").mkdir(exist_ok=True)
        (tmp_path / "demo" / f"{user}.sock").touch()  # their Jupyter sockets: running
    admission = Admission(server, tmp_path, mem_total=1 << 40)
    admission.start("demo", "nbcccccccccccccccc", now=0)
    admission.start("demo", "nbdddddddddddddddd", now=0)  # starting: counted
    admission.start("demo", "nbaaaaaaaaaaaaaaaa", now=0)  # running already: no new server
    with pytest.raises(Busy, match="full"):
        admission.start("demo", "nbeeeeeeeeeeeeeeee", now=1)
    admission.start("demo", "nbeeeeeeeeeeeeeeee", now=100)  # the starts are over (or failed)


def test_a_courses_own_caps_refuse_its_launches_and_leave_room_for_the_others(
        tmp_path, caplog):
    for user in ("nbaaaaaaaaaaaaaaaa", "nbbbbbbbbbbbbbbbbb"):
        (tmp_path / "a").mkdir(exist_ok=True)
        (tmp_path / "a" / f"{user}.sock").touch()  # two of course a's servers run
    state = tmp_path / "admission.json"
    admission = Admission(Server(new_students_per_minute=100), tmp_path, mem_total=1 << 40,
                          state_file=state)
    with caplog.at_level(logging.WARNING):
        for t in range(3):
            admission.new_student("a", f"nb{t:016d}", now=t, course_cap=3)
        for t in range(3, 10):  # a flood of made-up ids on course a
            with pytest.raises(Busy, match="this course"):
                admission.new_student("a", "nbcccccccccccccccc", now=t, course_cap=3)
            admission.new_student("b", f"nb{t:016d}", now=t)  # b's are served
        with pytest.raises(Busy, match="This course's notebook servers"):
            admission.start("a", "nbcccccccccccccccc", now=0, course_cap=2)
        admission.start("a", "nbaaaaaaaaaaaaaaaa", now=0, course_cap=2)  # runs already
        admission.start("b", "nbdddddddddddddddd", now=0, course_cap=2)
    admission.new_student("a", "nbcccccccccccccccc", now=61, course_cap=3)  # the window moved
    published = json.loads(state.read_text())
    assert published["courses"] == {"a": {"new_students": 7, "servers": 1}}
    assert published["refused_new_students"] == published["refused_servers"] == 0
    lines = [r.__dict__ for r in caplog.records if "admission" in r.getMessage()]
    assert [(e["ADMISSION_CAP"], e["COURSE"]) for e in lines] == [
        ("course_new_students", "a"), ("course_servers", "a")]
    assert "course a's cap of 3 new students per minute: refused 1 launch(es)" in lines[0]["msg"]


def test_caps_are_checked(tmp_path):
    for bad in ({"new_students_per_minute": 0}, {"memory_budget": "lots"},
                {"server_memory": "0M"}, {"launch_rate": -1}):
        with pytest.raises(ConfigError):
            Server(**bad)


def test_nginx_limits_launches_per_client():
    server = Server(names=("nb.example.org",), launch_rate=30, launch_burst=7)
    assert "limit_req_zone $binary_remote_addr zone=nbunits_launch:10m rate=30r/m;" in \
        http_conf(server)
    locations = locations_conf(server)
    assert locations.count("limit_req zone=nbunits_launch burst=7 nodelay;") == 2
    assert "add_header Retry-After 2 always;" in locations


def test_nginx_limits_each_students_actions():
    server = Server(names=("nb.example.org",))
    assert "limit_req_zone $nbunits_user zone=nbunits_student:10m rate=60r/m;" in \
        http_conf(server)
    locations = template("nbunits-students.conf")  # the students' locations, on any origin
    assert "include /etc/nginx/snippets/nbunits-students.conf;" in locations_conf(server)
    actions = locations.split('location ~ "^/_nbunits/student/', 1)[1].split("\n}\n", 1)[0]
    assert "limit_req zone=nbunits_student burst=60 nodelay;" in actions
    assert "error_page 503 = @nbunits_student_busy;" in actions
    busy = locations.split("location @nbunits_student_busy {", 1)[1].split("\n}\n", 1)[0]
    assert "application/json" in busy and "Retry-After" in busy and '"message"' in busy


def test_idle_marks_and_recent_students(tmp_path):
    settings = Settings(state_dir=tmp_path)
    activity.mark(settings, StudentUnits("demo", "nbaaaaaaaaaaaaaaaa"))
    activity.mark(settings, StudentUnits("demo", "nbbbbbbbbbbbbbbbbb"))
    old = time.time() - 3 * 86400
    os.utime(tmp_path / "recent" / "demo" / "nbaaaaaaaaaaaaaaaa", (old, old))
    assert activity.recent_students(settings, "demo") == ["nbaaaaaaaaaaaaaaaa",
                                                          "nbbbbbbbbbbbbbbbbb"]
    assert activity.idle_marks(settings, 86400) == [
        Path(tmp_path / "recent" / "demo" / "nbaaaaaaaaaaaaaaaa")]
    activity.mark(settings, StudentUnits("demo", "nbaaaaaaaaaaaaaaaa"))  # active again
    assert activity.idle_marks(settings, 86400) == []


def test_servers_start_a_few_at_a_time_in_order_and_never_wait_forever(tmp_path, caplog):
    assert Server().start_slots(cpus=2) == 2 and Server(concurrent_starts=3).start_slots(2) == 3
    with pytest.raises(ConfigError):
        Server(concurrent_starts=-1)
    admission = Admission(Server(concurrent_starts=2), tmp_path, mem_total=1 << 34)
    admission.queue_wait = 0.5
    began: list[int] = []
    now, most = 0, 0

    async def one(i: int, seconds: float) -> None:
        nonlocal now, most
        async with admission.start_slot("demo", f"nb{i:016x}"):
            began.append(i)
            now += 1
            most = max(most, now)
            await asyncio.sleep(seconds)
            now -= 1

    async def burst() -> None:
        await asyncio.gather(*(one(i, 0.05) for i in range(6)))

    async def stuck() -> float:
        # Two starts that hold their slots too long: the third waits queue_wait, then
        # goes ahead without one, and the admin is told once.
        blockers = [asyncio.create_task(one(i, 2)) for i in range(2)]
        await asyncio.sleep(0.01)
        t0 = time.monotonic()
        with caplog.at_level(logging.WARNING):
            async with admission.start_slot("demo", "nbcccccccccccccccc"):
                waited = time.monotonic() - t0
        await asyncio.gather(*blockers)
        return waited

    async def both() -> float:
        await burst()
        assert most == 2 and began == list(range(6))  # two at a time, first come first served
        return await stuck()

    assert 0.4 < asyncio.run(both()) < 1.5
    assert [r.getMessage() for r in caplog.records if "start slots" in r.getMessage()] == [
        "admission: 1 start(s) waited 0.5 s for one of the 2 start slots and went ahead "
        "anyway since the last such line (the host starts more servers than its CPUs keep "
        "up with)"]
    assert admission.slots._value == 2  # every slot given back  # noqa: SLF001


def test_the_helper_publishes_waiting_starts_and_refusals_for_the_metrics(tmp_path):
    state = tmp_path / "run" / "admission.json"
    admission = Admission(Server(concurrent_starts=1, new_students_per_minute=1), tmp_path,
                          mem_total=1 << 34, state_file=state)
    read = lambda: json.loads(state.read_text())  # noqa: E731
    assert read() == {"start_slots": 1, "waiting": 0, "unpaced": 0,
                      "refused_new_students": 0, "refused_servers": 0, "courses": {}}
    seen: list[int] = []

    async def one(i: int) -> None:
        async with admission.start_slot("demo", f"nb{i:016x}"):
            seen.append(read()["waiting"])
            await asyncio.sleep(0.05)

    async def three() -> None:
        tasks = [asyncio.create_task(one(i)) for i in range(3)]
        await asyncio.sleep(0.01)
        assert read()["waiting"] == 2  # one starts, two wait their turn
        await asyncio.gather(*tasks)

    # A start given up by its client (the connection closed while it waited) is
    # no longer counted as waiting.
    async def cancelled() -> None:
        async with admission.start_slot("demo", "nbaaaaaaaaaaaaaaaa"):
            waiter = asyncio.create_task(one(9))
            await asyncio.sleep(0.01)
            assert read()["waiting"] == 1
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
            assert read()["waiting"] == 0

    async def both() -> None:
        await three()
        assert seen == [0, 1, 0] and read()["waiting"] == 0
        await cancelled()

    asyncio.run(both())
    assert admission.slots._value == 1  # noqa: SLF001
    admission.new_student(now=0)
    for t in (1.0, 2.0):
        with pytest.raises(Busy):
            admission.new_student(now=t)
    assert read()["refused_new_students"] == 2  # a counter: not reset by the journal line


def test_the_metrics_count_each_courses_own_refusals(tmp_path):
    from nbunits.admin.metrics import Collector, State

    settings = Settings(run_dir=tmp_path)
    settings.admission_file.write_text(json.dumps({
        "start_slots": 2, "waiting": 0, "unpaced": 0, "refused_new_students": 1,
        "refused_servers": 0, "courses": {"a": {"new_students": 7}, "b": {"servers": 2}}}))
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in Collector(settings, State()).admission() for s in family.samples}
    assert samples[("nbunits_course_launches_refused_total",
                    (("cap", "new_students"), ("course", "a")))] == 7
    assert samples[("nbunits_course_launches_refused_total",
                    (("cap", "servers"), ("course", "a")))] == 0
    assert samples[("nbunits_course_launches_refused_total",
                    (("cap", "servers"), ("course", "b")))] == 2
    assert samples[("nbunits_launches_refused_total", (("cap", "new_students"),))] == 1
