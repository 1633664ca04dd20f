"""
The registrar (RFC 3261 section 10.3), with digest authentication, NAT
awareness (the binding remembers where the REGISTER really came from),
Path (RFC 3327), +sip.instance/reg-id (RFC 5626) and conflict detection.

One account on two agents at once is a conflict (SPEC, guide 5.2). Two
bindings belong to the same agent when they share a +sip.instance, or
(lacking instances) a Call-ID or a Contact URI; anything else registering
the number is another agent. What then happens is the configured
C{registrar.conflict} policy:

  - C{reject} (default): the newcomer gets 403 and the registered agent
    keeps the number until its binding is removed or expires;
  - C{replace}: the newcomer's bindings replace the other agent's;
  - C{allow}: both are kept and calls fork (plain RFC 3261).

Every conflict is logged and raised as a C{conflict} event, whatever the
policy.

The digest C{uri} parameter is not required to equal the Request-URI:
SIP ALGs in routers (the reason the service also listens on 5070) rewrite
Request-URIs, and a captured Authorization cannot be replayed anyway
(nonce-count tracking in L{DigestAuthenticator}).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from aetasip.auth.step import WWW, Authentication, Outcome
from aetasip.config import ConfigError, Key, choice, declare, declareCheck, integer
from aetasip.location import Binding, LocationService
from aetasip.sip.errors import ParseError
from aetasip.sip.headers import NameAddr, parseDeltaSeconds
from aetasip.sip.message import Request, Response
from aetasip.sip.responses import localResponse
from aetasip.sip.transaction import Peer
from aetasip.sip.uri import parseURI

log = Logger()


declare(
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
)


def _expiryBounds(values: Mapping[str, Any]) -> None:
    if values["registrar.min_expires"] > values["registrar.max_expires"]:
        raise ConfigError(
            "registrar.min_expires",
            values["registrar.min_expires"],
            f"at most registrar.max_expires ({values['registrar.max_expires']})",
        )


declareCheck(_expiryBounds)


SUPPORTED = ("path",)

STORE_RETRY_AFTER = 5
"""Seconds an agent is told to wait when its registration could not be stored (a cluster's store down)."""


_lastDate: tuple[int, str] = (-1, "")


def httpDate(now: float) -> str:
    """The RFC 1123 date of C{now}, as in the Date header; made once a second."""
    global _lastDate
    second = int(now)
    if _lastDate[0] != second:
        _lastDate = (second, time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(second)))
    return _lastDate[1]


