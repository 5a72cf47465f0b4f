"""The seccomp profile of students' containers when a course refuses nested user
namespaces (the course setting `user_namespaces`, README "Security").

podman's default profile (containers-common's seccomp.json) allows clone, clone3
and unshare with any flags, so a kernel can make user namespaces of its own, and
with them reach kernel code (mount, netfilter, ...) that an unprivileged user
otherwise cannot: the usual first step of a kernel exploit. This profile is that
default with CLONE_NEWUSER refused (EPERM) in clone and unshare, and clone3
answered ENOSYS (its flags are behind a pointer seccomp cannot read; libc then
falls back to clone), as Docker's default profile does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .files import write_atomic

DEFAULT_SECCOMP = Path("/usr/share/containers/seccomp.json")
NO_USERNS_PROFILE = "seccomp-no-userns.json"  # in /etc/nbunits
CLONE_NEWUSER = 0x10000000
EPERM, ENOSYS = 1, 38
GUARDED = ("clone", "unshare")


def without_user_namespaces(default: dict[str, Any]) -> dict[str, Any]:
    rules = []
    for rule in default["syscalls"]:
        names = [n for n in rule.get("names", []) if n not in (*GUARDED, "clone3")]
        if names != rule.get("names", []) and rule.get("action") != "SCMP_ACT_ALLOW":
            names = rule.get("names", [])  # a rule that refuses: keep it as it is
        if names:
            rules.append({**rule, "names": names})
    flag = {"index": 0, "value": CLONE_NEWUSER, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}
    rules += [
        {"names": list(GUARDED), "action": "SCMP_ACT_ALLOW", "args": [flag]},
        {"names": list(GUARDED), "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM,
         "args": [{**flag, "valueTwo": CLONE_NEWUSER}]},
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
    ]
    return {**default, "syscalls": rules}


def write_profile(etc_dir: Path, default: Path = DEFAULT_SECCOMP) -> Path:
    path = etc_dir / NO_USERNS_PROFILE
    profile = without_user_namespaces(json.loads(default.read_text()))
    write_atomic(path, json.dumps(profile, indent=1) + "\n", 0o644)
    return path
