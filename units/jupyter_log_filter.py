"""nbunits: keep the student's capability out of Jupyter's log lines.

Bound read-only into every student's container as
~/.jupyter/jupyter_server_config.py (the unit's --volume). The capability is the
student's token and part of Jupyter's base URL, so Jupyter's own lines (the
"is running at" URL, every request it logs with its path) would carry it into the
journal, where whoever reads logs could open the notebook. A filter on Jupyter's
log handler replaces it with "[capability]" (README, "Security").
"""

import logging
import os
import re

_CAPABILITY = os.environ.get("JUPYTER_TOKEN", "")
# Any capability-shaped text (nbunits.names.CAPABILITY_RE), whoever sent it.
_SHAPE = re.compile(r"[A-Za-z0-9_-]{22}\.[0-9]{1,9}\.[0-9]{1,11}")


def _redact(text: str) -> str:
    return _SHAPE.sub("[capability]", text.replace(_CAPABILITY, "[capability]")
                      if _CAPABILITY else text)


class RedactCapability(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if _redact(message) != message:
            record.msg, record.args = _redact(message), None
        # A traceback quotes paths too (the formatter then uses this text as it is).
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = _redact(record.exc_text)
        if record.stack_info:
            record.stack_info = _redact(record.stack_info)
        return True


c = get_config()  # type: ignore[name-defined]  # noqa: F821 (Jupyter's config loader)
# Merged into traitlets' default logging configuration (its one "console" handler)
# of every application: the server, and the extensions that log on their own
# (JupyterNotebookApp, LabApp).
c.Application.logging_config = {
    "filters": {"nbunits_redact": {"()": RedactCapability}},
    "handlers": {"console": {"filters": ["nbunits_redact"]}},
}
