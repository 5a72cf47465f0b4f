"""`nbunits student revoke`: take back one student's links to one course.

Their capability's generation is raised (capability.py), nginx's map of revoked
generations is rewritten and nginx reloaded, so every old link gets 403 at once;
their running server (which holds the old capability as its token and base URL)
is stopped, so no open tab keeps working. Their work is untouched, and their next
launch from the course hands out the new link. With several hosts, it is done on
the host that runs the student's server (hostlock.py), or on any while none does.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from nbunits.core.config import Settings, load_course
from nbunits.core.errors import Code, NbunitsError
from nbunits.core.names import StudentUnits
from nbunits.core.systemctl import systemctl
from nbunits.helper import capability as caps
from nbunits.helper import hostlock
from nbunits.helper.provision import ensure_token

logger = logging.getLogger(__name__)


def revoke(settings: Settings, course: str, user: str,
           nginx_map: Path = caps.REVOKED_MAP) -> caps.Grant:
    config = load_course(settings, course)
    units = StudentUnits(course, user)
    if not settings.token_file(units).exists():
        raise NbunitsError(Code.UNKNOWN_STUDENT, f"{user} has no link to course {course}",
                           hint="they have not opened a notebook of this course")
    if settings.server.multi_host:
        running_on = hostlock.holder(course, user, str(settings.locks_dir))
        if running_on and running_on.split()[0] != socket.gethostname():
            # Only the host that runs the server can stop it, and that server
            # holds the old link as its token: revoking from here would leave it open.
            raise NbunitsError(
                Code.RUNS_ELSEWHERE, f"{user} runs on {running_on} (course {course}); "
                "nothing was changed", hint="run nbunits student revoke on that host")
    grant = caps.revoke(settings, config, units)
    if nginx_map.parent.is_dir():
        if caps.write_revoked_map(settings, nginx_map):
            systemctl("reload", "nginx.service", check=False)
    else:
        logger.warning("%s missing: nginx (nbunits install --no-nginx?) still accepts "
                       "older links of %s", nginx_map.parent, user)
    systemctl("stop", units.proxy, units.container)
    ensure_token(settings, config, units, running=False)
    logger.info("revoked the links of %s (now generation %d)", user, grant.generation,
                extra={"COURSE": course, "STUDENT": user})
    return grant
