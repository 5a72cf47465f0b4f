"""Open edX as the LMS: its own LTI consumer code (lti-consumer-xblock from PyPI),
driven the way its XBlock and its LTI 1.3 launch view drive it.

What is Open edX's here, not ours: the LTI 1.1 role map (LTI_1P1_ROLE_MAP), the
1.3 roles (LtiConsumer1p3._get_user_roles), how Studio's "Custom Parameters" list
becomes launch parameters (the XBlock's prefixed_custom_parameters and
get_lti_1p3_custom_parameters, run on a stand-in block), the OAuth1 signing, the
login initiation URL, the preflight checks and the signed id_token; deep
linking: the LtiDeepLinkingRequest it builds, and how it checks and saves the
tool's answer (check_and_decode_deep_linking_token, its content item serializers)
and launches the chosen item (set_dl_content_launch_parameters); names and roles: the
NRPS launch claim (enable_nrps) and the memberships view's serializer and renderer. What the real
platform also does and we imitate: the ids (a per-course anonymous id of 32 hex
for 1.1; the global external id, a UUID, for 1.3) and the forum-role override of
_get_lti_1p3_user_role. Test-only: the product never imports this.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import django
from django.conf import settings

if not settings.configured:
    settings.configure(PLATFORM_NAME="Open edX", USE_TZ=True, INSTALLED_APPS=[],
                       CACHES={"default": {
                           "BACKEND": "django.core.cache.backends.locmem.LocMemCache"}})
    django.setup()

from lti_consumer.data import Lti1p3LaunchData  # noqa: E402
from lti_consumer.lti_1p1.consumer import LtiConsumer1p1  # noqa: E402
from lti_consumer.lti_1p3.consumer import LtiAdvantageConsumer  # noqa: E402
from lti_consumer.lti_1p3.extensions.rest_framework.constants import (  # noqa: E402
    LTI_DL_CONTENT_TYPE_SERIALIZER_MAP,
)
from lti_consumer.lti_1p3.extensions.rest_framework.renderers import (  # noqa: E402
    MembershipResultRenderer,
)
from lti_consumer.lti_1p3.extensions.rest_framework.serializers import (  # noqa: E402
    LtiNrpsContextMembershipPIISerializer,
)
from lti_consumer.lti_xblock import LTI_1P1_ROLE_MAP, LtiConsumerXBlock  # noqa: E402
from lti_consumer.utils import get_lti_1p3_context_types_claim  # noqa: E402

# Open edX course roles -> what its consumer sends (course roles; "Community TA"
# and "Group Moderator" are forum roles, which only LTI 1.3 sends).
COURSE_ROLES = ("student", "staff", "instructor", "limited_staff")
FORUM_ROLES = ("Community TA", "Group Moderator")


@dataclass
class _Block:
    """What the XBlock's parameter methods read from `self`."""

    custom_parameters: list[str]
    display_name: str = "Notebook"
    due: Any = None
    graceperiod: Any = None

    def get_parameter_processors(self) -> list[Any]:
        return []


def studio_params_11(custom: list[str]) -> dict[str, str]:
    """Studio's "Custom Parameters" list as the LTI 1.1 launch sends it."""
    return dict(LtiConsumerXBlock.prefixed_custom_parameters.fget(_Block(custom)))


def studio_params_13(custom: list[str]) -> dict[str, str]:
    """The same list as the LTI 1.3 custom claim."""
    return dict(LtiConsumerXBlock.get_lti_1p3_custom_parameters(_Block(custom)))


def lti1p1_role(role: str) -> str:
    return LTI_1P1_ROLE_MAP.get(role, "Student,Learner")


def lti1p3_role(role: str, forum_role: str = "") -> str:
    """_get_lti_1p3_user_role: a forum role replaces only learner-like course roles."""
    if role in ("staff", "instructor", "limited_staff"):
        return role
    return forum_role or role


def launch11(url: str, key: str, secret: str, *, user_id: str, role: str, context_id: str,
             resource_link_id: str, custom: list[str]) -> dict[str, str]:
    """The form the LTI 1.1 XBlock posts (its student_view_handler -> launch form)."""
    consumer = LtiConsumer1p1(url, key, secret)
    consumer.set_user_data(user_id, lti1p1_role(role),
                           result_sourcedid=f"{quote(context_id)}:{resource_link_id}:{user_id}")
    consumer.set_context_data(context_id, "Python for all", "Org")
    consumer.set_launch_presentation_locale("en")
    consumer.set_custom_parameters(studio_params_11(custom))
    return {k: str(v) for k, v in consumer.generate_launch_request(resource_link_id).items()}


