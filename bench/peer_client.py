"""JupyterHub's side of the comparison, run inside the box with the hub's own venv.

For each new user: create it through the hub's REST API (LocalAuthenticator then
runs useradd, as TLJH does at first login), start its server (SystemdSpawner:
a transient unit running jupyterhub-singleuser as the user), and poll the server's
/api/status through configurable-http-proxy until it answers 200. Then what a
student's browser does next, as the nbunits bench's does it (bench/parts.py
one_cold): the notebook (put in the user's home, as a course's copy), its page, its
kernel (a new session: nothing starts one ahead there) and `1+1` run over the
kernel's websocket. Prints JSON.

    python3 peer_client.py N TOKEN PREFIX
"""

from __future__ import annotations

import json
import sys
import time
import uuid

import requests
import websocket

HUB = "http://127.0.0.1:8081/hub/api"
PROXY = "http://127.0.0.1:8000"


def wait_hub(session: requests.Session) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if session.get(f"{HUB}/", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit("the hub did not answer within 90 s")


def one(session: requests.Session, name: str) -> dict:
    t0 = time.monotonic()
    r = session.post(f"{HUB}/users/{name}")
    assert r.status_code == 201, (r.status_code, r.text[:300])
    t_user = time.monotonic()
    r = session.post(f"{HUB}/users/{name}/server")
    assert r.status_code in (201, 202), (r.status_code, r.text[:300])
    t_spawn = time.monotonic()
    while True:
        try:
            r = session.get(f"{PROXY}/user/{name}/api/status", allow_redirects=False, timeout=5)
            if r.status_code == 200:
                break
        except requests.RequestException:
            pass
        if time.monotonic() - t0 > 120:
            raise SystemExit(f"{name}: no ready server within 120 s")
        time.sleep(0.01)
    t_ready = time.monotonic()
    server = f"{PROXY}/user/{name}"
    r = session.put(f"{server}/api/contents/{NOTEBOOK}", json={
        "type": "notebook", "format": "json", "content": {
            "cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}})
    assert r.status_code in (200, 201), (r.status_code, r.text[:300])
    r = session.get(f"{server}/notebooks/{NOTEBOOK}")
    assert r.status_code == 200, (r.status_code, r.text[:300])
    t_page = time.monotonic()
    r = session.post(f"{server}/api/sessions", json={
        "path": NOTEBOOK, "name": NOTEBOOK, "type": "notebook", "kernel": {"name": "python3"}})
    assert r.status_code == 201, (r.status_code, r.text[:300])
    assert run(server, r.json()["kernel"]["id"], session.headers["Authorization"]) == "2"
    t_output = time.monotonic()
    return {"user": name, "user_created": t_user - t0, "spawn_answered": t_spawn - t0,
            "ready": t_ready - t0, "page": t_page - t0, "output": t_output - t0}


NOTEBOOK = "welcome.ipynb"


def run(server: str, kernel: str, auth: str) -> str:
    """`1+1` in the kernel over its websocket: the text/plain result."""
    ws = websocket.create_connection(
        f"{server.replace('http://', 'ws://')}/api/kernels/{kernel}/channels",
        header=[f"Authorization: {auth}"], timeout=60)
    try:
        msg_id = uuid.uuid4().hex
        ws.send(json.dumps({
            "header": {"msg_id": msg_id, "username": "bench", "session": uuid.uuid4().hex,
                       "msg_type": "execute_request", "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": "1+1", "silent": False, "store_history": False,
                        "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}}))
        while True:
            message = json.loads(ws.recv())
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if message["msg_type"] == "execute_result":
                return str(message["content"]["data"]["text/plain"])
            if message["msg_type"] == "error":
                raise SystemExit(f"kernel error: {message['content']}")
    finally:
        ws.close()


def main() -> None:
    n, token, prefix = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    session = requests.Session()
    session.headers["Authorization"] = f"token {token}"
    wait_hub(session)
    runs = []
    for i in range(n + 1):  # the first one warms the page cache and the hub: not counted
        result = one(session, f"{prefix}{i:03d}")
        session.delete(f"{HUB}/users/{result['user']}/server")
        if i:
            runs.append(result)
    print(json.dumps(runs))


if __name__ == "__main__":
    main()
