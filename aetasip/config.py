"""
The configuration: every key, its default, and how it is checked.

A configuration file is Python; each section is a dict assigned to a
top-level name::

    sip = {"domains": ["sip.example.net"], "udp_ports": [5060, 5070]}
    store = {"url": "postgresql://aetasip@db/aetasip"}

Keys are named ``section.key`` in errors and in ``tap-config.py``, which
documents them all. Unknown sections or keys are errors: a typo must not be
silently ignored.
"""

from __future__ import annotations

import ipaddress
import os
import runpy
import socket
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs


class ConfigError(Exception):
    """
    A configuration value is wrong. C{str()} is the one line shown to the
    operator: key, value and what was expected.
    """

    def __init__(self, key: str, value: object, expected: str) -> None:
        super().__init__(key, value, expected)
        self.key = key
        self.value = value
        self.expected = expected

    def __str__(self) -> str:
        if self.key.startswith("-"):
            return f"{self.key} {self.value!r}: expected {self.expected}"
        return f"configuration key {self.key} = {self.value!r}: expected {self.expected}"


class _Invalid(Exception):
    """Raised by a checker with the description of what it expected."""


Checker = Callable[[Any], Any]


# -- checkers ------------------------------------------------------------------


def _expect(expected: str) -> _Invalid:
    return _Invalid(expected)


def integer(low: int, high: int) -> Checker:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _expect(f"a whole number from {low} to {high}")
        return value

    return check


def number(low: float, high: float) -> Checker:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise _expect(f"a number from {low} to {high}")
        return float(value)

    return check


def port(value: Any) -> int:
    return integer(0, 65535)(value)  # type: ignore[no-any-return]


def optional(check: Checker) -> Checker:
    def checkOptional(value: Any) -> Any:
        if value is None:
            return None
        try:
            return check(value)
        except _Invalid as e:
            raise _expect(f"None or {e.args[0]}") from None

    return checkOptional


def listOf(check: Checker, what: str, allowEmpty: bool = True) -> Checker:
    expected = f"a list of {what}" if allowEmpty else f"a non-empty list of {what}"

    def checkList(value: Any) -> list[Any]:
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            raise _expect(expected)
        items = list(value)
        if not items and not allowEmpty:
            raise _expect(expected)
        try:
            return [check(item) for item in items]
        except _Invalid:
            raise _expect(expected) from None

    return checkList


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _expect("True or False")
    return value


def text(value: Any) -> str:
    if not isinstance(value, str) or not value or "\x00" in value:
        raise _expect("a non-empty string")
    return value


def choice(*choices: str) -> Checker:
    def check(value: Any) -> str:
        if value not in choices:
            raise _expect("one of " + ", ".join(repr(c) for c in choices))
        return value  # type: ignore[no-any-return]

    return check


def ipAddress(value: Any) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except (ValueError, TypeError):
        raise _expect("an IPv4 or IPv6 address") from None


def hostname(value: Any) -> str:
    """A DNS name or an IP address, lower-cased."""
    if not isinstance(value, str) or not value:
        raise _expect("a host name or IP address")
    host = value.strip("[]").lower()
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if len(host) > 253 or not all(
        0 < len(label) < 64 and all(c.isalnum() or c == "-" for c in label) and not label.startswith("-")
        for label in labels
    ):
        raise _expect("a host name or IP address")
    return host.rstrip(".")


def dictOfDicts(value: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, dict) for k, v in value.items()):
        raise _expect("a dict of names to dicts of their settings")
    return value


def storeURL(value: Any) -> str:
    if not isinstance(value, str) or not (
        value.startswith("sqlite:///") or value.startswith("postgresql://") or value == "sqlite://"
    ):
        raise _expect("sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DATABASE")
    return value


def readableFile(value: Any) -> str:
    if not isinstance(value, str) or not os.path.isfile(value) or not os.access(value, os.R_OK):
        raise _expect("the path of a readable file")
    return value


# -- the keys ------------------------------------------------------------------


@attrs.frozen
class Key:
    """One configuration key: dotted name, default, checker, documentation."""

    name: str
    default: Any
    check: Checker
    doc: str


