"""The shared core: what every side of nbunits uses, and nothing else.

Names and paths from (course, student, notebook) (names.py), settings declared once
(settings.py, config.py), the dispatcher/helper protocol (protocol.py), errors and
their registry (errors.py), journal events (events.py), the one atomic write
(files.py), the one way to run a program (run.py) and systemctl (systemctl.py).
Needs no privilege to import; imports nothing from the other packages.
"""
