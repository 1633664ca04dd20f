"""
The C{ldap} authentication backend: accounts in an LDAP directory, read
with ldap3.

ldap3 blocks, so every directory operation runs in a small thread pool of
the backend's own (C{ldap.pool_size} threads), each thread using one
pooled connection at a time; the reactor never waits for the directory.
Answers are cached for C{ldap.cache_ttl} seconds so that a REGISTER storm
does not become an LDAP storm. When no directory server can answer
(down, too slow, bind refused, TLS refused), lookups fail with
L{BackendUnavailable} and the codec gets 503 with Retry-After; the next
lookup connects again, so service resumes as soon as the directory does.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import ssl
import threading
import urllib.parse
from typing import Any, cast

import attrs
from ldap3 import AUTO_BIND_NONE, LEVEL, NONE, SUBTREE, SYNC, Connection, Server, Tls
from ldap3.core.exceptions import LDAPCertificateError, LDAPException, LDAPInvalidFilterError
from ldap3.operation.search import parse_filter
from ldap3.utils.conv import escape_filter_chars
from twisted.internet import defer
from twisted.internet.interfaces import IReactorCore, IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from aetasip.auth import ACCOUNT_KINDS, ALGORITHMS, BackendUnavailable, Credentials, computeHA1
from aetasip.auth.cache import CachedLookups
from aetasip.config import ConfigError, Key, boolean, choice, declare, integer, listOf, optional, readableFile, text
from aetasip.interfaces import IAuthBackend

log = Logger()

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

# userPassword values hashed by the directory ("{SSHA}..."): no HA1 can be
# derived from them.
HASHED_PASSWORD = re.compile(r"\{(CRYPT|S?SHA(256|384|512)?|S?MD5|PBKDF2[A-Z0-9-]*|ARGON2|BCRYPT|SASL|K5KEY)\}", re.I)

HA1_LENGTH = {"MD5": 32, "SHA-256": 64}

ATTRIBUTE_NAME = re.compile(r"([A-Za-z][A-Za-z0-9-]*|[0-9]+(\.[0-9]+)+)(;[A-Za-z0-9-]+)*")

# One search result: the entry's DN, and its attributes (names lower-cased)
# with their raw values.
Entry = tuple[str, dict[str, list[bytes]]]


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


def _isAddress(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class VerifyingTLS(Tls):  # type: ignore[misc]
    """
    TLS for ldap3 (LDAPS and StartTLS) that verifies the server: its
    certificate chain against C{caFile} (or the system's trust store), then
    with C{service_identity} that the certificate names the host of the
    server's URL (DNS name or IP address, RFC 6125). A failure raises
    L{LDAPCertificateError} before anything (the bind password first of
    all) is sent.
    """

    def __init__(self, caFile: str | None) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED, ca_certs_file=caFile)

    def wrap_socket(self, connection: Connection, do_handshake: bool = False) -> None:
        """
        Replace C{connection}'s socket with a verified TLS one; ldap3 calls
        this for ldaps:// at connection and for StartTLS. The handshake is
        always done here, whatever C{do_handshake} says: the certificate
        must be checked now.
        """
        from cryptography import x509
        from service_identity import CertificateError, VerificationError
        from service_identity.cryptography import verify_certificate_hostname, verify_certificate_ip_address

        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_certs_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        # The name is checked below with service_identity, after the chain.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_REQUIRED
        host = connection.server.host.strip("[]")
        address = _isAddress(host)
        wrapped = context.wrap_socket(connection.socket, server_hostname=None if address else host)
        try:
            certificate = x509.load_der_x509_certificate(wrapped.getpeercert(binary_form=True) or b"")
            if address:
                verify_certificate_ip_address(certificate, host)
            else:
                verify_certificate_hostname(certificate, host)
        except VerificationError:
            wrapped.close()
            raise LDAPCertificateError(f"the certificate of the directory does not name {host}") from None
        except (CertificateError, ValueError) as e:
            wrapped.close()
            raise LDAPCertificateError(f"the certificate of the directory is unusable: {e}") from None
        connection.socket = wrapped


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__


def _unbind(connection: Connection) -> None:
    """Unbind C{connection} if the directory still listens; close its socket anyway."""
    try:
        connection.unbind()
    except Exception:  # a dead connection: nothing to tell the directory
        pass
    sock = getattr(connection, "socket", None)
    if sock is not None:
        try:
            sock.close()
        except OSError:
            pass


class LDAPDirectory:
    """
    The blocking side: ldap3 connections to the directory servers, kept
    for reuse. L{search} blocks: call it in a thread. A connection is used
    by one thread at a time, so the pool holds at most as many connections
    as threads call L{search} at once.

    @ivar searches: the searches sent so far.
    @ivar connections: the connections opened (and bound) so far.
    """

    def __init__(self, settings: LDAPSettings) -> None:
        self.settings = settings
        self._tls = VerifyingTLS(settings.caCertificate)
        self.searches = 0
        self.connections = 0
        self._idle: list[Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def search(self, number: str) -> list[Entry]:
        """
        The entries the filter finds for C{number} (at most two: more than
        one is an error the caller reports).

        @raise BackendUnavailable: when no server answers.
        """
        query = self.settings.filter.replace("{number}", escape_filter_chars(number))
        connection = self._takeIdle()
        if connection is not None:
            try:
                return self._searchOn(connection, query)
            except (LDAPException, OSError) as e:
                if isinstance(e, TimeoutError):
                    raise BackendUnavailable(f"LDAP search timed out: {_describe(e)}") from None
                # The directory closed this pooled connection (restart, idle
                # timeout): once more on a new one.
        connection = self._connect()
        try:
            return self._searchOn(connection, query)
        except (LDAPException, OSError) as e:
            raise BackendUnavailable(f"LDAP search failed: {_describe(e)}") from None

    @property
    def idleConnections(self) -> int:
        """The connections waiting for the next search."""
        with self._lock:
            return len(self._idle)

    def close(self) -> None:
        """
        Unbind the idle connections; connections in use are unbound when
        their search ends. A later L{search} opens connections again.
        """
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            _unbind(connection)

    def _takeIdle(self) -> Connection | None:
        with self._lock:
            self._closed = False  # in use again after close()
            return self._idle.pop() if self._idle else None

    def _giveBack(self, connection: Connection) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(connection)
                return
        _unbind(connection)

    def _connect(self) -> Connection:
        """
        A connection bound to the first server that accepts it: TCP, TLS
        verified (ldaps:// or StartTLS), bind.

        @raise BackendUnavailable: with every server's reason.
        """
        settings = self.settings
        problems = []
        for useSSL, host, port in settings.servers:
            # A new Server each time: ldap3 marks the addresses of a server
            # that failed as unavailable for a while, and a Server is not
            # shared between threads.
            server = Server(
                host, port=port, use_ssl=useSSL, tls=self._tls, get_info=NONE, connect_timeout=settings.timeout
            )
            connection = Connection(
                server,
                user=settings.bindDN,
                password=settings.bindPassword,
                client_strategy=SYNC,
                auto_bind=AUTO_BIND_NONE,
                read_only=True,
                receive_timeout=settings.timeout,
                raise_exceptions=False,
                check_names=False,
                auto_referrals=False,
            )
            try:
                connection.open(read_server_info=False)
                if settings.startTLS and not server.ssl and not connection.start_tls(read_server_info=False):
                    problems.append(f"{server.name}: StartTLS refused")
                elif connection.bind(read_server_info=False):
                    with self._lock:
                        self.connections += 1
                    return connection
                else:
                    result = connection.result or {}
                    who = settings.bindDN or "anonymous"
                    problems.append(f"{server.name}: bind as {who} refused ({result.get('description', 'no answer')})")
            except (LDAPException, OSError) as e:
                problems.append(f"{server.name}: {_describe(e)}")
            except BaseException:
                _unbind(connection)
                raise
            _unbind(connection)
        raise BackendUnavailable("no LDAP server available: " + "; ".join(problems))

    def _searchOn(self, connection: Connection, query: str) -> list[Entry]:
        settings = self.settings
        try:
            with self._lock:
                self.searches += 1
            connection.search(
                settings.base,
                query,
                search_scope=SUBTREE if settings.scope == "subtree" else LEVEL,
                attributes=settings.attributes,
                size_limit=2,
                time_limit=settings.timeout,
            )
            result = connection.result
            if result is None:
                raise BackendUnavailable(f"{connection.server.name} did not answer the search")
            # 4: sizeLimitExceeded, the filter matches several entries.
            if result["result"] not in (0, 4):
                detail = f"{result['description']} {result.get('message') or ''}".strip()
                raise BackendUnavailable(f"{connection.server.name} refused the search under {settings.base}: {detail}")
            entries = [
                (str(item["dn"]), {name.lower(): list(values) for name, values in item["raw_attributes"].items()})
                for item in connection.response or []
                if item.get("type") == "searchResEntry"
            ]
        except BaseException:
            _unbind(connection)
            raise
        self._giveBack(connection)
        return entries


@implementer(IAuthBackend)
class LDAPAuthBackend:
    """
    Credentials from an LDAP directory, through a short-lived cache.

    Like the C{sql} backend's cache: an answer, C{None} included (for
    L{NEGATIVE_TTL} seconds at most), is kept C{cacheTTL} seconds and
    returned as an already-fired L{Deferred}; concurrent lookups of one
    number share one search; errors are not cached. When more than
    C{maxPending} numbers wait for the directory (a storm while it is
    slow), further lookups fail at once rather than queue without bound.

    @ivar directory: the L{LDAPDirectory} searched.
    @ivar threadPool: the threads searching it, from the first lookup on.
    """

    name = "ldap"

    def __init__(
        self,
        settings: LDAPSettings,
        realm: str,
        reactor: Any = None,
        clock: IReactorTime | None = None,
        maxCached: int = 10000,
        maxPending: int = 1000,
    ) -> None:
        """
        @param settings: the directory and how accounts are stored in it.
        @param realm: the digest realm (C{sip.realm}).
        @param reactor: runs the threads and receives their answers; the
            global reactor by default.
        @param clock: the time source of the cache; C{reactor} by default.
        """
        if reactor is None:
            from twisted.internet import reactor
        self.settings = settings
        self.realm = realm
        self.directory = LDAPDirectory(settings)
        self._reactor = reactor
        self._clock = cast(IReactorTime, clock if clock is not None else reactor)
        self.cache = CachedLookups(self._fetch, settings.cacheTTL, self._clock, maxCached, maxPending)
        self.threadPool: ThreadPool | None = None
        self._shutdownTrigger: Any = None

    def credentials(self, number: str) -> defer.Deferred[Credentials | None]:
        """
        See L{IAuthBackend.credentials}.
        """
        return self.cache.lookup(number)

    def forget(self, number: str | None = None) -> None:
        """
        Drop the cached answer for C{number}, or every cached answer.
        """
        self.cache.forget(number)

    def _fetch(self, number: str) -> defer.Deferred[Credentials | None]:
        d = deferToThreadPool(cast(IReactorThreads, self._reactor), self._threadPool(), self.directory.search, number)
        return d.addCallbacks(
            lambda entries: self._credentialsFrom(number, entries), self._failed, errbackArgs=(number,)
        )

    def stop(self) -> None:
        """
        Stop the threads (waiting for the searches under way) and unbind
        the connections. Called at reactor shutdown; a later lookup starts
        them again.
        """
        pool, self.threadPool = self.threadPool, None
        if self._shutdownTrigger is not None:
            trigger, self._shutdownTrigger = self._shutdownTrigger, None
            try:
                self._reactor.removeSystemEventTrigger(trigger)
            except ValueError:  # called by that very trigger
                pass
        if pool is not None:
            pool.stop()
        self.directory.close()

    def _threadPool(self) -> ThreadPool:
        if self.threadPool is None:
            pool = ThreadPool(0, self.settings.poolSize, name="aetasip-ldap")
            # Daemon threads: a blocked search never holds the process at exit.
            pool.threadFactory = functools.partial(threading.Thread, daemon=True)  # type: ignore[assignment]
            pool.start()
            self.threadPool = pool
            self._shutdownTrigger = cast(IReactorCore, self._reactor).addSystemEventTrigger(
                "during", "shutdown", self.stop
            )
        return self.threadPool

    def _failed(self, reason: Failure, number: str) -> Failure:
        if reason.check(BackendUnavailable):
            log.warn(
                "LDAP directory cannot answer for {number}: {error}", number=number, error=reason.getErrorMessage()
            )
            return reason
        log.failure("LDAP lookup of {number} failed", reason, number=number)
        return Failure(BackendUnavailable(f"LDAP lookup failed: {reason.getErrorMessage()}"))

    def _credentialsFrom(self, number: str, entries: list[Entry]) -> Credentials | None:
        """
        The credentials in the entry found for C{number}; C{None} when
        there is none, when the filter is ambiguous, or when the entry holds
        nothing usable for digest (logged).
        """
        if not entries:
            return None
        if len(entries) > 1:
            log.error(
                "LDAP filter {filter} matches several entries for {number} ({dns}): refused",
                filter=self.settings.filter,
                number=number,
                dns=", ".join(dn for dn, _ in entries),
            )
            return None
        dn, attributes = entries[0]

        def first(attribute: str | None) -> str | None:
            values = attributes.get(attribute.lower(), []) if attribute else []
            if not values:
                return None
            try:
                return values[0].decode("utf-8")
            except UnicodeDecodeError:
                log.warn("LDAP attribute {attribute} of {dn} is not UTF-8: ignored", attribute=attribute, dn=dn)
                return None

        ha1: dict[str, str] = {}
        password = first(self.settings.passwordAttribute)
        if password is not None:
            if HASHED_PASSWORD.match(password):
                log.warn(
                    "LDAP attribute {attribute} of {dn} holds a hashed password: digest needs the clear text or HA1",
                    attribute=self.settings.passwordAttribute,
                    dn=dn,
                )
            else:
                ha1 = {algorithm: computeHA1(algorithm, number, self.realm, password) for algorithm in ALGORITHMS}
        for algorithm, attribute in self.settings.ha1Attributes.items():
            value = first(attribute)
            if value is None:
                continue
            value = value.strip().lower()
            if len(value) != HA1_LENGTH[algorithm] or any(c not in "0123456789abcdef" for c in value):
                log.warn(
                    "LDAP attribute {attribute} of {dn} is not a hex {algorithm} HA1: ignored",
                    attribute=attribute,
                    dn=dn,
                    algorithm=algorithm,
                )
                continue
            ha1[algorithm] = value
        if not ha1:
            log.warn("LDAP entry {dn} has no usable SIP credentials: number {number} refused", dn=dn, number=number)
            return None
        kind = first(self.settings.kindAttribute)
        if kind is None:
            kind = self.settings.defaultKind
        elif kind.strip().lower() in ACCOUNT_KINDS:
            kind = kind.strip().lower()
        else:
            log.warn(
                "LDAP entry {dn} has the unknown kind {kind!r}: {default} used",
                dn=dn,
                kind=kind,
                default=self.settings.defaultKind,
            )
            kind = self.settings.defaultKind
        return Credentials(number, kind, self.realm, ha1)


# -- configuration -------------------------------------------------------------


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


def makeLDAPBackend(options: dict[str, Any], store: object = None) -> LDAPAuthBackend:
    """
    The C{ldap} backend for L{aetasip.auth.chain.makeAuthBackend}.

    @param options: the backend options: C{realm}, and C{ldap}, the C{ldap}
        configuration section.
    @param store: unused: the accounts are in the directory.
    @raise ConfigError: for a bad C{ldap} section.
    """
    settings = settingsFromSection(options.get("ldap", {}))
    if settings.bindPassword is not None and not settings.encrypted:
        log.warn("ldap.bind_password travels in clear text to ldap:// servers: set ldap.starttls or use ldaps://")
    return LDAPAuthBackend(settings, options["realm"])
