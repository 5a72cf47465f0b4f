"""The peer: JupyterHub + SystemdSpawner (what The Littlest JupyterHub runs), in the box.

The hub's venv (/opt/nbunits-bench/jupyterhub, made by bench/setup-peer on the host)
is visible in the box through the overlay. Same jupyter_server/notebook versions as
the nbunits image; the single-user server runs on the host as the user, not in a
container, as TLJH does.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path

from .box import PEER_VENV, SHARED_IN_BOX, Bench

CONFIG = """\
from jupyterhub.auth import DummyAuthenticator, LocalAuthenticator


class BenchAuthenticator(LocalAuthenticator, DummyAuthenticator):
    '''Creates the system user when the hub adds a user, as TLJH's first login does.'''


c.JupyterHub.authenticator_class = BenchAuthenticator
c.LocalAuthenticator.create_system_users = True
c.LocalAuthenticator.add_user_cmd = ["useradd", "--create-home", "--shell", "/usr/sbin/nologin",
                                     "--user-group"]
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = 8000
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = 8081
c.JupyterHub.db_url = "sqlite:////srv/jh/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "/srv/jh/cookie_secret"
c.ConfigurableHTTPProxy.command = ["{venv}/node_modules/.bin/configurable-http-proxy"]
c.ConfigurableHTTPProxy.pid_file = "/srv/jh/proxy.pid"
c.JupyterHub.spawner_class = "systemdspawner.SystemdSpawner"
c.Spawner.cmd = ["{venv}/bin/jupyterhub-singleuser"]
c.Spawner.default_url = "/tree"
# What TLJH sets.
c.SystemdSpawner.extra_paths = ["{venv}/bin"]
c.SystemdSpawner.isolate_tmp = True
c.SystemdSpawner.isolate_devices = True
c.SystemdSpawner.disable_user_sudo = True
c.SystemdSpawner.unit_name_template = "jupyter-{{USERNAME}}"
c.SystemdSpawner.slice = "user.slice"
c.JupyterHub.services = [{{"name": "bench", "api_token": "{token}"}}]
c.JupyterHub.load_roles = [{{
    "name": "bench",
    "scopes": ["admin:users", "admin:servers", "access:servers", "read:users"],
    "services": ["bench"],
}}]
"""


def peer_runs(bench: Bench, n: int) -> dict:
    if not (PEER_VENV / "bin" / "jupyterhub").exists():
        return {"error": f"{PEER_VENV} missing: run bench/setup-peer"}
    box = bench.box
    token = secrets.token_hex(32)
    box.run("install", "-d", "-m", "0700", "/srv/jh")
    box.write_file("/srv/jh/jupyterhub_config.py", CONFIG.format(venv=PEER_VENV, token=token))
    bench.shared.joinpath("peer_client.py").write_text(
        Path(__file__).with_name("peer_client.py").read_text())
    box.systemctl("reset-failed", "jupyterhub.service", check=False)
    box.nsenter("systemd-run", "--unit=jupyterhub", "--collect",
                "--property=WorkingDirectory=/srv/jh",
                f"--setenv=PATH={PEER_VENV}/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                f"{PEER_VENV}/bin/jupyterhub", "-f", "/srv/jh/jupyterhub_config.py")
    try:
        out = box.run(f"{PEER_VENV}/bin/python3", f"{SHARED_IN_BOX}/peer_client.py", str(n),
                      token, "jhpeer", timeout=900).stdout
        runs = json.loads(out)
    except Exception as exc:  # noqa: BLE001 -- report why, do not lose the rest of the run
        return {"error": f"{exc}"[:2000], "journal": box.journal("jupyterhub.service", lines=40)}
    finally:
        box.systemctl("stop", "jupyterhub.service", check=False)
        box.systemctl("stop", "jupyter-jhpeer*.service", check=False)
    return {"ready": [r["ready"] for r in runs],
            "user_created": [r["user_created"] for r in runs],
            "spawn_answered": [r["spawn_answered"] for r in runs],
            "page": [r["page"] for r in runs], "output": [r["output"] for r in runs],
            "versions": versions()}


def versions() -> dict[str, str]:
    """What the peer was, as installed by bench/setup-peer (pinned there)."""
    found = {}
    for package in ("jupyterhub", "jupyterhub-systemdspawner", "jupyter_server", "notebook"):
        out = subprocess.run([str(PEER_VENV / "bin" / "pip"), "show", package], check=False,
                             capture_output=True, text=True).stdout
        found[package] = next((line.split(":", 1)[1].strip() for line in out.splitlines()
                               if line.startswith("Version:")), "?")
    chp = PEER_VENV / "node_modules" / "configurable-http-proxy" / "package.json"
    found["configurable-http-proxy"] = (json.loads(chp.read_text()).get("version", "?")
                                        if chp.exists() else "?")
    return found
