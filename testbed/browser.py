"""What a browser does with a student's notebook, over HTTP and websockets.

Shared by the integration tests and the benchmarks: open the edX link, follow the
redirect, start a kernel, run code over the kernel websocket, save.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp


@dataclass(frozen=True)
class Opened:
    prefix: str  # /nb/<course>/<user>/<capability>/
    user: str
    token: str
    notebook: str
    page_status: int
    page: str
    # scheme://host of the student's own origin (per-student origins); "": the
    # server's name, the session's base.
    base: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def url(self, path: str = "") -> str:
        """A path of the student's Jupyter, as the session reaches it."""
        return f"{self.base}{self.prefix}{path}"


async def open_exercise(session: aiohttp.ClientSession, course: str, notebook: str,
                        student: str) -> Opened:
    """GET the edX link, check the redirect, then load the page it points to."""
    async with session.get(f"/ipythonExercice/{course}/{notebook}/{student}",
                           allow_redirects=False) as resp:
        body = await resp.text()
        assert resp.status == 302, f"dispatcher said {resp.status}: {body[:500]}"
        location = resp.headers["Location"]
    url = urlsplit(location)
    parts = url.path.split("/")
    assert parts[1] == "nb" and parts[2] == course, location
    prefix = "/".join(parts[:5]) + "/"
    token = parts[4]  # the capability is Jupyter's token too (nginx passes it on)
    async with session.get(location) as resp:
        page = await resp.text()
        status = resp.status
    base = f"{url.scheme}://{url.netloc}" if url.netloc else ""
    return Opened(prefix, parts[3], token, notebook, status, page, base)


async def start_kernel(session: aiohttp.ClientSession, opened: Opened) -> str:
    async with session.post(opened.url("api/kernels"), headers=opened.headers,
                            json={"name": "python3"}) as resp:
        assert resp.status == 201, f"POST api/kernels: {resp.status} {await resp.text()}"
        return str((await resp.json())["id"])


async def sessions(session: aiohttp.ClientSession, opened: Opened) -> list[dict]:
    async with session.get(opened.url("api/sessions"), headers=opened.headers) as resp:
        assert resp.status == 200, f"GET api/sessions: {resp.status} {await resp.text()}"
        return list(await resp.json())


async def open_notebook_kernel(session: aiohttp.ClientSession, opened: Opened) -> str:
    """The kernel of the opened notebook, as JupyterLab (and Notebook 7) gets it: the
    session of the notebook's path if there is one, else a new session (POST
    api/sessions, which starts the notebook's kernel). Its kernel id."""
    for found in await sessions(session, opened):
        if found.get("path") == opened.notebook:
            return str(found["kernel"]["id"])
    name = opened.notebook.rsplit("/", 1)[-1]
    async with session.post(opened.url("api/sessions"), headers=opened.headers, json={
            "path": opened.notebook, "name": name, "type": "notebook",
            "kernel": {"name": "python3"}}) as resp:
        assert resp.status == 201, f"POST api/sessions: {resp.status} {await resp.text()}"
        return str((await resp.json())["kernel"]["id"])


async def execute(session: aiohttp.ClientSession, opened: Opened, kernel_id: str, code: str,
                  timeout: float = 60) -> str:
    """Run `code` in the kernel over its websocket; the text/plain result."""
    return (await execute_showing(session, opened, kernel_id, code, timeout))[0]


async def execute_showing(session: aiohttp.ClientSession, opened: Opened, kernel_id: str,
                          code: str, timeout: float = 60, settle: float = 0) -> tuple[str, str]:
    """Run `code` in the kernel over its websocket: (the text/plain result, what the
    notebook shows of its stdout and stderr). With `settle`, what comes in that many
    seconds after the kernel is idle too, as a browser shows it: ipykernel forwards what
    subprocesses write to file descriptors 1 and 2 from a thread of its own, which a
    loaded machine may run only after the cell's end."""
    url = opened.url(f"api/kernels/{kernel_id}/channels")
    msg_id = uuid.uuid4().hex
    request = {
        "header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex,
                   "msg_type": "execute_request", "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": True,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
    }
    async with session.ws_connect(url, headers=opened.headers) as ws:
        await ws.send_str(json.dumps(request))
        result, shown = await asyncio.wait_for(_result_of(ws, msg_id), timeout)
        return result, shown + await _streams_within(ws, msg_id, settle)


async def _streams_within(ws: aiohttp.ClientWebSocketResponse, msg_id: str, seconds: float) -> str:
    shown = []
    deadline = asyncio.get_running_loop().time() + seconds
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        try:
            message = await asyncio.wait_for(ws.receive(), left)
        except TimeoutError:
            break
        if message.type != aiohttp.WSMsgType.TEXT:
            break
        reply = json.loads(message.data)
        if (reply.get("parent_header", {}).get("msg_id") == msg_id
                and reply["msg_type"] == "stream"):
            shown.append(str(reply["content"]["text"]))
    return "".join(shown)


async def _result_of(ws: aiohttp.ClientWebSocketResponse, msg_id: str) -> tuple[str, str]:
    """The result, and the streams' text until the kernel is idle again (output that
    subprocesses wrote to file descriptors 1 and 2 may come after the result)."""
    shown, result = [], None
    async for message in ws:
        if message.type != aiohttp.WSMsgType.TEXT:
            raise AssertionError(f"unexpected websocket message {message.type}")
        reply = json.loads(message.data)
        if reply.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind, content = reply["msg_type"], reply["content"]
        if kind == "stream":
            shown.append(str(content["text"]))
        elif kind == "execute_result":
            result = str(content["data"]["text/plain"])
        elif kind == "error":
            raise AssertionError(f"kernel error: {content}")
        elif kind == "status" and content.get("execution_state") == "idle" and result is not None:
            return result, "".join(shown)
    raise AssertionError("websocket closed before a result")


async def save_notebook(session: aiohttp.ClientSession, opened: Opened, marker: str) -> dict:
    """Load the notebook through the contents API, add a cell, save it back."""
    url = opened.url(f"api/contents/{opened.notebook}")
    async with session.get(url, headers=opened.headers) as resp:
        assert resp.status == 200, await resp.text()
        model = await resp.json()
    content = model["content"]
    content["cells"].append({"cell_type": "code", "source": marker, "metadata": {},
                             "outputs": [], "execution_count": None,
                             "id": uuid.uuid4().hex[:8]})
    async with session.put(url, headers=opened.headers,
                           json={"type": "notebook", "format": "json", "content": content}) as resp:
        assert resp.status == 200, f"save: {resp.status} {await resp.text()}"
        return dict(await resp.json())
