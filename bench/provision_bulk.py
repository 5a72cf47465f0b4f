"""Run in the bench box, as root, with the product's Python (bench/scale.py).

    provision_bulk.py ensure N          time N users.ensure() of new students, and lookups
    provision_bulk.py bulk N COURSE     provision N students as the helper would

Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import pwd
import secrets
import statistics
import sys
import time

from nbunits.core.config import load_course, load_settings
from nbunits.core.errors import NbunitsError
from nbunits.core.names import StudentUnits, uid_for, user_for
from nbunits.helper import users
from nbunits.helper.provision import ensure_token


def lookups(settings, n: int = 200) -> dict:
    """Seconds per getpwnam/getpwuid of existing students (nss-systemd, userdb)."""
    names = [n for n in os.listdir(settings.userdb_dir) if n.endswith(".user")
             and n.startswith("nb")][:n]
    by_name, by_uid = [], []
    for name in names:
        t0 = time.perf_counter()
        entry = pwd.getpwnam(name[:-5])
        by_name.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        pwd.getpwuid(entry.pw_uid)
        by_uid.append(time.perf_counter() - t0)
    return {"getpwnam": statistics.median(by_name) if by_name else None,
            "getpwuid": statistics.median(by_uid) if by_uid else None, "n": len(names)}


async def ensure_times(settings, n: int) -> list[float]:
    times = []
    for _ in range(n):
        student = secrets.token_hex(16)
        t0 = time.perf_counter()
        await users.ensure(settings, student)
        times.append(time.perf_counter() - t0)
    return times


async def bulk(settings, n: int, course: str) -> dict:
    config = load_course(settings, course)
    collisions, sample = 0, []
    for i in range(n):
        student = secrets.token_hex(16)
        try:
            await users.ensure(settings, student)
        except NbunitsError as exc:
            if exc.code != "student_collision":
                raise
            collisions += 1  # refused, as the helper would: counted, not created
            continue
        ensure_token(settings, config, StudentUnits(course, user_for(student)), running=False)
        if i % max(1, n // 20) == 0:
            sample.append(student)
    return {"n": n, "uid_collisions_refused": collisions, "sample": sample}


def _bulk_worker(args: tuple[int, str]) -> dict:
    # Batch only: nss-systemd also asks PID 1's io.systemd.DynamicUser (uids
    # 61184-65519, never a student's) at every lookup; the batch skips that round
    # trip. The per-student cost measured above ("ensure") does not.
    os.environ["SYSTEMD_BYPASS_USERDB"] = "io.systemd.DynamicUser"
    n, course = args
    return asyncio.run(bulk(load_settings(), n, course))


def main() -> None:
    settings = load_settings()
    mode, n = sys.argv[1], int(sys.argv[2])
    if mode == "ensure":
        times = asyncio.run(ensure_times(settings, n))
        result = {"ensure": statistics.median(times), "ensure_all": times,
                  "lookups": lookups(settings)}
    else:
        t0 = time.monotonic()
        workers = os.cpu_count() or 1
        with multiprocessing.Pool(workers) as pool:
            parts = pool.map(_bulk_worker, [(n // workers + (i < n % workers), sys.argv[3])
                                            for i in range(workers)])
        result = {"n": n, "workers": workers,
                  "uid_collisions_refused": sum(p["uid_collisions_refused"] for p in parts),
                  "sample": [s for p in parts for s in p["sample"]],
                  "seconds": time.monotonic() - t0}
        result["check_uid"] = uid_for(result["sample"][0]) if result["sample"] else None
    print(json.dumps(result))


if __name__ == "__main__":
    main()
