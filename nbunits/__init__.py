"""nbunits: per-student Jupyter notebooks as systemd units running rootless podman.

One package per side, named by who runs it (docs/architecture.md has the picture):

    core/        shared by every side: names, settings, the helper protocol, errors,
                 events, running programs. No privilege; imports nothing else here.
    dispatcher/  faces the internet, as the unprivileged user `nbunits`. Imports core.
    helper/      root: nbunits-helper (the dispatcher's privileged half) and the steps
                 it and the students' units run. Imports core.
    generator/   PID 1, at boot and each daemon-reload: renders the course units from
                 /etc only. Imports core.
    admin/       root, the admin's `nbunits` command: install, courses, students,
                 status, metrics. Imports core and helper.

The walls are import-linter contracts in pyproject.toml, checked by scripts/lint.
"""

__version__ = "0.1.0"
