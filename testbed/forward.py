"""Reaching a box's nginx from this machine as a browser would: by name, over TCP.

A box has a network of its own (only its loopback); its nginx listens on the
ports a server uses (80, 443). `Forwarder` listens on an address of this machine's
loopback range and connects, for each client, to an address and port *inside* the
box: the connecting thread has entered the box's network namespace (setns), so
the bytes (TLS included, end to end) travel over real sockets on both sides.
`Names` maps server names to those local addresses, for aiohttp (a resolver),
Chromium (--host-resolver-rules) and anything else. Used by the tests, the demo
and the benchmarks.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import random
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aiohttp.abc import AbstractResolver

CLONE_NEWNET = 0x40000000


def enter_netns(pid: int) -> None:
    """Move the calling thread (only it) into the network namespace of `pid`."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into the network of PID {pid}: {os.strerror(err)}")
    finally:
        os.close(fd)


@dataclass
class Forwarder:
    """LISTEN_HOST:LISTEN_PORT on this machine -> TARGET_HOST:TARGET_PORT in the box
    whose PID 1 is `netns_pid` (or, with netns_pid 0, on this machine).

    `source` binds the box-side end to that address, so that the box sees this
    client as a given peer (a load balancer, an outsider)."""

    netns_pid: int
    target_port: int
    target_host: str = "127.0.0.1"
    listen_host: str = ""  # empty: a free address of 127.0.0.0/8, chosen at start
    listen_port: int = 0   # 0: the target's port
    source: str = ""
    _executor: ThreadPoolExecutor = field(init=False, repr=False)

    def start(self) -> Forwarder:
        self.listen_port = self.listen_port or self.target_port
        initializer: Any = (enter_netns, (self.netns_pid,)) if self.netns_pid else (None, ())
        self._executor = ThreadPoolExecutor(4, initializer=initializer[0], initargs=initializer[1],
                                            thread_name_prefix="forward")
        ready = threading.Event()
        failed: list[BaseException] = []
        threading.Thread(target=asyncio.run, args=(self._serve(ready, failed),),
                         daemon=True).start()
        if not ready.wait(10) or failed:
            raise RuntimeError(f"cannot listen on {self.listen_host}:{self.listen_port}: "
                               f"{failed[0] if failed else 'timed out'}")
        return self

    def _bind(self) -> socket.socket:
        """A listening socket on the chosen address, or on a free one of 127/8."""
        candidates = [self.listen_host] if self.listen_host else [
            f"127.{random.randint(64, 250)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
            for _ in range(20)]
        for host in candidates:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, self.listen_port))
            except OSError:
                sock.close()
                if self.listen_host:
                    raise
                continue
            sock.listen(1024)
            self.listen_host = host
            return sock
        raise OSError(f"no free loopback address for port {self.listen_port}")

    async def _serve(self, ready: threading.Event, failed: list[BaseException]) -> None:
        try:
            server = await asyncio.start_server(self._forward, sock=self._bind())
        except BaseException as exc:
            failed.append(exc)
            ready.set()
            return
        ready.set()
        async with server:
            await server.serve_forever()

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if self.source:
                sock.bind((self.source, 0))
            sock.connect((self.target_host, self.target_port))
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        return sock

    async def _forward(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            sock = await asyncio.get_running_loop().run_in_executor(self._executor, self._connect)
            box_r, box_w = await asyncio.open_connection(sock=sock)
        except OSError:
            client_w.close()
            return
        try:
            await asyncio.gather(self._pipe(client_r, box_w), self._pipe(box_r, client_w))
        finally:
            box_w.close()
            client_w.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            try:
                if writer.can_write_eof():
                    writer.write_eof()
                else:
                    writer.close()
            except (ConnectionError, OSError, RuntimeError):
                writer.close()


class Names(AbstractResolver):
    """Server names -> local addresses: the DNS of a test (for aiohttp, Chromium, curl).
    A name "*.DOMAIN" stands for every name under DOMAIN (a wildcard DNS record)."""

    def __init__(self, names: dict[str, str] | None = None) -> None:
        self.names = dict(names or {})

    def add(self, name: str, address: str) -> None:
        self.names[name] = address

    def address(self, host: str) -> str | None:
        if host in self.names:
            return self.names[host]
        _, dot, parent = host.partition(".")
        return self.names.get(f"*.{parent}") if dot else None

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[dict[str, Any]]:
        address = self.address(host)
        if address is None:
            raise OSError(f"test DNS: no address for {host}")
        return [{"hostname": host, "host": address, "port": port,
                 "family": socket.AF_INET, "proto": 0, "flags": socket.AI_NUMERICHOST}]

    async def close(self) -> None:
        pass

    def chromium_rules(self) -> str:
        return ", ".join(f"MAP {name} {address}" for name, address in self.names.items())

    def curl_args(self, port: int, *hosts: str) -> list[str]:
        """curl has no wildcards: name the hosts under a "*." entry in `hosts`."""
        named = {name: address for name, address in self.names.items() if "*" not in name}
        named |= {host: address for host in hosts if (address := self.address(host))}
        return [f"--resolve={name}:{port}:{address}" for name, address in named.items()]