class Registrar:
    """
    Answers REGISTER requests.

    @param config: the service L{aetasip.config.Config}.
    @param location: the L{LocationService}.
    @param authentication: the L{Authentication} step (shared with the proxy).
    @param isLocalDomain: callable telling whether a host is one of ours.
    @param serverHeader: value of the Server header.
    """

    def __init__(
        self,
        config: Any,
        location: LocationService,
        authentication: Authentication,
        isLocalDomain: Any,
        serverHeader: str = "aetasip",
    ) -> None:
        self.authentication = authentication
        self.location = location
        self.isLocalDomain = isLocalDomain
        self.serverHeader = serverHeader
        self.minExpires = config["registrar.min_expires"]
        self.maxExpires = config["registrar.max_expires"]
        self.defaultExpires = config["registrar.default_expires"]
        self.maxContacts = config["registrar.max_contacts"]
        self.conflictPolicy = config["registrar.conflict"]
        self.clock = location.clock

    @property
    def auth(self) -> Any:
        """The L{IAuthBackend} the registrar's credentials come from."""
        return self.authentication.auth

    # -- entry ------------------------------------------------------------

    def handle(self, request: Request, peer: Peer) -> Response | Deferred[Response]:
        """
        Answer C{request}, a REGISTER received from C{peer}.

        @return: the response, or a Deferred firing with it when the
            credentials lookup is asynchronous.
        """
        try:
            uri = request.requestURI
            to = request.toAddr
        except ParseError as e:
            return self._reply(request, 400, e.reason)
        if uri.scheme not in ("sip", "sips"):
            return self._reply(request, 416)
        if to.uri.scheme not in ("sip", "sips"):
            # RFC 3261 10.3: the address-of-record must be a SIP or SIPS URI.
            return self._reply(request, 400, "To must be a sip or sips URI")
        if not self.isLocalDomain(uri.host) or not self.isLocalDomain(to.uri.host):
            return self._reply(request, 403, "Domain not served here")
        unsupported = [o for o in _options(request, "require") if o not in SUPPORTED]
        if unsupported:
            response = self._reply(request, 420)
            response.add("unsupported", ", ".join(unsupported))
            return response
        # RFC 3261 10.3: authenticate (step 3) before judging the AOR (step 5).
        number = to.uri.user or ""
        outcome = self.authentication.authenticate(request, WWW, number, peer)
        if isinstance(outcome, Deferred):
            return outcome.addCallback(self._authenticated, request, peer, number)
        return self._authenticated(outcome, request, peer, number)

    def _authenticated(
        self, outcome: Outcome, request: Request, peer: Peer, number: str
    ) -> Response | Deferred[Response]:
        if isinstance(outcome, Response):
            return outcome
        try:
            response = self._register(request, peer, number)
        except ParseError as e:
            return self._reply(request, 400, e.reason)
        if self.location.writeThrough and response.code == 200:
            return self._written(request, response)
        return response

    def _written(self, request: Request, response: Response) -> Deferred[Response]:
        """
        C{response} once the bindings it reports are in the store (a
        cluster: the other servers have them if this one dies now); 500
        with Retry-After if the store cannot take them (they stay in
        memory and are written when it can).
        """

        def failed(failure: Any) -> Response:
            log.warn(
                "REGISTER {callID} answered 500: its bindings could not be written to the store ({reason})",
                callID=request.callID,
                reason=failure.getErrorMessage(),
            )
            refused = self._reply(request, 500, "Registration not stored")
            refused.add("retry-after", str(STORE_RETRY_AFTER))
            return refused

        return self.location.writeNow().addCallbacks(lambda _: response, failed)

    # -- bindings ---------------------------------------------------------

    def _register(self, request: Request, peer: Peer, number: str) -> Response:
        now = self.clock.seconds()
        callID = request.callID
        cseq, _ = request.cseq
        contactValues = request.getAll("contact")
        expiresHeader = request.get("expires")
        defaultExpires = (
            parseDeltaSeconds(expiresHeader, self.defaultExpires) if expiresHeader is not None else self.defaultExpires
        )
        current = self.location.lookup(number)
        if contactValues == ["*"]:
            if defaultExpires != 0:
                return self._reply(request, 400, "Wildcard Contact requires Expires: 0")
            for binding in current:
                if binding.callID != callID or binding.cseq < cseq:
                    self.location.remove(binding)
            return self._ok(request, number, now)
        if "*" in contactValues:
            return self._reply(request, 400, "Wildcard Contact must be alone")

        # Check every contact before changing anything: a REGISTER is atomic.
        changes: list[tuple[NameAddr, str, int, Binding | None]] = []
        for contact in request.contacts:  # parsed and checked by parse()
            if contact.uri.scheme not in ("sip", "sips"):
                raise ParseError("Contact must be a sip or sips URI")
            expiresParam = contact.params.get("expires")
            expires = parseDeltaSeconds(expiresParam, defaultExpires) if expiresParam is not None else defaultExpires
            if 0 < expires < self.minExpires:
                response = self._reply(request, 423)
                response.add("min-expires", str(self.minExpires))
                return response
            text = str(contact.uri)
            existing = _sameBinding(current, contact, text)
            if existing is not None and existing.callID == callID and existing.cseq >= cseq:
                return self._reply(request, 500, "Out of order REGISTER")
            changes.append((contact, text, min(expires, self.maxExpires), existing))

        added = [c for c, _, e, existing in changes if e and existing is None]
        if added:
            others = [b for b in current if not _sameAgent(b, callID, [c for c, _, _, _ in changes])]
            if others:
                refused = self._conflict(request, peer, number, added[0], others, now)
                if refused is not None:
                    return refused
                current = self.location.lookup(number)
            if len(current) + len(added) > self.maxContacts:
                return self._reply(request, 403, "Too many contacts for this number")

        path = request.getAll("path") if "path" in _options(request, "supported") else []
        userAgent = request.get("user-agent", "") or ""
        for contact, text, expires, existing in changes:
            if expires == 0:
                if existing is not None:
                    self.location.remove(existing)
                continue
            if existing is not None:
                existing.expiresAt = now + expires
                existing.callID, existing.cseq = callID, cseq
                route = (existing.transport, existing.source, existing.local, existing.path)
                self._fillSource(existing, peer, path, userAgent, contact)
                # A new NAT source (or transport) is where the agent is now
                # reached: written at once, not only after the next restart.
                moved = route != (existing.transport, existing.source, existing.local, existing.path)
                self.location.refresh(existing, text, moved)
            else:
                binding = Binding(
                    aor=number,
                    contact=text,
                    expiresAt=now + expires,
                    callID=callID,
                    cseq=cseq,
                    transport=peer.transport,
                    source=peer.source,
                    local=peer.local,
                    registeredAt=now,
                )
                self._fillSource(binding, peer, path, userAgent, contact)
                self.location.add(binding)
        response = self._ok(request, number, now)
        if path:
            for value in path:
                response.add("path", value)
        return response

    def _fillSource(self, binding: Binding, peer: Peer, path: list[str], userAgent: str, contact: NameAddr) -> None:
        binding.transport = peer.transport
        binding.source = peer.source
        binding.local = peer.local
        binding.connection = peer.connection
        if peer.connection is not None:
            # A connection that carries a binding may idle longer (see
            # aetasip.transport.SIPStreamProtocol).
            markBound = getattr(peer.connection, "markBound", None)
            if markBound is not None:
                markBound()
        binding.path = path
        binding.userAgent = userAgent
        binding.instance = _instance(contact)
        regID = contact.params.get("reg-id")
        binding.regID = int(regID) if regID and regID.isdigit() else None
        q = contact.params.get("q")
        try:
            binding.q = float(q) if q else None
        except ValueError:
            binding.q = None

    def _conflict(
        self, request: Request, peer: Peer, number: str, contact: NameAddr, others: list[Binding], now: float
    ) -> Response | None:
        newcomer = Binding(
            aor=number,
            contact=str(contact.uri),
            expiresAt=now,
            callID=request.callID,
            cseq=request.cseq[0],
            transport=peer.transport,
            source=peer.source,
            local=peer.local,
            userAgent=request.get("user-agent", "") or "",
            registeredAt=now,
        )
        other = others[0]
        outcome = {"reject": "rejected", "replace": "replaced", "allow": "allowed"}[self.conflictPolicy]
        log.warn(
            "Number {number} registered by two agents: {newSource} ({newUA}) while {oldSource} ({oldUA}) holds it: {outcome}",
            number=number,
            newSource=f"{peer.transport}:{peer.source[0]}:{peer.source[1]}",
            newUA=newcomer.userAgent,
            oldSource=f"{other.transport}:{other.source[0]}:{other.source[1]}",
            oldUA=other.userAgent,
            outcome=outcome,
        )
        self.location.emit("conflict", newcomer, other, outcome)
        if self.conflictPolicy == "reject":
            return self._reply(request, 403, "Number already registered by another agent")
        if self.conflictPolicy == "replace":
            for binding in others:
                self.location.remove(binding)
        return None

    # -- responses --------------------------------------------------------

    def _ok(self, request: Request, number: str, now: float) -> Response:
        response = self._reply(request, 200)
        for binding in self.location.lookup(number):
            remaining = max(int(binding.expiresAt - now + 0.5), 1)
            value = f"<{binding.contact}>;expires={remaining}"
            if binding.instance is not None:
                value += f';+sip.instance="{binding.instance}"'
            if binding.regID is not None:
                value += f";reg-id={binding.regID}"
            response.add("contact", value)
        response.add("date", httpDate(now))
        return response

    def _reply(self, request: Request, code: int, reason: str = "") -> Response:
        response = localResponse(request, code, reason, self.serverHeader)
        if code in (200, 420):
            response.add("supported", ", ".join(SUPPORTED))
        return response


