"""LTI launches: prove that a course's LMS sent them, then say who opens what.

Pure logic (no network; the only file read is the platform's key file): LTI 1.1
signatures are checked by oauthlib, LTI 1.3 id_tokens by PyJWT. The dispatcher
(dispatcher/lti.py) finds the course, calls these, and opens the notebook.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jwt
from oauthlib.oauth1 import RequestValidator, SignatureOnlyEndpoint

from nbunits.core import i18n, roster
from nbunits.core.config import DEFAULT_STAFF_ROLES, CourseConfig, Lti13Registration
from nbunits.core.errors import Code, NbunitsError
from nbunits.core.names import check_notebook, check_student_id
from nbunits.core.outcomes import BadDestination, Destination, from_lti11, from_lti13
from nbunits.core.roster import Roster

logger = logging.getLogger(__name__)

# A launch older or newer than this is refused; nonces are remembered this long.
MAX_CLOCK_SKEW = 300

LTI13_CLAIM = "https://purl.imsglobal.org/spec/lti/claim/"
MEMBERSHIP = "http://purl.imsglobal.org/vocab/lis/v2/membership"
LTI11_ROLE_URN = "urn:lti:role:ims/lis/"


class LaunchError(NbunitsError):
    """A launch we do not trust: codes unauthorized (401), forbidden (403), bad_launch (400).

    Its hint is for whoever set up the link in the LMS, and is shown on the page."""

    def __init__(self, code: Code, message: str, *, hint: str | None = None) -> None:
        super().__init__(code, message, hint=hint, student_hint=hint)


@dataclass(frozen=True)
class Launch:
    """A verified launch: open `notebook` of `course` for `student`; or, for staff
    naming a student (`view`), show that student's copy read-only."""

    course: str
    student: str
    notebook: str
    staff: bool
    view: str = ""  # the LMS id of the student whose copy staff asked to see
    # The student's language as the LMS says it (LTI 1.1 launch_presentation_locale,
    # LTI 1.3's launch_presentation claim), as sent: core/i18n.py reads it.
    locale: str = ""
    # Where the student's score for this notebook goes, as this launch says (None:
    # it says nothing, or nothing usable): recorded by root's helper (core/outcomes.py).
    destination: Destination | None = None
    # Staff's page only: where the LMS lists the course's learners (core/roster.py).
    roster: Roster | None = None

    @property
    def staff_page(self) -> bool:
        """Staff naming no student get the course's student list (one component
        serves every staff member: Studio's custom parameters are per component)."""
        return self.staff and not self.view


