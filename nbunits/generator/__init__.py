"""nbunits-generator: the per-course units, rendered by PID 1 at every daemon-reload.

Runs as: root, by systemd itself, early at boot and at each `systemctl
daemon-reload` (systemd.generator(7)), with nothing else running yet. So it reads
only what is there before local file systems are mounted: /etc (the courses'
settings, the images' record /etc/nbunits/images.json), /usr and /run; never
/var (the students, the image store), which may be a file system of its own.
Imports: nbunits.core only (a test and import-linter check it).

Per-course units are templates in units/course/ with @PLACEHOLDERS@ filled from
the course's settings, as podman's quadlet does: /etc/nbunits/courses/*.toml stays
the one source of truth. `systemctl cat nbunits-COURSE@STUDENT` shows the result.
Recently active students' sockets are started after boot by nbunits-listen.service
(nbunits/helper/activity.py), not here: which students those are is in /var.
"""
