"""
Where the calls of an rtpengine relay node live: L{Placement} remembers,
per call (Call-ID and the caller's tag), the daemon of the node's pool
that has it and what the node told it (L{Session}), places a new call on
the next daemon up, and finds again a call this node does not remember
(set up through the other server of a cluster, or before a restart) by
asking the daemons in turn.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from aetasip.relay.errors import UnknownSession
from aetasip.relay.ng import NgError, NgProtocolError, Reply
from aetasip.relay.ngclient import Backend, NgPool, NgTimeout
from aetasip.relay.rtpenginestats import partnerOf

log = Logger()

MAX_SESSIONS = 200_000
"""Sessions remembered per node; past this the oldest are forgotten (rtpengine times them out)."""


@attrs.define(eq=False)
class Session:
    """What the node remembers of one call (C{callID}, C{fromTag})."""

    backend: Backend | None = None
    creating: list[Deferred[Backend]] | None = None
    calleeTags: dict[str, str] = attrs.Factory(dict)
    answered: str | None = None
    # By branch, the arguments of its last offer; the last offer/answer
    # pair of the answered branch, and when the daemon last heard of the call.
    offers: dict[str, dict[str, Any]] = attrs.Factory(dict)
    negotiated: tuple[dict[str, Any] | None, dict[str, Any]] | None = None
    signalledAt: float = 0.0


def viaBranch(branch: object) -> str:
    """The C{via-branch} of a branch (the handler's branch key, as text)."""
    return branch if isinstance(branch, str) else str(branch)


class Placement:
    """
    The calls of the relay node C{name} on the daemons of C{pool}.

    @ivar sessions: by C{(callID, fromTag)}, oldest first; at most
        L{MAX_SESSIONS} (past that the oldest are forgotten: rtpengine
        times them out).
    """

    def __init__(self, name: str, pool: NgPool) -> None:
        self.name = name
        self.pool = pool
        self.sessions: OrderedDict[tuple[str, str], Session] = OrderedDict()

    async def backendFor(
        self,
        key: tuple[str, str],
        command: str,
        arguments: dict[str, Any],
        located: Callable[[Session, str | None], None] | None = None,
    ) -> Reply:
        """
        C{command} to the daemon of the call, or (a new call) to the next
        one up. With C{located}, a call this node does not remember is
        first looked for on every daemon (L{locate}); C{located} is then
        given the session and the callee's tag rtpengine knows, if any,
        before the request leaves.
        """
        session = self.sessions.get(key)
        if session is not None and session.backend is None and session.creating is not None:
            # A fork of the same call is being placed: follow it there.
            waiting: Deferred[Backend] = Deferred()
            session.creating.append(waiting)
            await waiting
        if session is not None and session.backend is not None:
            return await self.pool.requestTo(session.backend, command, arguments)
        session = self.remember(key, Session(creating=[]))
        try:
            found = await self.locate(key) if located is not None else None
            if found is not None:
                assert located is not None
                backend, partner = found
                located(session, partner)
                reply = await self.pool.requestTo(backend, command, arguments)
            else:
                backend, reply = await self.pool.requestNew(command, arguments)
        except BaseException as e:
            waiters, session.creating = session.creating or [], None
            if self.sessions.get(key) is session:
                del self.sessions[key]
            for waiter in waiters:
                waiter.errback(e)
            raise
        session.backend = backend
        waiters, session.creating = session.creating or [], None
        for waiter in waiters:
            waiter.callback(backend)
        return reply

    async def adopt(self, key: tuple[str, str], command: str, arguments: dict[str, Any]) -> Reply:
        """
        C{command} for a call offered through another server (or before a
        restart): to each daemon up in order until one takes it, which
        this node then remembers for the call.

        @raise UnknownSession: no daemon has the call.
        """
        refusals = []
        for backend in [b for b in self.pool.backends if b.up]:
            try:
                reply = await self.pool.requestTo(backend, command, arguments)
            except (NgError, NgTimeout) as e:
                refusals.append(f"{backend.name}: {e}")
                continue  # "Unknown call-id": not there
            session = self.sessions.get(key)
            if session is None or session.backend is None:
                session = self.remember(key, Session(backend=backend))
            log.info(
                "relay node {node}: call {callID} adopted from rtpengine {backend}",
                node=self.name,
                callID=key[0],
                backend=backend.name,
            )
            return reply
        raise UnknownSession(
            f"relay node {self.name}: no rtpengine has call {key[0]!r} ({'; '.join(refusals) or 'none is up'})"
        )

    async def locate(self, key: tuple[str, str]) -> tuple[Backend, str | None] | None:
        """
        The daemon that has a call this node does not remember (a C{query}
        to each one up, in order) and the tag it knows in dialogue with
        the caller's; C{None} for a call no daemon has (a new one).
        """
        callID, fromTag = key
        for backend in [b for b in self.pool.backends if b.up]:
            try:
                reply = await self.pool.requestTo(backend, "query", {"call-id": callID, "from-tag": fromTag})
            except (NgError, NgTimeout, NgProtocolError):
                continue  # "Unknown call-id": not there
            log.info(
                "relay node {node}: call {callID} found on rtpengine {backend}",
                node=self.name,
                callID=callID,
                backend=backend.name,
            )
            return backend, partnerOf(reply.body, fromTag)
        return None

    def remember(self, key: tuple[str, str], session: Session) -> Session:
        """Remember C{session} for the call C{key}, forgetting the oldest past L{MAX_SESSIONS}."""
        self.sessions[key] = session
        while len(self.sessions) > MAX_SESSIONS:
            self.sessions.popitem(last=False)
        return session

    def backendsFor(self, session: Session | None) -> list[Backend]:
        """The daemon of C{session}; for a call not remembered, every daemon up."""
        if session is not None and session.backend is not None:
            return [session.backend]
        # Unknown here (placed before a restart): whichever daemon has it.
        return [b for b in self.pool.backends if b.up]

    def tags(self, key: tuple[str, str], session: Session | None) -> tuple[str, str | None]:
        """The caller's and (if known) the callee's tag of the call C{key}, as rtpengine names its sides."""
        calleeTag = None
        if session is not None:
            if session.answered is not None:
                calleeTag = session.calleeTags.get(session.answered)
            elif len(session.calleeTags) == 1:
                calleeTag = next(iter(session.calleeTags.values()))
        return key[1], calleeTag
