"""A course's units from the templates in units/course/ and its settings."""

from __future__ import annotations

import ipaddress

from nbunits.core import rootfs
from nbunits.core.config import CourseConfig, Settings
from nbunits.core.data import real_path, unit_files
from nbunits.core.files import fill
from nbunits.core.names import course_slice, lock_template, podman_run_dir

QUOTA = "/opt/nbunits/venv/bin/python3 -m nbunits.helper.quota"


def course_placeholders(course: CourseConfig, settings: Settings) -> dict[str, str]:
    image = rootfs.load(settings, course.image)
    return {
        "COURSE": course.name,
        "SLICE": course_slice(course.name),
        "PODMAN_RUN": podman_run_dir(course.name),
        "GRADE_RUN": podman_run_dir(course.name, "nbunits/grade", "/run"),
        "IMAGE": course.image,
        "ROOTFS": rootfs.unit_words((str(image.path),)),
        "IMAGE_ENV": rootfs.unit_words(tuple(f"--env={e}" for e in image.env)),
        "IMAGE_WORKDIR": rootfs.unit_words((image.workdir,)),
        "ENTRYPOINT": rootfs.unit_words(image.entrypoint),
        # An image without an entrypoint (an init such as tini) gets podman's.
        "INIT": "" if image.entrypoint else "--init",
        "ROOTFS_MOUNT": f"RequiresMountsFor={image.path}" if image.layers
                        else "# the image is one layer: its own directory, no mount",
        # Several hosts share the homes: the student's server runs on one at a time.
        "HOST_LOCK": (f"BindsTo={lock_template(course.name)}\n"
                      f"After={lock_template(course.name)}" if settings.server.multi_host
                      else "# one host: no lock on shared storage"),
        "NETWORK": course.network,
        # What kernels may reach besides the internet (the unit's IPAddressAllow=).
        "NETWORK_ALLOW": " ".join(str(ipaddress.ip_network(n, strict=False))
                                  for n in course.network_allow),
        "PROXY_IDLE_TIMEOUT": str(course.proxy_idle_timeout),
        "JUPYTER_IDLE_TIMEOUT": str(course.jupyter_idle_timeout),
        "KERNEL_IDLE_TIMEOUT": str(course.kernel_idle_timeout),
        "MAX_LIFETIME": str(course.max_lifetime),
        "MAX_LIFETIME_BACKSTOP": str(course.max_lifetime + 120),
        # Jupyter checks for idle kernels this often; a tenth of the timeout is close enough.
        "CULL_INTERVAL": str(max(1, min(60, course.kernel_idle_timeout // 10))),
        "MEMORY_MAX": course.memory_max,
        # A submitted notebook's run (units/course/nbunits-@COURSE@-grade@.service).
        "GRADING_TIMEOUT": str(course.grading_timeout),
        "GRADING_BACKSTOP": str(course.grading_timeout + 60),
        "CPU_QUOTA": course.cpu_quota,
        "TASKS_MAX": str(course.tasks_max),
        "COURSE_MEMORY_MAX": course.course_memory_max,
        # Mounted into the container: a real path, readable by every student.
        "JUPYTER_LOG_CONFIG": real_path("jupyter", "jupyter_server_config.py"),
        # The "started" event, sent by a shell script (units/bin/started-event.sh).
        "STARTED_EVENT": real_path("bin", "started-event.sh"),
        # quota.py: on btrfs the course's folders become subvolumes (as the student),
        # then root limits their qgroup (or, on ext4/xfs, the student's user quota).
        "DISK_QUOTA": (f"ExecStartPre={QUOTA} folders ${{HOME}} {course.name}\n"
                       f"ExecStartPre=+{QUOTA} limit %i {course.name} {course.disk_quota}"
                       if course.disk_quota
                       else "# no disk_quota: the home's file system is the limit"),
        # podman's default seccomp profile without btrfs subvolumes, and without
        # nested user namespaces unless the course allows them (admin/seccomp.py).
        "SECCOMP_PROFILE": str(settings.seccomp_profile(course.user_namespaces)),
    }


def render_course(course: CourseConfig, settings: Settings) -> dict[str, str]:
    """{unit file name: text} for one course (and the mount of its image's layers)."""
    values = course_placeholders(course, settings)
    units = {fill(t.name, values): fill(t.read_text(), values)
             for t in (unit_files() / "course").iterdir() if t.is_file()}
    image = rootfs.load(settings, course.image)
    if image.layers:
        template = (unit_files() / "image" / "rootfs.mount").read_text()
        units[image.mount_unit] = fill(template, {
            "IMAGE": course.image, "WHERE": str(image.path),
            "LOWERDIRS": ":".join(str(layer) for layer in image.layers)})
    return units