@dataclass
class Platform13:
    """One LTI 1.3 component's configuration in Open edX (its own client id and key)."""

    issuer: str
    login_url: str  # the tool's OIDC login URL (Studio: "Tool Initiate Login URL")
    launch_url: str  # the tool's launch URL (Studio: "Tool Launch URL")
    private_pem: str
    kid: str
    client_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    deployment_id: str = "1"
    # Studio's "Tool Public Key" (PEM): what checks the tool's deep-linking answers.
    tool_key: str | None = None
    # Deep linking enabled: the LMS's return URL (its deep_linking_response_endpoint).
    return_url: str = ""
    # What the request's accept_types say (None: Open edX's own list).
    accept_types: list[str] | None = None
    # Names and Roles enabled ("lti_1p3_enable_nrps"): the context's memberships URL.
    memberships_url: str = ""

    def consumer(self) -> LtiAdvantageConsumer:
        consumer = LtiAdvantageConsumer(
            iss=self.issuer, lti_oidc_url=self.login_url, lti_launch_url=self.launch_url,
            client_id=self.client_id, deployment_id=self.deployment_id,
            rsa_key=self.private_pem, rsa_key_id=self.kid, redirect_uris=[self.launch_url],
            tool_key=self.tool_key)
        if self.return_url:
            # Studio's "Deep Linking Launch URL" is the tool's launch URL here.
            consumer.enable_deep_linking(self.launch_url, self.return_url)
            if self.accept_types is not None:
                claim = consumer.dl.get_lti_deep_linking_launch_claim
                consumer.dl.get_lti_deep_linking_launch_claim = functools.partial(
                    claim, accept_types=self.accept_types)
        if self.memberships_url:
            consumer.enable_nrps(self.memberships_url)
        return consumer

    def deep_link_login(self, *, external_user_id: str, role: str, context_id: str,
                        resource_link_id: str) -> Launch13:
        """What Studio's "Deep Linking" button of a component opens (staff only):
        get_lti_1p3_launch_start_url(deep_link_launch=True)."""
        assert role in ("instructor", "staff"), "Open edX's launch view refuses anyone else"
        data = Lti1p3LaunchData(
            user_id=1234, user_role=role, config_id=uuid.uuid4(),
            resource_link_id=resource_link_id, external_user_id=external_user_id,
            launch_presentation_document_target="iframe", context_id=context_id,
            context_type=["course_offering"], context_title="Python for all - Org",
            context_label=context_id, message_type="LtiDeepLinkingRequest")
        return Launch13(self, data, self.consumer().prepare_preflight_url(data))

    def content_items(self, token: str) -> list[dict[str, Any]]:
        """What deep_linking_response_endpoint does with the tool's JWT form field:
        decode and check it, then validate each item with the xblock's serializers."""
        items: list[dict[str, Any]] = self.consumer().check_and_decode_deep_linking_token(token)
        for item in items:
            serializer = LTI_DL_CONTENT_TYPE_SERIALIZER_MAP[item["type"]](data=item)
            serializer.is_valid(raise_exception=True)
        return items

    def login(self, *, external_user_id: str, role: str, context_id: str,
              resource_link_id: str, custom: list[str], forum_role: str = "",
              content_item: dict[str, Any] | None = None) -> Launch13:
        """What the component's iframe loads first: the tool's login with the hints."""
        data = Lti1p3LaunchData(
            user_id=1234, user_role=lti1p3_role(role, forum_role),
            config_id=uuid.uuid4(), resource_link_id=resource_link_id,
            external_user_id=external_user_id, launch_presentation_document_target="iframe",
            context_id=context_id, context_type=["course_offering"],
            context_title="Python for all - Org", context_label=context_id,
            custom_parameters=studio_params_13(custom))
        return Launch13(self, data, self.consumer().prepare_preflight_url(data), content_item)


def membership_page(url: str, course_key: str, members: list[dict[str, Any]], *,
                    limit: int | None = None, page: int = 1) -> tuple[bytes, str | None]:
    """What Open edX's memberships view (LtiNrpsContextMembershipViewSet.list) answers:
    `members` as its LMS gives them (external_id, Open edX roles, name, email), sorted
    by id, cut into pages by ?limit=&page= as it does, serialized by its PII
    serializer and rendered by its MembershipResultRenderer. Returns the body and the
    URL of the next page (its Link rel="next"), if any."""
    ordered = sorted(members, key=lambda m: m["id"])
    next_url = None
    if limit is not None:
        ordered, more = ordered[(page - 1) * limit:page * limit], page * limit < len(members)
        if more:
            next_url = f"{url.split('?')[0]}?limit={limit}&page={page + 1}"
    data = LtiNrpsContextMembershipPIISerializer(
        {"id": url, "context": {"id": course_key}, "members": ordered}).data
    return MembershipResultRenderer().render(data), next_url


@dataclass
class Launch13:
    platform: Platform13
    data: Lti1p3LaunchData
    login_url: str  # the tool's login URL with iss, client_id, login_hint...
    # A component whose content was chosen by deep linking: the saved
    # ltiResourceLink item's attributes (its url and custom replace the component's).
    content_item: dict[str, Any] | None = None

    def answer(self, tool_redirect: str) -> dict[str, str]:
        """The platform's launch view, given the tool's redirect to the auth URL:
        the form (state, id_token) it auto-posts to redirect_uri."""
        preflight = {k: v[0] for k, v in parse_qs(urlsplit(tool_redirect).query).items()}
        consumer = self.platform.consumer()
        data = self.data
        consumer.set_user_data(user_id=data.external_user_id, role=data.user_role)
        consumer.set_resource_link_claim(data.resource_link_id)
        consumer.set_launch_presentation_claim(document_target="iframe")
        consumer.set_context_claim(data.context_id,
                                   get_lti_1p3_context_types_claim(data.context_type),
                                   data.context_title, data.context_label)
        if data.custom_parameters:
            consumer.set_custom_parameters(data.custom_parameters)
        if self.content_item is not None:
            consumer.set_dl_content_launch_parameters(url=self.content_item.get("url"),
                                                      custom=self.content_item.get("custom"))
        return dict(consumer.generate_launch_request(preflight))
