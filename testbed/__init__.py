"""The testbed: nbunits deployed on a throwaway real systemd, reached as a browser would.

Used alike by the tests (tests/integration), the benchmarks (bench/) and the demo
(scripts/demo.py): `harness` boots the systemd (systemd-nspawn over an overlay of this
machine's root), `deploy` installs nbunits in it for a server name, `forward` reaches
its nginx from this machine by that name, `tls` is the tests' CA, `sites` the other
sites a browser visits (an LMS, the learning MFE) and Chromium, `browser` what a browser
does with a notebook (open the link, run code over the websocket, save).
"""
