"""An LMS's LTI 1.3 public keys, read from the file nbunits keeps them in.

Read by the dispatcher (to verify launches) and by the admin's tools (to check a
fetched key set before it replaces the old one: admin/lms_keys.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import jwt

_KEYS: dict[Path, tuple[tuple[int, int], list[jwt.PyJWK]]] = {}


def platform_keys(path: Path) -> list[jwt.PyJWK]:
    """The platform's public keys from a JWKS (JSON) or PEM file, cached until it changes."""
    stat = path.stat()
    stamp = (stat.st_mtime_ns, stat.st_size)
    cached = _KEYS.get(path)
    if cached and cached[0] == stamp:
        return cached[1]
    text = path.read_text()
    if text.lstrip().startswith("-----BEGIN"):
        rsa = jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256)
        keys = [jwt.PyJWK(json.loads(rsa.to_jwk(rsa.prepare_key(text))), "RS256")]
    else:
        keys = list(jwt.PyJWKSet.from_json(text).keys)
    _KEYS[path] = (stamp, keys)
    return keys
