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

_CAPABILITY = os.environ.get("JUPYTER_TOKEN", "")


class RedactCapability(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _CAPABILITY:
            message = record.getMessage()
            if _CAPABILITY in message:
                record.msg, record.args = message.replace(_CAPABILITY, "[capability]"), None
        return True


c = get_config()  # type: ignore[name-defined]  # noqa: F821 (Jupyter's config loader)
# Merged into traitlets' default logging configuration: its one "console" handler.
c.ServerApp.logging_config = {
    "filters": {"nbunits_redact": {"()": RedactCapability}},
    "handlers": {"console": {"filters": ["nbunits_redact"]}},
}
