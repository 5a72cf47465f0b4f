"""The seccomp profiles of students' containers: podman's default, without btrfs
subvolumes, and without nested user namespaces unless the course allows them (the
course setting `user_namespaces`, docs/security.md, "Container settings").

podman's default profile (containers-common's seccomp.json) allows clone, clone3
and unshare with any flags, so a kernel can make user namespaces of its own, and
with them reach kernel code (mount, netfilter, ...) that an unprivileged user
otherwise cannot: the usual first step of a kernel exploit. This profile is that
default with CLONE_NEWUSER refused (EPERM) in clone and unshare, and clone3
answered ENOSYS (its flags are behind a pointer seccomp cannot read; libc then
falls back to clone), as Docker's default profile does.

Neither profile lets a kernel make a btrfs subvolume or snapshot: a disk quota on
btrfs is a qgroup of the course's subvolumes (btrfs.py), and a subvolume made
inside one would be outside it, a way past the quota that needs no privilege.
Those ioctls are refused (EPERM): every `_IOW(0x94, nr, struct
btrfs_ioctl_vol_args)`, 0x500094xx (SNAP_CREATE, SUBVOL_CREATE and their _V2;
the rest of that family needs CAP_SYS_ADMIN anyway), whatever the request's
high 32 bits (the kernel ignores them). Reflinks (FICLONE, 0x40049409) stay allowed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nbunits.core.config import Settings
from nbunits.core.files import write_atomic

DEFAULT_SECCOMP = Path("/usr/share/containers/seccomp.json")
CLONE_NEWUSER = 0x10000000
EPERM, ENOSYS = 1, 38
GUARDED = ("clone", "unshare")
BTRFS_VOL_ARGS_IOCTLS, BTRFS_VOL_ARGS_MASK = 0x50009400, 0xFFFFFF00


def _without(default: dict[str, Any], removed: tuple[str, ...]) -> list[dict[str, Any]]:
    """The profile's rules, `removed` taken out of those that allow them."""
    rules = []
    for rule in default["syscalls"]:
        names = [n for n in rule.get("names", []) if n not in removed]
        if names != rule.get("names", []) and rule.get("action") != "SCMP_ACT_ALLOW":
            names = rule.get("names", [])  # a rule that refuses: keep it as it is
        if names:
            rules.append({**rule, "names": names})
    return rules


def without_subvolumes(default: dict[str, Any]) -> dict[str, Any]:
    """ioctl allowed but for 0x500094xx, compared on the request's low 32 bits only.

    The kernel reads ioctl's request as a 32-bit `unsigned int`, seccomp sees the whole
    64-bit register: 0x1_5000940E is SUBVOL_CREATE to the kernel, and a comparison of
    all 64 bits (request < 0x50009400 or > 0x500094FF) would allow it. Every rule
    here is a SCMP_CMP_MASKED_EQ whose mask has no high bit: ioctl is allowed when
    any of the request's bits 8..31 differs from 0x500094xx's (one rule per bit, as
    libseccomp has no "not equal under a mask"), refused (EPERM) when none does."""
    request = {"index": 1, "op": "SCMP_CMP_MASKED_EQ"}
    allowed = [{"names": ["ioctl"], "action": "SCMP_ACT_ALLOW",
                "args": [{**request, "value": bit, "valueTwo": ~BTRFS_VOL_ARGS_IOCTLS & bit}]}
               for bit in (1 << n for n in range(8, 32))]
    refused = {"names": ["ioctl"], "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM,
               "args": [{**request, "value": BTRFS_VOL_ARGS_MASK,
                         "valueTwo": BTRFS_VOL_ARGS_IOCTLS}]}
    return {**default, "syscalls": _without(default, ("ioctl",)) + allowed + [refused]}


def without_user_namespaces(default: dict[str, Any]) -> dict[str, Any]:
    rules = _without(default, (*GUARDED, "clone3"))
    flag = {"index": 0, "value": CLONE_NEWUSER, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}
    rules += [
        {"names": list(GUARDED), "action": "SCMP_ACT_ALLOW", "args": [flag]},
        {"names": list(GUARDED), "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM,
         "args": [{**flag, "valueTwo": CLONE_NEWUSER}]},
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
    ]
    return {**default, "syscalls": rules}


def write_profiles(settings: Settings, default: Path = DEFAULT_SECCOMP) -> None:
    """Both profiles, from podman's default (at `nbunits install`)."""
    base = without_subvolumes(json.loads(default.read_text()))
    for path, profile in ((settings.seccomp_profile(True), base),
                          (settings.seccomp_profile(False), without_user_namespaces(base))):
        write_atomic(path, json.dumps(profile, indent=1) + "\n", 0o644)