def _options(request: Request, name: str) -> list[str]:
    return [o.lower() for o in request.getAll(name)]


def _instance(contact: NameAddr) -> str | None:
    value = contact.params.get("+sip.instance")
    if value is None:
        return None
    return value.strip('"').strip("<>") if value else None


def _sameBinding(bindings: list[Binding], contact: NameAddr, text: str) -> Binding | None:
    """
    The binding C{contact} updates: the same instance and reg-id (RFC
    5626), or else the same Contact URI (RFC 3261 10.3 step 7).
    """
    instance = _instance(contact)
    regID = contact.params.get("reg-id")
    if instance is not None:
        for binding in bindings:
            if binding.instance == instance and str(binding.regID) == str(regID):
                return binding
    uri = contact.uri
    for binding in bindings:
        if binding.contact == text or _sameURI(binding.contact, uri):
            return binding
    return None


def _sameURI(text: str, uri: Any) -> bool:
    try:
        return bool(parseURI(text) == uri)
    except ParseError:
        return False


def _sameAgent(binding: Binding, callID: str, contacts: list[NameAddr]) -> bool:
    for contact in contacts:
        instance = _instance(contact)
        if instance is not None and binding.instance is not None:
            if instance == binding.instance:
                return True
            continue
        if binding.callID == callID or _sameURI(binding.contact, contact.uri):
            return True
    return False
