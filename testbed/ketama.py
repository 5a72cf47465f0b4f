"""nginx's `hash KEY consistent` (ngx_http_upstream_hash_module.c), in Python:
which host the front gives a student, to predict what adding or removing a host
moves. The tests and bench/hashmoves.py check it against real nginx.

Each server gets 160 points (weight 1) on a ring of CRC32 values, chained from
crc32(host "\\0" port); a key goes to the first point at or after crc32(key),
wrapping around; a server that is down passes the key to the next point.
"""

from __future__ import annotations

import bisect
import zlib
from collections.abc import Iterable, Sequence

POINTS = 160


class Ring:
    def __init__(self, servers: Sequence[str]) -> None:
        points: dict[int, str] = {}
        ordered: list[tuple[int, str]] = []
        for server in servers:
            host, _, port = server.rpartition(":")
            # crc32(HOST \0 PORT PREV_HASH), PREV_HASH little-endian (x86)
            base = zlib.crc32(host.encode() + b"\0" + port.encode())
            prev = 0
            for _ in range(POINTS):
                point = zlib.crc32(prev.to_bytes(4, "little"), base)
                ordered.append((point, server))
                prev = point
        ordered.sort(key=lambda p: p[0])  # stable, as nginx's qsort is not; ties are rare
        for point, server in ordered:  # nginx keeps the first of equal points
            points.setdefault(point, server)
        self.hashes = sorted(points)
        self.servers = [points[h] for h in self.hashes]

    def host(self, key: str, down: Iterable[str] = ()) -> str:
        skip = set(down)
        i = bisect.bisect_left(self.hashes, zlib.crc32(key.encode()))
        for step in range(len(self.servers)):
            server = self.servers[(i + step) % len(self.servers)]
            if server not in skip:
                return server
        raise LookupError("every server is down")
