"""The language remembered for each student: the last locale their LMS sent.

Root's, beside the student's other records (Settings.student_language), never a
cookie: the notebook's iframe is cross-site and its cookies may not be sent. A
launch without a locale (or from another browser) then keeps the student's choice.
"""

from __future__ import annotations

import logging

from nbunits.core import i18n
from nbunits.core.config import Settings
from nbunits.core.files import write_atomic

logger = logging.getLogger(__name__)


def valid(language: str) -> str:
    """`language` if nbunits has it (as the dispatcher names it), else ""."""
    return language if language in i18n.available() else ""


def remember(settings: Settings, user: str, locale: str) -> str:
    """Record the language a launch's `locale` names (if nbunits has it); return the
    student's language ("" if none was ever sent)."""
    path = settings.student_language(user)
    language = i18n.match(locale, i18n.available()) if locale else None
    if language:
        path.parent.mkdir(mode=0o700, exist_ok=True)
        write_atomic(path, language + "\n", 0o600, unless_same=True)
        return language
    return remembered(settings, user)


def remembered(settings: Settings, user: str) -> str:
    """The student's language, as their last launch with a locale named it ("" if none)."""
    path = settings.student_language(user)
    try:
        saved = path.read_text().strip()
    except FileNotFoundError:
        return ""
    except OSError as exc:
        logger.warning("cannot read %s: %s", path, exc)
        return ""
    return saved if saved in i18n.available() else ""
