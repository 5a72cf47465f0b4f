"""The web dispatcher: maps an LMS launch or an edX link onto a student's notebook unit.

Runs as: the system user `nbunits`, socket-activated, with no network but its
socket and no privilege (nbunits-dispatcher.service). It faces the internet (behind
nginx): everything it reads is checked here first. It asks nbunits-helper for every
privileged step through the typed protocol (core/protocol.py) and never runs a
program itself. May import: nbunits.core only (not core.run, core.systemctl): a test
and import-linter check that no helper, admin or generator code is loaded.
"""
