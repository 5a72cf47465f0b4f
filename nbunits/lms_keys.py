"""LMS keys: fetch a platform's LTI 1.3 public keys (JWKS) for the dispatcher to read.

The dispatcher has no network by design; `nbunits course add/update` fetch here.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from pathlib import Path

import jwt

from .config import CourseConfig
from .errors import NbunitsError
from .files import write_atomic

MAX_KEYS_BYTES = 1 << 20


def fetch_platform_keys(config: CourseConfig, say: Callable[[str], None]) -> None:
    """Save the LMS's LTI 1.3 public keys (JWKS) where the dispatcher reads them."""
    if not config.lti13_keys_url:
        return
    say(f"fetching the platform's keys from {config.lti13_keys_url}")
    try:
        with urllib.request.urlopen(config.lti13_keys_url, timeout=30) as reply:
            text = reply.read(MAX_KEYS_BYTES).decode()
        jwt.PyJWKSet.from_json(text)
    except (OSError, ValueError, jwt.PyJWTError) as exc:
        raise NbunitsError("bad_keys", f"cannot get the keys at {config.lti13_keys_url}: {exc}",
                           hint="check --lti13-keys-url (the platform's JWKS URL)") from exc
    write_atomic(Path(config.lti13_keys), text)