def _defaultServerName() -> str:
    return socket.gethostname() or "aetasip"


KEYS: dict[str, Key] = {
    k.name: k
    for k in [
        Key(
            "server.name",
            _defaultServerName(),
            text,
            "Name of this server in logs, events and the User-Agent/Server header.",
        ),
        # SIP transports
        Key(
            "sip.listen",
            ["0.0.0.0", "::"],
            listOf(ipAddress, "IP addresses", allowEmpty=False),
            "Addresses SIP listens on. '::' (all IPv6 addresses) is skipped with a warning on hosts without IPv6.",
        ),
        Key(
            "sip.udp_ports",
            [5060, 5070],
            listOf(port, "port numbers"),
            "UDP ports (5070 is the alternate port for routers that mangle 5060).",
        ),
        Key("sip.tcp_ports", [5060, 5070], listOf(port, "port numbers"), "TCP ports."),
        Key("sip.tls_port", 5061, port, "TLS port, used only when sip.tls_certificate is set."),
        Key(
            "sip.tls_certificate", None, optional(readableFile), "PEM file with the certificate chain for SIP over TLS."
        ),
        Key(
            "sip.tls_key",
            None,
            optional(readableFile),
            "PEM file with the private key (defaults to the certificate file).",
        ),
        Key(
            "sip.domains",
            [],
            listOf(hostname, "host names or IP addresses"),
            "Domain names and addresses this service answers for, all one user space. The machine's own names and listen addresses are always added.",
        ),
        Key(
            "sip.realm",
            "aetasip",
            text,
            "Digest realm. Changing it invalidates every stored HA1: set it once, before adding accounts.",
        ),
        Key("sip.max_message_size", 65535, integer(1024, 1048576), "Largest SIP message accepted, in bytes."),
        Key(
            "sip.udp_buffer_size",
            4194304,
            integer(65536, 268435456),
            "Receive and send buffer of each SIP UDP socket, in bytes: room for the datagrams that arrive while "
            "the server is busy, instead of losing them to retransmissions. Above net.core.rmem_max it is forced "
            "when aetasip has CAP_NET_ADMIN (root outside a container), else capped by the kernel.",
        ),
        Key(
            "sip.tcp_idle_timeout",
            3600,
            integer(10, 86400),
            "Seconds after which an idle TCP/TLS connection without bindings is closed.",
        ),
        # Digest
        Key(
            "auth.backends",
            ["sql"],
            listOf(text, "backend names", allowEmpty=False),
            "Authentication backends, asked in order; the first that knows a number answers.",
        ),
        Key(
            "auth.algorithms",
            ["MD5", "SHA-256"],
            listOf(choice("SHA-256", "MD5"), "'SHA-256' or 'MD5'", allowEmpty=False),
            "Digest algorithms offered, one challenge each, in this order. Many agents (older codec firmware, sipp) "
            "answer only the first challenge and only know MD5, so MD5 comes first by default; put SHA-256 first "
            "when every agent of the fleet supports RFC 8760.",
        ),
        Key("auth.nonce_lifetime", 300, integer(10, 86400), "Seconds a nonce is accepted; older ones get stale=true."),
        Key("auth.file", None, optional(text), "Path of the accounts file read by the 'file' backend."),
        Key(
            "auth.options",
            {},
            dictOfDicts,
            "Settings of third-party authentication backends, by backend name, e.g. {'example': {...}}; "
            "each backend reads its own entry.",
        ),
        Key(
            "auth.cache_ttl",
            60,
            integer(0, 3600),
            "Seconds the 'sql' backend reuses the credentials it read (0: ask the store every time). A password "
            "changed with aetasip-admin applies within this time; an unknown number is remembered 5 s at most.",
        ),
        # Registrar
        Key(
            "registrar.min_expires",
            60,
            integer(1, 86400),
            "Shortest registration accepted (shorter ones get 423 Interval Too Brief).",
        ),
        Key(
            "registrar.max_expires",
            3600,
            integer(1, 604800),
            "Longest registration granted; longer requests are shortened.",
        ),
        Key("registrar.default_expires", 3600, integer(1, 604800), "Expiry of a contact whose REGISTER names none."),
        Key("registrar.max_contacts", 10, integer(1, 1000), "Most contacts one number may have bound at once."),
        Key(
            "registrar.conflict",
            "reject",
            choice("reject", "replace", "allow"),
            "When a second agent registers a number already registered by another: 'reject' it (403), "
            "'replace' the other agent's bindings, or 'allow' both (calls fork). Always logged and raised as a 'conflict' event.",
        ),
        Key(
            "registrar.options_ping_interval",
            0,
            integer(0, 3600),
            "Seconds between OPTIONS pings to UDP agents to keep their NAT open (0: off).",
        ),
        # LDAP authentication backend (checked further when auth.backends names 'ldap')
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
        Key(
            "ldap.kind_attribute", None, optional(text), "Attribute holding the account kind (None: ldap.default_kind)."
        ),
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
        # Store
        Key(
            "store.url",
            "sqlite:///aetasip.db",
            storeURL,
            "The store: a SQLite file (relative to the working directory) or a PostgreSQL URL.",
        ),
        # Registration webhooks
        Key(
            "notify.urls",
            [],
            listOf(text, "http:// or https:// URLs"),
            "URLs every registration event is POSTed to, as signed JSON (empty: no webhooks).",
        ),
        Key(
            "notify.secret",
            None,
            optional(text),
            "HMAC-SHA256 key signing each POST (X-Aetasip-Signature); required when notify.urls is set.",
        ),
        Key(
            "notify.events",
            ["registered", "unregistered", "expired", "conflict"],
            listOf(
                choice("registered", "refreshed", "unregistered", "expired", "conflict"),
                "'registered', 'refreshed', 'unregistered', 'expired' or 'conflict'",
            ),
            "Events sent. 'refreshed' (every re-REGISTER of a codec) is off by default: it is by far the most frequent.",
        ),
        Key(
            "notify.ca_certificate",
            None,
            optional(readableFile),
            "PEM file of the CA certificates trusted for https:// URLs (default: the system's trust store).",
        ),
        Key(
            "notify.timeout",
            10,
            number(0.1, 300),
            "Seconds a POST may take, from connecting to the end of the answer.",
        ),
        Key(
            "notify.queue_size",
            1000,
            integer(1, 1000000),
            "Events waiting per URL; when full, the oldest are dropped (and counted).",
        ),
        Key(
            "notify.max_attempts",
            10,
            integer(1, 1000),
            "Attempts per event and URL (the first included) before it is given up; any answer but 2xx is a failure.",
        ),
        Key(
            "notify.retry_delay",
            1,
            number(0.01, 3600),
            "Seconds before the first retry; the delay doubles at each further retry up to notify.max_backoff.",
        ),
        Key("notify.max_backoff", 60, number(0.01, 86400), "Longest delay between two attempts, in seconds."),
        Key(
            "notify.shutdown_grace",
            5,
            number(0, 300),
            "Seconds a stopping service keeps delivering queued events; what is left then is logged as lost.",
        ),
        # Call routing (checked further by aetasip.routing.chain.makeRoutingChain)
        Key(
            "routing.policies",
            ["numberplan", "hunting", "blocking", "exists"],
            listOf(text, "routing policy names", allowEmpty=False),
            "Routing policies a call goes through, in order; the first refusal answers the call. 'numberplan' "
            "resolves short numbers, 'hunting' expands hunting group numbers, 'blocking' applies the groups' "
            "incoming/outgoing call blocking, 'exists' refuses unknown numbers (404); third-party plugins add more.",
        ),
        Key(
            "routing.test_number",
            "15000",
            text,
            "The test number: open to groups with outgoing-call blocking.",
        ),
        Key(
            "routing.short_number_digits",
            4,
            integer(1, 15),
            "Length of a short number: dialled by a member of a group, it reaches the group's prefix + these digits.",
        ),
        Key(
            "routing.hunting_number",
            "6000",
            text,
            "Hunting group number, after the group's prefix (45676000 for group 4567, or 6000 dialled inside it).",
        ),
        Key(
            "routing.hunting_ring_time",
            20,
            integer(1, 600),
            "Seconds each member of a hunting series rings before the call moves on to the next one.",
        ),
        Key(
            "routing.options",
            {},
            dictOfDicts,
            "Settings of third-party routing policies, by policy name, e.g. {'example': {...}}; each policy reads "
            "its own entry.",
        ),
        # STUN
        Key("stun.enabled", True, boolean, "Run the STUN server."),
        Key(
            "stun.listen",
            ["0.0.0.0", "::"],
            listOf(ipAddress, "IP addresses", allowEmpty=False),
            "Addresses the STUN server listens on.",
        ),
        Key("stun.port", 3478, port, "STUN port, UDP and TCP."),
        Key("stun.alternate_port", None, optional(port), "Second STUN port: enables RFC 5780 NAT behaviour discovery."),
        Key(
            "stun.alternate_address",
            None,
            optional(ipAddress),
            "Second address for RFC 5780 (CHANGE-REQUEST change-IP).",
        ),
        Key(
            "stun.rate_limit", 50, integer(0, 1000000), "Requests per second answered per source address (0: no limit)."
        ),
    ]
}


