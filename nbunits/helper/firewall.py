"""The host's own addresses, refused to students' kernels (docs/security.md, "Kernels'
network"): `python3 -m nbunits.helper.firewall`, run by nbunits-host-addresses.service,
which students' units pull in (once per boot, before the first one starts; `systemctl
restart nbunits-host-addresses` after the host's addresses change).

With slirp4netns, a kernel's connections leave from the host's own network stack: to
the host's own public address, they reach every service that listens on all of its
addresses (a database, node_exporter, Cockpit...) from inside, past any outer
firewall. The course's units refuse the private, link-local and loopback ranges
themselves (IPAddressDeny=, units/course/); the host's global addresses are known only
at run time, so they go on nbunits.slice, whose IP firewall every unit in it inherits
(a course's network_allow, on its units, still wins: systemd allows what any
IPAddressAllow= of the unit or its slices lists). Set only when the list changed:
systemd rebuilds every running student's filter then.

Runs as: root, at boot, outside the helper (which has no network of its own to read).
"""

from __future__ import annotations

import ipaddress
import json

from nbunits.core.names import STUDENTS_SLICE
from nbunits.core.run import run
from nbunits.core.systemctl import show, systemctl


def global_addresses(ip_json: str) -> list[str]:
    """The global addresses in `ip -json address show` output, as systemd writes them
    (1.2.3.4/32, 2001:db8::1/128), sorted."""
    found = {ipaddress.ip_network(info["local"])
             for link in json.loads(ip_json) for info in link.get("addr_info", [])
             if info.get("scope") == "global" and info.get("local")}
    return [str(net) for net in sorted(found, key=lambda net: (net.version, int(net[0])))]


def main() -> None:
    wanted = global_addresses(run(["ip", "-json", "address", "show", "scope", "global"]).stdout)
    refused = show([STUDENTS_SLICE], ("IPAddressDeny",)).get(STUDENTS_SLICE, {})
    if sorted(refused.get("IPAddressDeny", "").split()) == sorted(wanted):
        print(f"the host's addresses are already refused to students: {' '.join(wanted)}")
        return
    print(f"refused to students' kernels, the host's own addresses: {' '.join(wanted) or 'none'}")
    # An empty value empties the list: no global address, nothing of the host's to refuse.
    systemctl("set-property", "--runtime", STUDENTS_SLICE, "IPAddressDeny=" + " ".join(wanted))


if __name__ == "__main__":
    main()
