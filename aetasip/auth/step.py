"""
The digest authentication step of the registrar and the proxy (RFC 3261
section 22): find the credentials for our realm, challenge without them,
check them against the account the backend knows.

The registrar answers with 401 and reads C{Authorization} (L{WWW}); the
proxy answers with 407 and reads C{Proxy-Authorization} (L{PROXY}).
Everything else is the same, so it lives here once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from aetasip.auth import BackendUnavailable, Credentials
from aetasip.auth.limits import FailureLimits
from aetasip.sip.digest import DigestAuthenticator, Verdict, algorithmOf, parseDigest
from aetasip.sip.message import Request, Response
from aetasip.sip.responses import localResponse
from aetasip.sip.transaction import Peer

__all__ = ["BANNED", "PROXY", "RETRY_AFTER_UNAVAILABLE", "WWW", "Authenticated", "Authentication", "Kind", "Outcome"]

log = Logger()

RETRY_AFTER_UNAVAILABLE = 30

STRONG = "SHA-256"
"""The algorithm a number, once it authenticated with it, is held to: a
forged User-Agent (see C{auth.md5_only_agents}) or a man in the middle
stripping a challenge cannot take it back to MD5."""

MAX_STRONG = 1_000_000
"""Numbers remembered as using SHA-256 (the memory is the process's)."""

BANNED = "Too many failed authentications"
"""The reason of the 403 answering a banned source."""


class Kind:
    """
    Who authenticates: the headers and status of its challenges, and how
    the number the request claims is judged.

    @ivar code: the status of a challenge (401 or 407).
    @ivar credentialsHeader: the (lower-case) header carrying credentials.
    @ivar challengeHeader: the (lower-case) header carrying challenges.
    @ivar mismatch: the reason of the 403 when the digest C{username} is not
        the number the request claims.
    @ivar numbersOnly: whether a claimed number that is not all digits is
        answered 404 (the registrar: only numbers register).
    """

    __slots__ = ("challengeHeader", "code", "credentialsHeader", "mismatch", "numbersOnly")

    def __init__(
        self, code: int, credentialsHeader: str, challengeHeader: str, mismatch: str, numbersOnly: bool
    ) -> None:
        self.code = code
        self.credentialsHeader = credentialsHeader
        self.challengeHeader = challengeHeader
        self.mismatch = mismatch
        self.numbersOnly = numbersOnly

    def __repr__(self) -> str:
        return f"<Kind {self.code} {self.credentialsHeader}>"


WWW = Kind(401, "authorization", "www-authenticate", "Credentials are not those of the registered number", True)
"""The registrar's: the number claimed is the address-of-record (To)."""

PROXY = Kind(407, "proxy-authorization", "proxy-authenticate", "Credentials are not those of the caller", False)
"""The proxy's: the number claimed is the caller's (From)."""


class Authenticated:
    """
    Credentials that passed.

    @ivar credentials: the account's L{Credentials}.
    @ivar header: the value of the header field they came in; a proxy
        removes it before forwarding (RFC 3261 22.3: credentials for our
        realm stop here, others go on).
    """

    __slots__ = ("credentials", "header")

    def __init__(self, credentials: Credentials, header: str) -> None:
        self.credentials = credentials
        self.header = header


Outcome = Response | Authenticated
"""What L{Authentication.authenticate} comes to: a response to send, or success."""


class Authentication:
    """
    Digest authentication of requests against an L{IAuthBackend}.

    @ivar digest: the L{DigestAuthenticator} (nonces, challenges, verification).
    @ivar auth: the L{IAuthBackend}.
    @ivar realm: the realm of our credentials and challenges.
    @ivar serverHeader: the value of the Server header of our responses.
    @ivar limits: the L{FailureLimits} counting failed authentications and
        refusing banned sources, or C{None}.
    """

    def __init__(
        self,
        digest: DigestAuthenticator,
        auth: Any,
        realm: str,
        serverHeader: str,
        md5OnlyAgents: Iterable[str] = (),
        limits: FailureLimits | None = None,
    ) -> None:
        self.digest = digest
        self.auth = auth
        self.realm = realm
        self.serverHeader = serverHeader
        self.md5OnlyAgents = tuple(agent.lower() for agent in md5OnlyAgents if agent)
        # Numbers that authenticated with SHA-256 since the start: SHA-256
        # challenges alone from then on, and MD5 answers challenged again.
        self._strong: set[str] = set()
        self.limits = limits

    def authenticate(self, request: Request, kind: Kind, number: str, peer: Peer) -> Outcome | Deferred[Outcome]:
        """
        Authenticate C{request} as coming from the account C{number}.

        In order (RFC 3261 10.3: the challenge comes before judging the
        address-of-record): a source banned for failed authentications
        (altogether or for C{number}), 403 without a challenge; without
        credentials for our realm, a challenge; a number C{kind} does not
        accept, 404; credentials of another user, 403; credentials that
        cannot pass whatever the password (malformed, a nonce we did not
        mint or one used up), a new challenge, before any backend lookup;
        an unknown number or a wrong response, 403, and the nonce is burnt;
        no HA1 for the algorithm used, a new challenge; a stale nonce, a
        challenge with C{stale=true}; the backend failing, 503 with
        Retry-After. Unknown numbers, other users' credentials and wrong
        responses count as failures in L{limits}.

        @param kind: L{WWW} or L{PROXY}.
        @param number: the number the request claims (To or From user).
        @param peer: where the request came from, for the log.
        @return: the outcome, at once when no lookup was needed or the
            backend answered at once (a warm cache: no callback chain), else
            a Deferred firing with it. The Deferred never fails for the
            backend's sake.
        """
        limits = self.limits
        if limits is not None and limits.banned(peer.source[0], number):
            return self._reply(request, 403, BANNED)
        found = self._credentialsFor(request, kind)
        if found is None:
            return self.challenge(request, kind, number=number)
        params, header = found
        if kind.numbersOnly and (not number or not number.isdigit()):
            return self._reply(request, 404, "Not a number of this service")
        if params.get("username") != number:
            if limits is not None:
                limits.failed(peer.source[0], number)
            return self._reply(request, 403, kind.mismatch)
        payload = self.digest.precheck(params)
        if payload is None:
            return self.challenge(request, kind, number=number)
        try:
            d = self.auth.credentials(number)
        except Exception:
            return self.backendFailed(Failure(), request)
        if d.called and not isinstance(getattr(d, "result", None), Failure):
            return self._verify(d.result, request, kind, number, peer, params, header, payload)
        d.addCallback(self._verify, request, kind, number, peer, params, header, payload)
        d.addErrback(self.backendFailed, request)
        return d

    def challenge(self, request: Request, kind: Kind, stale: bool = False, number: str | None = None) -> Response:
        """
        The challenge answering C{request} (from the account C{number}):
        one per algorithm offered, but SHA-256 alone to a number that has
        authenticated with it, and MD5 alone to the agents of
        C{md5OnlyAgents}.
        """
        response = self._reply(request, kind.code)
        only = None
        if number is not None and number in self._strong:
            only = STRONG
        elif self.md5OnlyAgents:
            agent = (request.get("user-agent") or "").lower()
            if agent and any(name in agent for name in self.md5OnlyAgents):
                only = "MD5"
        for value in self.digest.challenges(stale=stale, only=only):
            response.add(kind.challengeHeader, value)
        return response

    def _credentialsFor(self, request: Request, kind: Kind) -> tuple[dict[str, str], str] | None:
        """
        The parsed credentials for our realm, and the header value they came
        from; credentials for other realms are not ours to judge (RFC 3261
        22.3).
        """
        for value in request.getAll(kind.credentialsHeader):
            params = parseDigest(value)
            if params is not None and params.get("realm") == self.realm:
                return params, value
        return None

    def _verify(
        self,
        credentials: Credentials | None,
        request: Request,
        kind: Kind,
        number: str,
        peer: Peer,
        params: dict[str, str],
        header: str,
        payload: bytes,
    ) -> Outcome:
        if credentials is None:
            # Not logged: an attack makes thousands (a ban logs one line).
            return self._failed(request, number, peer, params)
        algorithm = algorithmOf(params)
        if algorithm != STRONG and number in self._strong:
            # No way back to MD5 for a number that proved it does SHA-256.
            return self.challenge(request, kind, number=number)
        ha1 = credentials.ha1.get(algorithm) if algorithm else None
        if ha1 is None or credentials.realm != self.realm:
            # Nothing to check the response with: perhaps another algorithm.
            return self.challenge(request, kind, number=number)
        verdict = self.digest.verify(params, request.method, ha1, request.body, payload)
        if verdict is Verdict.STALE:
            return self.challenge(request, kind, stale=True, number=number)
        if verdict is not Verdict.OK:
            return self._failed(request, number, peer, params)
        if algorithm == STRONG and number not in self._strong and len(self._strong) < MAX_STRONG:
            self._strong.add(number)
        if self.limits is not None:
            self.limits.succeeded(peer.source[0], number)
        # Proven: its source is no spoofed victim, answers need no budget.
        request.size = 0
        return Authenticated(credentials, header)

    def _failed(self, request: Request, number: str, peer: Peer, params: dict[str, str]) -> Response:
        """A wrong guess: its nonce is burnt and the failure counted."""
        self.digest.burn(params)
        if self.limits is not None:
            self.limits.failed(peer.source[0], number)
        return self._reply(request, 403, "Bad credentials")

    def backendFailed(self, failure: Failure, request: Request) -> Response:
        if failure.check(BackendUnavailable):
            log.warn("Authentication backend unavailable: {error}", error=failure.getErrorMessage())
        else:
            log.failure("Authentication backend failed", failure)
        response = self._reply(request, 503, "Authentication service unavailable")
        response.add("retry-after", str(RETRY_AFTER_UNAVAILABLE))
        return response

    def _reply(self, request: Request, code: int, reason: str = "") -> Response:
        return localResponse(request, code, reason, self.serverHeader)
