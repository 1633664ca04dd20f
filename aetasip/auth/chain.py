"""
Several authentication backends asked in order, and their construction
from the configuration.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from aetasip.auth import BackendUnavailable, Credentials
from aetasip.config import Config, Key, choice, declare, dictOfDicts, integer, listOf, optional, text
from aetasip.interfaces import IAuthBackend, IAuthBackendFactory
from aetasip.plugins import chosen, namedPlugins

log = Logger()

# The auth.* configuration keys (documented in tap-config.py too): digest settings,
# read by the registrar and the proxy, and the backends of the chain.
declare(
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
    Key(
        "auth.md5_only_agents",
        ["baresip"],
        listOf(text, "User-Agent fragments"),
        "Agents, by a case-insensitive fragment of their User-Agent, that get the MD5 challenge alone: "
        "they fail when offered an algorithm they do not know (baresip 1.0 refuses the whole "
        "registration when a SHA-256 challenge comes with the MD5 one). A number that has authenticated "
        "with SHA-256 is held to it whatever its User-Agent says (in this process's memory).",
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
    Key(
        "auth.cache_size",
        10000,
        integer(100, 10_000_000),
        "Numbers whose credentials the 'sql' backend keeps; past it the least recently used is dropped.",
    ),
    Key(
        "auth.max_pending",
        1000,
        integer(1, 1_000_000),
        "Numbers the 'sql' backend may be waiting for the store for at once; beyond, requests get 503 with "
        "Retry-After at once instead of queueing without bound (a storm while the database is slow).",
    ),
)


@implementer(IAuthBackend)
class AuthChain:
    """
    Asks its backends in order; the first that knows the number answers.

    When a backend cannot answer (L{BackendUnavailable}, or any other
    error, which is logged) the next ones are asked; if none of them knows
    the number, the lookup fails with L{BackendUnavailable}, since the
    backend that could not answer might have known it: the request is
    answered 503, never 404 or 403.
    """

    name = "chain"

    def __init__(self, backends: Sequence[IAuthBackend]) -> None:
        """
        @param backends: providers of L{IAuthBackend}, in the order to ask them.
        """
        self.backends = list(backends)

    def credentials(self, number: str) -> defer.Deferred[Credentials | None]:
        """
        See L{IAuthBackend.credentials}. When the backends answer at once,
        so does the chain: the returned Deferred has already fired (no
        coroutine on the registrar's hot path).
        """
        return self._ask(number, 0, [])

    def _ask(self, number: str, index: int, unavailable: list[str]) -> defer.Deferred[Credentials | None]:
        if index == len(self.backends):
            if unavailable:
                return defer.fail(BackendUnavailable(f"{', '.join(unavailable)} could not answer for {number}"))
            return defer.succeed(None)
        backend = self.backends[index]

        def answered(answer: Credentials | None) -> Credentials | defer.Deferred[Credentials | None] | None:
            return answer if answer is not None else self._ask(number, index + 1, unavailable)

        def failed(reason: Failure) -> defer.Deferred[Credentials | None]:
            if reason.check(BackendUnavailable):
                log.warn(
                    "Authentication backend {backend} unavailable for {number}: {error}",
                    backend=backend.name,
                    number=number,
                    error=reason.getErrorMessage(),
                )
            else:
                log.failure(
                    "Authentication backend {backend} failed for {number}", reason, backend=backend.name, number=number
                )
            return self._ask(number, index + 1, [*unavailable, backend.name])

        return defer.maybeDeferred(backend.credentials, number).addCallbacks(answered, failed)


def backendFactories() -> dict[str, IAuthBackendFactory]:
    """The authentication backend factories installed as Twisted plugins, by name."""
    return namedPlugins(IAuthBackendFactory, "authentication backends")


def backendOptions(config: Config) -> dict[str, Any]:
    """
    The options given to every backend factory: the C{auth} section of
    C{config} without the C{auth.} prefix, C{realm} (C{sip.realm}), and
    C{ldap}, the C{ldap} section (for the C{ldap} backend).
    """
    return {**config.section("auth"), "realm": config["sip.realm"], "ldap": config.section("ldap")}


def makeAuthBackend(config: Config, store: object = None) -> IAuthBackend:
    """
    The chain of the backends named in C{auth.backends}.

    @param store: the service's L{aetasip.store.AsyncStore}, for the
        backends that read it.
    @raise ConfigError: for an unknown or repeated name, or a backend's own
        configuration error.
    """
    options = backendOptions(config)
    backends = [
        IAuthBackend(factory.makeBackend(options, store))
        for factory in chosen("auth.backends", config["auth.backends"], backendFactories())
    ]
    # One backend needs no chain: nothing between the registrar and its answer.
    return backends[0] if len(backends) == 1 else AuthChain(backends)
