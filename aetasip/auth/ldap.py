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

The connections and the search live in L{aetasip.auth.ldapdirectory}; the
C{ldap} configuration keys and their checks in L{aetasip.auth.ldapsettings}.
"""

from __future__ import annotations

import functools
import re
import threading
from typing import Any, cast

from twisted.internet import defer
from twisted.internet.interfaces import IReactorCore, IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from aetasip.auth import ACCOUNT_KINDS, ALGORITHMS, BackendUnavailable, Credentials, computeHA1
from aetasip.auth.cache import CachedLookups
from aetasip.auth.ldapdirectory import Entry, LDAPDirectory
from aetasip.auth.ldapsettings import LDAPSettings, settingsFromSection
from aetasip.interfaces import IAuthBackend

log = Logger()

# userPassword values hashed by the directory ("{SSHA}..."): no HA1 can be
# derived from them.
HASHED_PASSWORD = re.compile(r"\{(CRYPT|S?SHA(256|384|512)?|S?MD5|PBKDF2[A-Z0-9-]*|ARGON2|BCRYPT|SASL|K5KEY)\}", re.I)

HA1_LENGTH = {"MD5": 32, "SHA-256": 64}


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