class NonceStore:
    """Nonces seen in the last MAX_CLOCK_SKEW*2 seconds.

    In a folder (the dispatcher's StateDirectory, /var/lib/nbunits/nonces): a file
    per nonce, made with O_EXCL, so a restart of the dispatcher forgets nothing and
    hosts sharing the folder (docs/admin.md, "Beyond one host") refuse a launch replayed to
    another host. Without a folder, in memory (tests).
    """

    PRUNE_EVERY = 256  # uses between two sweeps of expired files

    def __init__(self, folder: Path | None = None, ttl: float = 2 * MAX_CLOCK_SKEW) -> None:
        self.folder, self.ttl = folder, ttl
        self._seen: dict[str, float] = {}
        self._uses = 0

    def _path(self, nonce: str) -> Path:
        assert self.folder is not None
        return self.folder / hashlib.sha256(nonce.encode()).hexdigest()

    def seen(self, nonce: str, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        if self.folder is not None:
            try:
                return self._path(nonce).stat().st_mtime + self.ttl > now
            except FileNotFoundError:
                return False
        if len(self._seen) > 1000:
            self._seen = {k: t for k, t in self._seen.items() if t > now}
        expiry = self._seen.get(nonce)
        return expiry is not None and expiry > now

    def use(self, nonce: str, now: float | None = None) -> None:
        """Remember a nonce; raise if it was used already."""
        now = time.time() if now is None else now
        if self.folder is None:
            if self.seen(nonce, now):
                raise _replayed()
            self._seen[nonce] = now + self.ttl
            return
        path = self._path(nonce)
        for _ in range(2):
            try:  # one process wins, even between hosts (O_EXCL holds on NFSv3+)
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
                os.utime(path, (now, now))
                break
            except FileExistsError:
                if self.seen(nonce, now):
                    raise _replayed() from None
                path.unlink(missing_ok=True)  # expired: its time window is over
        self._uses += 1
        if self._uses % self.PRUNE_EVERY == 0:
            self.prune(now)

    def prune(self, now: float) -> None:
        assert self.folder is not None
        for entry in os.scandir(self.folder):
            try:
                if entry.stat().st_mtime + self.ttl <= now:
                    os.unlink(entry.path)
            except FileNotFoundError:
                pass


def _replayed() -> LaunchError:
    return LaunchError(Code.UNAUTHORIZED, "this launch was used already",
                       hint="open the notebook again from the course")


# --- LTI 1.1: OAuth 1.0a HMAC-SHA1 signed form POST ------------------------------

class _Validator(RequestValidator):  # type: ignore[misc]  # oauthlib is untyped
    """oauthlib's questions, answered from one course's key and secret."""

    enforce_ssl = False  # TLS ends at nginx; the URL is rebuilt from its headers
    allowed_signature_methods = ("HMAC-SHA1",)
    timestamp_lifetime = MAX_CLOCK_SKEW
    dummy_client = "nbunits-dummy-client"
    safe_characters = frozenset(chr(c) for c in range(0x21, 0x7f))
    client_key_length = (1, 255)
    nonce_length = (1, 255)

    def __init__(self, key: str, secret: str, nonces: NonceStore) -> None:
        super().__init__()
        self.key, self.secret, self.nonces = key, secret, nonces

    def validate_client_key(self, client_key: str, request: Any) -> bool:
        return bool(self.key) and hmac.compare_digest(client_key, self.key)

    def get_client_secret(self, client_key: str, request: Any) -> str:
        # The dummy client gets a secret too, so that timing does not tell keys apart.
        return self.secret if client_key == self.key else "nbunits-dummy-secret"

    def validate_timestamp_and_nonce(self, client_key: str, timestamp: str, nonce: str,
                                     request: Any, **kwargs: Any) -> bool:
        # Only checked here: a nonce is recorded once the signature is good, so
        # that forged requests cannot use up a real launch's nonce.
        return not self.nonces.seen(f"1.1 {client_key} {nonce}")


def verify_lti11(url: str, body: str, headers: Mapping[str, str], course: CourseConfig,
                 secret: str, nonces: NonceStore) -> Launch:
    """Check an LTI 1.1 launch POSTed to `url` for `course`; return what to open."""
    if not course.lti11_key or not secret:
        raise LaunchError(Code.FORBIDDEN, "LTI 1.1 launches are not set up for this course",
                          hint="nbunits course update NAME --lti11-key K --lti11-secret-file F")
    endpoint = SignatureOnlyEndpoint(_Validator(course.lti11_key, secret, nonces))
    valid, request = endpoint.validate_request(url, "POST", body, dict(headers))
    if not valid:
        raise LaunchError(Code.UNAUTHORIZED, "this launch's signature is not valid, too old or "
                          "used already", hint="open the notebook again from the course")
    nonces.use(f"1.1 {request.client_key} {request.nonce}")
    params = dict(request.decoded_body or ())
    if params.get("lti_message_type") not in (None, "basic-lti-launch-request"):
        raise LaunchError(Code.BAD_LAUNCH, f"unsupported LTI message {params['lti_message_type']!r}")
    launch = launch_for(course, context_id=params.get("context_id", ""),
                        student=params.get("user_id", ""),
                        notebook=custom_param(params, "notebook", "custom_"),
                        resource_link=params.get("resource_link_id", ""),
                        roles=params.get("roles", "").split(","),
                        view=custom_param(params, "student", "custom_"),
                        locale=params.get("launch_presentation_locale", ""))
    return replace(launch, destination=destination_of(
        lambda: from_lti11(params, course.lti11_key), course.name))


def destination_of(read: Callable[[], Destination | None], course: str) -> Destination | None:
    """Where scores go, from a verified launch's claims; None if they do not fit (the
    launch still opens the notebook: only its score has nowhere to go)."""
    try:
        return read()
    except BadDestination as exc:
        logger.warning("this launch's outcome claims are not usable, scores will not be "
                       "sent: %s", exc, extra={"COURSE": course})
        return None


def custom_param(params: Mapping[str, Any], name: str, prefix: str) -> str:
    """A custom parameter as Open edX sends what Studio's "Custom Parameters" field
    holds: `notebook=...` arrives as custom_notebook in LTI 1.1 and as `notebook`
    in the 1.3 custom claim; Studio adds the prefix itself, so an admin who writes
    `custom_notebook=...` gives custom_custom_notebook (1.1) or custom_notebook (1.3)."""
    for key in (prefix + name, prefix + "custom_" + name):
        value = params.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


# --- LTI 1.3: OIDC login, then an id_token signed by the platform -----------------

@dataclass(frozen=True)
class State:
    """What the login step learned, carried to the launch in the signed `state`."""

    course: str
    issuer: str
    client_id: str
    nonce: str


def issue_state(key: bytes, state: State, now: float | None = None) -> str:
    """The OIDC `state`: signed by the dispatcher and carrying the course, the
    registration and the nonce, so the launch is checked without a cookie (the
    iframe is cross-site)."""
    now = int(time.time() if now is None else now)
    return jwt.encode({"course": state.course, "iss": state.issuer, "client_id": state.client_id,
                       "nonce": state.nonce, "iat": now, "exp": now + MAX_CLOCK_SKEW},
                      key, algorithm="HS256")


def read_state(key: bytes, state: str) -> State:
    try:
        claims = jwt.decode(state, key, algorithms=["HS256"], options={"require": ["exp"]})
        return State(str(claims["course"]), str(claims["iss"]), str(claims["client_id"]),
                     str(claims["nonce"]))
    except (jwt.InvalidTokenError, KeyError) as exc:
        raise LaunchError(Code.UNAUTHORIZED, "this launch did not start here or took too long",
                          hint="open the notebook again from the course") from exc


class UnknownKey(LaunchError):
    """A token signed with a key id the saved JWKS lacks: the platform rotated its
    keys, or someone else signed it. The dispatcher logs it for the admin."""


def key_for(token: str, keys: list[jwt.PyJWK]) -> jwt.PyJWK:
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.InvalidTokenError as exc:
        raise LaunchError(Code.UNAUTHORIZED, "this launch's token is not valid") from exc
    # With a key id, the key of that id; without (or a PEM key), the only key.
    matching = [k for k in keys if k.key_id == kid] if kid else keys
    if not matching and len(keys) == 1 and keys[0].key_id is None:
        matching = keys
    if len(matching) != 1:
        raise UnknownKey(Code.UNAUTHORIZED, f"this launch is signed with a key we do not know "
                         f"(key id {str(kid)[:64]!r})",
                         hint="the platform may have new keys: tell the course's administrator "
                              "(nbunits course refresh-keys)")
    return matching[0]


def verify_lti13(id_token: str, course: CourseConfig, registration: Lti13Registration,
                 nonce: str, keys: list[jwt.PyJWK], nonces: NonceStore,
                 lti11_secret: str = "") -> Launch:
    """Check an LTI 1.3 resource link launch for `course` (started with `nonce` by
    a login for `registration`); return what to open."""
    claims = verify_lti13_token(id_token, course, registration, nonce, keys, nonces)
    return resource_link_launch(claims, course, lti11_secret)


def verify_lti13_token(id_token: str, course: CourseConfig, registration: Lti13Registration,
                       nonce: str, keys: list[jwt.PyJWK], nonces: NonceStore) -> dict[str, Any]:
    """What every LTI 1.3 message must prove (a resource link launch, a
    deep-linking request): the platform's signature, issuer, audience, expiry,
    nonce, deployment and version. Returns its claims."""
    key = key_for(id_token, keys)
    client_id = registration.client_id
    try:
        claims: dict[str, Any] = jwt.decode(
            id_token, key, algorithms=["RS256", "RS384", "RS512"], audience=client_id,
            issuer=registration.issuer, leeway=60,
            options={"require": ["exp", "iat", "sub", "nonce"]})
    except jwt.InvalidTokenError as exc:
        logger.info("refused id_token: %s", exc, extra={"COURSE": course.name})
        raise LaunchError(Code.UNAUTHORIZED, "this launch's token is not valid or has expired",
                          hint="open the notebook again from the course") from exc
    if not hmac.compare_digest(str(claims["nonce"]), nonce):
        raise LaunchError(Code.UNAUTHORIZED, "this launch does not match its login")
    nonces.use(f"1.3 {registration.issuer} {nonce}")
    # One token may name several audiences; then it must be meant for us.
    if isinstance(claims.get("aud"), list) and claims.get("azp", client_id) != client_id:
        raise LaunchError(Code.UNAUTHORIZED, "this launch is meant for another tool")
    deployment = claims.get(LTI13_CLAIM + "deployment_id", "")
    if registration.deployment_ids and deployment not in registration.deployment_ids:
        raise LaunchError(Code.FORBIDDEN, "this launch comes from another deployment")
    if claims.get(LTI13_CLAIM + "version") != "1.3.0":
        raise LaunchError(Code.BAD_LAUNCH, "not an LTI 1.3 message")
    return claims


def message_type(claims: Mapping[str, Any]) -> str:
    return str(claims.get(LTI13_CLAIM + "message_type", ""))


def resource_link_launch(claims: Mapping[str, Any], course: CourseConfig,
                         lti11_secret: str = "") -> Launch:
    """A verified LTI 1.3 resource link launch's claims -> what to open."""
    if message_type(claims) != "LtiResourceLinkRequest":
        raise LaunchError(Code.BAD_LAUNCH, "not an LTI 1.3 resource link launch")
    custom = claims.get(LTI13_CLAIM + "custom")
    custom = custom if isinstance(custom, dict) else {}
    launch = launch_for(course, context_id=str(field(claims, "context", "id")),
                        student=lti11_user(claims, course, lti11_secret) or str(claims["sub"]),
                        notebook=custom_param(custom, "notebook", ""),
                        resource_link=str(field(claims, "resource_link", "id")),
                        roles=roles_of(claims),
                        view=custom_param(custom, "student", ""),
                        locale=str(field(claims, "launch_presentation", "locale")))
    return replace(launch, destination=destination_of(lambda: from_lti13(claims), course.name),
                   roster=roster_of(claims, course.name) if launch.staff_page else None)


def roster_of(claims: Mapping[str, Any], course: str) -> Roster | None:
    """A staff launch's NRPS claim; None without one, or with one that does not fit
    (the staff page then lists who opened a notebook, as without)."""
    try:
        return roster.from_lti13(claims)
    except BadDestination as exc:
        logger.warning("this launch's Names and Roles claim is not usable: %s", exc,
                       extra={"COURSE": course})
        return None


def roles_of(claims: Mapping[str, Any]) -> list[str]:
    roles = claims.get(LTI13_CLAIM + "roles")
    return [str(r) for r in roles] if isinstance(roles, list) else []


def lti11_user(claims: Mapping[str, Any], course: CourseConfig, secret: str) -> str:
    """The LTI 1.1 user id of the LTI 1.3 migration claim (LTI 1.3 spec, "LTI 1.1
    migration"), so a course moving from 1.1 to 1.3 keeps each student's work.

    Trusted only when it proves the platform holds this course's 1.1 secret
    (`oauth_consumer_key_sign`); otherwise the launch uses `sub`. Open edX does
    not send this claim (docs/openedx.md)."""
    claim = claims.get(LTI13_CLAIM + "lti1p1")
    if not isinstance(claim, dict) or not isinstance(claim.get("user_id"), str):
        return ""
    key, sign = claim.get("oauth_consumer_key"), claim.get("oauth_consumer_key_sign")
    if not (course.lti11_key and secret and key == course.lti11_key and isinstance(sign, str)):
        logger.info("ignoring an lti1p1 claim without a matching 1.1 key and signature",
                    extra={"COURSE": course.name})
        return ""
    aud = claims.get("aud")
    client_id = claims.get("azp") if isinstance(aud, list) else aud
    base = "&".join(str(part) for part in (key, claims.get(LTI13_CLAIM + "deployment_id", ""),
                                           claims.get("iss"), client_id, claims.get("exp"),
                                           claims.get("nonce")))
    expected = base64.b64encode(hmac.new(secret.encode(), base.encode(),
                                         hashlib.sha256).digest()).decode()
    if not hmac.compare_digest(expected, sign):
        logger.warning("ignoring an lti1p1 claim with a wrong oauth_consumer_key_sign",
                       extra={"COURSE": course.name})
        return ""
    return str(claim["user_id"])


def field(claims: Mapping[str, Any], claim: str, key: str) -> Any:
    value = claims.get(LTI13_CLAIM + claim)
    return value.get(key, "") if isinstance(value, dict) else ""


# --- what both versions mean --------------------------------------------------------

def launch_for(course: CourseConfig, *, context_id: str, student: str, notebook: str,
               resource_link: str, roles: list[str], view: str = "", locale: str = "") -> Launch:
    """(context, user, notebook or resource link) of a verified launch -> a Launch.

    `view` (custom parameter `student`) counts only for staff: a learner who sends
    it still opens their own notebook, never someone else's.
    """
    if not course.lti_context_id or context_id != course.lti_context_id:
        raise LaunchError(Code.FORBIDDEN, "this launch comes from another course",
                          hint="the course's lti_context_id must be the LMS's course id")
    if not student:
        raise LaunchError(Code.BAD_LAUNCH, "this launch names no user",
                          hint="the LMS must send the (anonymized) user id")
    check_student_id(student)  # an id that does not fit is refused, never rewritten
    notebook = notebook or course.lti_notebooks.get(resource_link, "")
    if not notebook:
        raise LaunchError(Code.BAD_LAUNCH, "this link does not say which notebook to open",
                          hint="give the LTI component the custom parameter notebook=PATH, "
                               "or map its resource link id in the course's lti_notebooks")
    check_notebook(notebook)
    staff = is_staff(roles, course.lti_staff_roles)
    if staff and view:
        check_student_id(view)
    return Launch(course.name, student, notebook, staff=staff, view=view if staff else "",
                  locale=locale[:i18n.MAX_TAG + 1])


def context_role(role: str) -> str:
    """A context role as "Name" or "Principal#Sub"; "" for any other role.

    LTI 1.3: …/membership#Instructor, …/membership/Instructor#TeachingAssistant;
    LTI 1.1: Instructor, urn:lti:role:ims/lis/Instructor[/TeachingAssistant].
    Institution and system roles (…/institution/person#Administrator,
    urn:lti:instrole:…) say nothing about this course: "".
    """
    role = role.strip()
    if role.startswith(MEMBERSHIP + "#") or role.startswith(MEMBERSHIP + "/"):
        name = role[len(MEMBERSHIP) + 1:]
    elif role.startswith(LTI11_ROLE_URN):
        name = role[len(LTI11_ROLE_URN):].replace("/", "#", 1)
    elif role.isalpha():
        name = role
    else:
        return ""
    return name if all(part.isalpha() for part in name.split("#", 1)) else ""


def is_staff(roles: list[str], staff_roles: tuple[str, ...] = DEFAULT_STAFF_ROLES) -> bool:
    """Whether one of the launch's context roles is one the course names as staff."""
    return any(context_role(role) in staff_roles for role in roles)
