"""
The C{portal} section of the configuration: who may use the self-care
portal, the time zone of its pages, and the password reset by e-mail.
"""

from __future__ import annotations

import re
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from aetasip.config import Config, Invalid, Key, choice, declare, matching, number, optional

EVERY_ACCOUNT = "every account"
BY_GROUP = "by group"


def _zone(value: Any) -> str:
    expected = "an IANA time zone such as 'UTC' or 'Europe/Paris'"
    if not isinstance(value, str) or not value or len(value) > 64:
        raise Invalid(expected)
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise Invalid(expected) from None
    return value


_URL = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~\-/]*)?")

declare(
    Key(
        "portal.self_care",
        BY_GROUP,
        choice(BY_GROUP, EVERY_ACCOUNT),
        "Who may log in to the self-care portal (with a portal password): 'by group' (the guide's per-group "
        "option: members of a group whose self-care option is off may not; accounts outside groups may) or "
        "'every account' (the other version of the guide: the groups' option is not looked at).",
    ),
    Key(
        "portal.time_zone",
        "UTC",
        _zone,
        "Time zone of the times the portal shows (call records, registrations), e.g. 'Europe/Paris'; its "
        "CSV files are always in UTC.",
    ),
    Key(
        "portal.url",
        None,
        optional(matching(_URL, "the portal's public URL, e.g. 'https://sip.example.net/portal/'")),
        "The portal's address as subscribers reach it, for the links mailed to reset a portal password (never "
        "taken from a request's Host header). None: the web service's own address (fit only on loopback).",
    ),
    Key(
        "portal.reset_lifetime",
        3600,
        number(300, 86400),
        "Seconds a mailed password reset link stays valid (it also stops working once used). Resets need mail "
        "(mail.smtp_host and mail.from_address).",
    ),
)


@attrs.frozen
class PortalSettings:
    """
    The C{portal} section, checked.

    @ivar selfCare: L{BY_GROUP} or L{EVERY_ACCOUNT}.
    @ivar timeZone: the IANA name of the pages' time zone.
    @ivar url: the public URL of the portal (ending in C{/}), or C{None}.
    @ivar resetLifetime: seconds a reset link is valid.
    """

    selfCare: str = BY_GROUP
    timeZone: str = "UTC"
    url: str | None = None
    resetLifetime: float = 3600.0

    @classmethod
    def fromConfig(cls, config: Config) -> PortalSettings:
        url = config["portal.url"]
        if url is not None and not url.endswith("/"):
            url += "/"
        return cls(config["portal.self_care"], config["portal.time_zone"], url, config["portal.reset_lifetime"])
