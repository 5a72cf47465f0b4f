"""LTI 1.3 keys: an LMS's public keys, read from the file nbunits keeps them in,
and the tool's own private key (made by `nbunits install`).

The platform's keys are read by the dispatcher (to verify launches) and by the
admin's tools (to check a fetched key set before it replaces the old one:
admin/lms_keys.py); the tool's key by the dispatcher (deep-linking answers, its
public half at /lti/1.3/jwks) and by root's score sender (AGS client assertions).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from nbunits.core.errors import Code, NbunitsError

logger = logging.getLogger(__name__)

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


# --- the tool's own key (deep-linking answers, AGS client assertions) ----------------

@dataclass(frozen=True)
class ToolKey:
    private: rsa.RSAPrivateKey
    kid: str

    def jwks(self) -> dict[str, Any]:
        """The public half, as the LMS fetches it (Studio: Tool Public Key Mode "Keyset URL")."""
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key()))
        return {"keys": [{**public, "kid": self.kid, "alg": "RS256", "use": "sig"}]}


_TOOL_KEYS: dict[Path, tuple[tuple[int, int], ToolKey]] = {}


def tool_key(path: Path) -> ToolKey:
    """The tool's key from its PEM file (made by `nbunits install`), cached until it changes."""
    try:
        stat = path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        cached = _TOOL_KEYS.get(path)
        if cached and cached[0] == stamp:
            return cached[1]
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        logger.error("cannot read the tool's LTI key %s: %s; run nbunits install", path, exc)
        raise NbunitsError(Code.NO_SECRET, f"cannot read the tool's LTI key {path}",
                           hint="nbunits install makes it") from exc
    if not isinstance(private, rsa.RSAPrivateKey):
        raise NbunitsError(Code.NO_SECRET, f"{path} is not an RSA private key",
                           hint="remove it and run nbunits install")
    key = ToolKey(private, thumbprint(private.public_key()))
    _TOOL_KEYS[path] = (stamp, key)
    return key


def thumbprint(public: rsa.RSAPublicKey) -> str:
    """The key's RFC 7638 thumbprint: a key id that changes only with the key."""
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public))
    canonical = json.dumps({k: jwk[k] for k in ("e", "kty", "n")}, separators=(",", ":"),
                           sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
