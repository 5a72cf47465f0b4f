# Jupyter's own log lines, for the journal. Mounted read-only into every student's
# container (units/course/nbunits-@COURSE@@.service) beside the unit's JSON settings.
#
# The container's output is the unit's (podman --log-driver=passthrough), and
# journald reads a "<N>" syslog priority at the start of each line of a service's
# output (SyslogLevelPrefix=, on by default). Jupyter logs everything on stderr, so
# without a prefix its info lines would share one priority with its errors.
# journald adds the time: the lines carry none of their own.
import logging

c = get_config()  # noqa: F821 (Jupyter's config loader defines it)

PRIORITIES = ((logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


class SyslogPrefixFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        priority = next((p for level, p in PRIORITIES if record.levelno >= level), 7)
        # A traceback spans lines: each gets the priority, so none falls to the default.
        return "\n".join(f"<{priority}>{line}" for line in super().format(record).splitlines())


def syslog_prefix_formatter(**options: str) -> logging.Formatter:
    # dictConfig passes traitlets' own formatter options (class, format, datefmt).
    return SyslogPrefixFormatter("[%(name)s] %(message)s")


c.ServerApp.logging_config = {"formatters": {"console": {"()": syslog_prefix_formatter}}}
