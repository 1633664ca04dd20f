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
from aetasip.config import Config
from aetasip.interfaces import IAuthBackend, IAuthBackendFactory
from aetasip.plugins import chosen, namedPlugins

log = Logger()


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