def sections() -> list[str]:
    return sorted({name.split(".", 1)[0] for name in KEYS})


@attrs.frozen
class Config:
    """
    A complete, checked configuration. Read values with C{config["sip.realm"]}.
    """

    values: Mapping[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def section(self, name: str) -> dict[str, Any]:
        prefix = name + "."
        return {k[len(prefix) :]: v for k, v in self.values.items() if k.startswith(prefix)}

    def replace(self, **changes: Any) -> Config:
        """
        A copy with some keys changed (C{sip__realm="x"} for C{sip.realm}),
        checked like a file.
        """
        return build({k.replace("__", "."): v for k, v in changes.items()}, base=self.values)


def build(settings: Mapping[str, Any], base: Mapping[str, Any] | None = None) -> Config:
    """
    Check C{settings} (dotted names to values) over C{base} (or the
    defaults) and return the resulting L{Config}.

    @raise ConfigError: for an unknown key or a bad value.
    """
    values = dict(base) if base is not None else {k.name: k.default for k in KEYS.values()}
    for name, value in settings.items():
        key = KEYS.get(name)
        if key is None:
            raise ConfigError(name, value, "a known key (see tap-config.py)")
        try:
            values[name] = key.check(value)
        except _Invalid as e:
            raise ConfigError(name, value, e.args[0]) from None
    if values["registrar.min_expires"] > values["registrar.max_expires"]:
        raise ConfigError(
            "registrar.min_expires",
            values["registrar.min_expires"],
            f"at most registrar.max_expires ({values['registrar.max_expires']})",
        )
    return Config(values)


def readFile(path: str) -> dict[str, Any]:
    """
    Run the Python configuration file C{path}; return its settings as
    dotted names.

    @raise ConfigError: when the file cannot be read or run, or assigns a
        section that is not a dict.
    """
    try:
        namespace = runpy.run_path(path)
    except FileNotFoundError:
        raise ConfigError("--config", path, "the path of a readable configuration file") from None
    except SyntaxError as e:
        raise ConfigError("--config", path, f"valid Python (line {e.lineno}: {e.msg})") from None
    except Exception as e:  # the file is the operator's code: report, never trace back
        raise ConfigError("--config", path, f"a file that runs ({type(e).__name__}: {e})") from None
    known = set(sections())
    settings: dict[str, Any] = {}
    for name, value in namespace.items():
        if name.startswith("_") or callable(value) or type(value).__name__ == "module":
            continue
        if name not in known:
            raise ConfigError(name, value, "a known section: " + ", ".join(sorted(known)))
        if not isinstance(value, dict):
            raise ConfigError(name, value, "a dict of keys for this section")
        for key, item in value.items():
            settings[f"{name}.{key}"] = item
    return settings


def load(path: str | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """
    The configuration from the embedded defaults, then the file C{path},
    then C{overrides} (from the command line).
    """
    settings: dict[str, Any] = {}
    if path is not None:
        settings.update(readFile(path))
    settings.update(overrides or {})
    return build(settings)
