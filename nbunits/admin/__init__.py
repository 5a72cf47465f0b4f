"""The admin's tools: the `nbunits` command and what it does.

Runs as: the admin, root for anything that changes the system (cli.py parses and
dispatches; install.py, courses.py, students.py, status.py, metrics.py... do the
work). Also run by the admin's timers (metrics, refresh-keys). May import:
nbunits.core and nbunits.helper's steps. Imported by: nobody else.
"""
