"""How many students move when hosts are added or removed, through real nginx.

    python3 -m bench.hashmoves [--ids 10000] [--sizes 3,10] [--json FILE]

Runs nginx on this machine's loopback (a process started and stopped here, by its
PID): the front's http-level configuration exactly as `nbunits install --front`
renders it (nbunits.admin.nginx.front_conf: the student map and the consistent-hash
upstream), a server that passes every request to it, and N "hosts" (server blocks
on 127.0.2.1..N) that answer their own address. 10,000 student ids (their user
names, as nbunits derives them) are asked for as /nb/<course>/<user>/... paths
with N hosts, then N+1 (one added), then N-1 (one removed); for each change it
counts the students whose host changed, where they went, and how evenly the
hosts are loaded. It also checks testbed/ketama.py (the tests' model of nginx's
hash) against what nginx did.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

from nbunits.admin.nginx import front_conf
from nbunits.core.config import Server
from nbunits.core.names import user_for
from testbed.ketama import Ring

PORT = 18417
FRONT = "127.0.2.254"


def host(i: int) -> str:
    return f"127.0.2.{i}:{PORT}"


def conf(hosts: list[str], prefix: Path) -> str:
    front = front_conf(Server(names=("notebooks.example.org",), hosts=tuple(hosts)))
    answering = "\n".join(f"    server {{ listen {h}; access_log off; return 200 \"{h}\"; }}"
                          for h in hosts)
    return f"""pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
worker_processes 1;
events {{ worker_connections 1024; }}
http {{
{front}
    server {{
        listen {FRONT}:{PORT};
        access_log off;
        location / {{ proxy_pass http://nbunits_hosts; proxy_http_version 1.1;
                     proxy_set_header Connection ""; }}
    }}
{answering}
}}
"""


def route(hosts: list[str], users: list[str]) -> dict[str, str]:
    """Each user's host, as a real nginx front with these hosts answers."""
    with tempfile.TemporaryDirectory(prefix="nbunits-hashmoves-", dir="/var/tmp") as tmp:
        prefix = Path(tmp)
        (prefix / "nginx.conf").write_text(conf(hosts, prefix))
        subprocess.run(["nginx", "-q", "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
                       check=True)
        pid = int((prefix / "nginx.pid").read_text())
        try:
            found = {}
            connection = http.client.HTTPConnection(FRONT, PORT, timeout=10)
            for user in users:
                connection.request("GET", f"/nb/demo/{user}/cap/api/status")
                response = connection.getresponse()
                found[user] = response.read().decode()
                assert response.status == 200, (response.status, found[user])
            connection.close()
            return found
        finally:
            os.kill(pid, signal.SIGQUIT)
            for _ in range(100):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.05)


def change(users: list[str], before: dict[str, str], after: dict[str, str]) -> dict:
    moved = [u for u in users if before[u] != after[u]]
    return {"moved": len(moved), "moved_share": round(len(moved) / len(users), 4),
            "moved_to": dict(Counter(after[u] for u in moved)),
            "moved_from": dict(Counter(before[u] for u in moved))}


def balance(users: list[str], placed: dict[str, str]) -> dict:
    load = Counter(placed[u] for u in users).values()
    mean = len(users) / len(load)
    return {"max_over_mean": round(max(load) / mean, 3), "min_over_mean": round(min(load) / mean, 3),
            "stdev_over_mean": round(statistics.pstdev(load) / mean, 3)}


def measure(n: int, users: list[str]) -> dict:
    hosts = [host(i) for i in range(1, n + 1)]
    added = [*hosts, host(n + 1)]
    removed = [h for h in hosts if h != host(2)]
    started = time.monotonic()
    with_n, with_added, with_removed = (route(h, users) for h in (hosts, added, removed))
    seconds = time.monotonic() - started
    model = 0
    for servers, placed in ((hosts, with_n), (added, with_added), (removed, with_removed)):
        ring = Ring(servers)
        model += sum(ring.host(u) != placed[u] for u in users)
    add, remove = change(users, with_n, with_added), change(users, with_n, with_removed)
    return {
        "hosts": n, "ids": len(users), "requests": 3 * len(users),
        "seconds": round(seconds, 1),
        "add_one": {**add, "expected_share": round(1 / (n + 1), 4),
                    "only_to_the_new_host": set(add["moved_to"]) <= {host(n + 1)}},
        "remove_one": {**remove, "expected_share": round(1 / n, 4),
                       "only_its_students": set(remove["moved_from"]) <= {host(2)},
                       "students_it_had": sum(1 for u in users if with_n[u] == host(2))},
        "balance_n": balance(users, with_n),
        "model_mismatches": model,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", type=int, default=10_000)
    parser.add_argument("--sizes", default="3,10")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    users = [user_for(f"bench-student-{i}") for i in range(args.ids)]
    results = [measure(int(n), users) for n in args.sizes.split(",")]
    for r in results:
        a, d = r["add_one"], r["remove_one"]
        print(f"N={r['hosts']}: add one -> {a['moved']} of {r['ids']} moved "
              f"({a['moved_share']:.1%}, 1/(N+1) = {a['expected_share']:.1%}), all to the new "
              f"host: {a['only_to_the_new_host']}; remove one -> {d['moved']} moved, its own "
              f"{d['students_it_had']}: {d['only_its_students']}; load max/mean "
              f"{r['balance_n']['max_over_mean']}; ketama model mismatches "
              f"{r['model_mismatches']}; {r['requests']} requests in {r['seconds']} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
