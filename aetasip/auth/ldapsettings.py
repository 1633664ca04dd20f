"""
The C{ldap} configuration section of the C{ldap} authentication backend:
its keys (declared here), and L{LDAPSettings}, the section checked
(L{settingsFromSection}).
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Any, cast

import attrs
from ldap3.core.exceptions import LDAPInvalidFilterError
from ldap3.operation.search import parse_filter

from aetasip.config import ConfigError, Key, boolean, choice, declare, integer, listOf, optional, readableFile, text

# The ldap.* configuration keys of the 'ldap' backend (documented in tap-config.py
# too), checked further by settingsFromSection when auth.backends names it.
LDAP_KEYS = (
    Key(
        "ldap.urls",
        [],
        listOf(text, "ldap:// or ldaps:// URLs"),
        "Directory servers of the 'ldap' backend, ldap://HOST[:PORT] or ldaps://HOST[:PORT], tried in order: "
        "the next one when a server is down, refuses the bind or fails TLS.",
    ),
    Key("ldap.bind_dn", None, optional(text), "DN the service binds as (None: anonymous bind)."),
    Key("ldap.bind_password", None, optional(text), "Password of ldap.bind_dn."),
    Key("ldap.base", None, optional(text), "DN under which accounts are searched; required by the 'ldap' backend."),
    Key(
        "ldap.scope",
        "subtree",
        choice("subtree", "one"),
        "Search the whole subtree under ldap.base, or 'one' level only.",
    ),
    Key(
        "ldap.filter",
        "(uid={number})",
        text,
        "Search filter; {number} stands for the SIP number, escaped (RFC 4515). It must match one entry.",
    ),
    Key(
        "ldap.password_attribute",
        "userPassword",
        optional(text),
        "Attribute holding the SIP password in clear text (None: use the HA1 attributes only). Hashed values "
        "('{SSHA}...') cannot serve digest authentication: such accounts are refused, with a warning.",
    ),
    Key(
        "ldap.ha1_md5_attribute",
        None,
        optional(text),
        "Attribute holding the hex MD5 HA1, MD5(number ':' sip.realm ':' password); it wins over the password.",
    ),
    Key(
        "ldap.ha1_sha256_attribute",
        None,
        optional(text),
        "Attribute holding the hex SHA-256 HA1, computed like the MD5 one; it wins over the password.",
    ),
    Key("ldap.kind_attribute", None, optional(text), "Attribute holding the account kind (None: ldap.default_kind)."),
    Key(
        "ldap.default_kind",
        "premium",
        choice("factory", "premium", "escoopfone", "test", "hunting"),
        "Kind of the accounts without a kind attribute (or with an unknown kind, logged).",
    ),
    Key("ldap.starttls", False, boolean, "Upgrade ldap:// connections with StartTLS before binding."),
    Key(
        "ldap.ca_certificate",
        None,
        optional(readableFile),
        "PEM file of the CA certificates trusted for StartTLS and ldaps:// (None: the system's trust store). "
        "The server's certificate must also name the host of its URL.",
    ),
    Key(
        "ldap.timeout",
        5,
        integer(1, 300),
        "Seconds a directory may take to connect or to answer before it counts as down (503 for the codec).",
    ),
    Key("ldap.pool_size", 4, integer(1, 64), "Connections to the directory, each used by one thread at a time."),
    Key(
        "ldap.cache_ttl",
        60,
        integer(0, 3600),
        "Seconds an answer of the directory is reused (0: ask it every time); an unknown number is remembered "
        "5 s at most.",
    ),
)
declare(*LDAP_KEYS)

ATTRIBUTE_NAME = re.compile(r"([A-Za-z][A-Za-z0-9-]*|[0-9]+(\.[0-9]+)+)(;[A-Za-z0-9-]+)*")


@attrs.frozen
class LDAPSettings:
    """
    The checked C{ldap} configuration section.

    @ivar servers: C{(useSSL, host, port)} of each server, in the order tried.
    @ivar ha1Attributes: digest algorithm to the attribute holding its HA1.
    """

    servers: tuple[tuple[bool, str, int], ...]
    base: str
    bindDN: str | None = None
    bindPassword: str | None = None
    scope: str = "subtree"
    filter: str = "(uid={number})"
    passwordAttribute: str | None = "userPassword"
    ha1Attributes: dict[str, str] = attrs.field(factory=dict)
    kindAttribute: str | None = None
    defaultKind: str = "premium"
    startTLS: bool = False
    caCertificate: str | None = None
    timeout: int = 5
    poolSize: int = 4
    cacheTTL: float = 60.0

    @property
    def attributes(self) -> list[str]:
        """The attributes a search asks for."""
        names = [self.passwordAttribute, *self.ha1Attributes.values(), self.kindAttribute]
        return [name for name in names if name is not None]

    @property
    def encrypted(self) -> bool:
        """Whether every connection is protected by TLS."""
        return all(useSSL or self.startTLS for useSSL, _, _ in self.servers)


def _parseURLs(urls: list[str]) -> tuple[tuple[bool, str, int], ...]:
    expected = "a non-empty list of ldap://HOST[:PORT] or ldaps://HOST[:PORT] URLs"
    servers = []
    for url in urls:
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port
        except ValueError:
            raise ConfigError("ldap.urls", urls, expected) from None
        scheme = parts.scheme.lower()
        if (
            scheme not in ("ldap", "ldaps")
            or not parts.hostname
            or parts.path not in ("", "/")
            or parts.query
            or parts.fragment
            or parts.username is not None
        ):
            raise ConfigError("ldap.urls", urls, expected)
        useSSL = scheme == "ldaps"
        servers.append((useSSL, parts.hostname, port or (636 if useSSL else 389)))
    if not servers:
        raise ConfigError("ldap.urls", urls, expected)
    return tuple(servers)


def _attribute(section: dict[str, Any], key: str) -> str | None:
    value = section[key]
    if value is not None and not ATTRIBUTE_NAME.fullmatch(value):
        raise ConfigError(f"ldap.{key}", value, "None or an LDAP attribute name")
    return cast(str | None, value)


def _checkFilter(template: str) -> str:
    expected = "an LDAP filter in parentheses containing {number}, such as (uid={number})"
    if "{number}" not in template:
        raise ConfigError("ldap.filter", template, expected)
    try:
        parse_filter(template.replace("{number}", "0"), None, True, True, None, False)
    except LDAPInvalidFilterError:
        raise ConfigError("ldap.filter", template, expected) from None
    return template


def settingsFromSection(section: dict[str, Any]) -> LDAPSettings:
    """
    L{LDAPSettings} from the C{ldap} configuration section (keys without
    the C{ldap.} prefix; missing keys take their defaults).

    @raise ConfigError: for what L{aetasip.config} cannot check alone: the
        URLs, the base, the filter, attribute names, and a password for the
        bind DN.
    """
    defaults = {key.name[len("ldap.") :]: key.default for key in LDAP_KEYS}
    section = {**defaults, **section}
    servers = _parseURLs(section["urls"])
    if not section["base"]:
        raise ConfigError("ldap.base", section["base"], "the DN under which accounts are searched")
    if section["bind_dn"] is not None and not section["bind_password"]:
        raise ConfigError("ldap.bind_password", section["bind_password"], "the password of ldap.bind_dn")
    passwordAttribute = _attribute(section, "password_attribute")
    ha1Attributes = {
        algorithm: attribute
        for algorithm, attribute in [
            ("MD5", _attribute(section, "ha1_md5_attribute")),
            ("SHA-256", _attribute(section, "ha1_sha256_attribute")),
        ]
        if attribute is not None
    }
    if passwordAttribute is None and not ha1Attributes:
        raise ConfigError(
            "ldap.password_attribute", None, "an attribute name when neither HA1 attribute is set (nothing to check)"
        )
    return LDAPSettings(
        servers=servers,
        base=section["base"],
        bindDN=section["bind_dn"],
        bindPassword=section["bind_password"],
        scope=section["scope"],
        filter=_checkFilter(section["filter"]),
        passwordAttribute=passwordAttribute,
        ha1Attributes=ha1Attributes,
        kindAttribute=_attribute(section, "kind_attribute"),
        defaultKind=section["default_kind"],
        startTLS=section["starttls"],
        caCertificate=section["ca_certificate"],
        timeout=section["timeout"],
        poolSize=section["pool_size"],
        cacheTTL=float(section["cache_ttl"]),
    )
