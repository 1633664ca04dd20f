"""
L{Operations}: what an operator sees and ends in the running service —
calls in progress, registrations, relay sessions, test-line sessions —
through the service's seams only: L{ICallControl} for calls, the location
service for bindings, the L{IRelay} nodes for relay sessions, the test
line's agent for its sessions. The admin API serves it (over TCP with a
token, and on the control socket for C{aetasip-admin}); nothing else
implements these operations.

Every result is JSON-ready data: times in UTC ISO 8601, addresses as
C{host:port}.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from typing import Any

import attrs
from twisted.logger import Logger

from aetasip.calls.call import Call, EndCause
from aetasip.interfaces import ICallControl
from aetasip.location import Binding
from aetasip.relay.stats import LegStats, RelayStats, StreamStats

log = Logger()


def isoTime(seconds: float | None) -> str | None:
    """POSIX seconds as UTC ISO 8601 (to the second, C{Z}); C{None} stays C{None}."""
    if seconds is None:
        return None
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def hostPort(address: tuple[str, int] | None) -> str | None:
    if address is None:
        return None
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def callJSON(call: Call) -> dict[str, Any]:
    """A call in progress as the API shows it."""
    relay = call.media.get("relay")
    relayed = isinstance(relay, dict) and any(relay.get("relayed", {}).values())
    return {
        "id": call.id,
        "callId": call.callID,
        "caller": call.caller,
        "callerKind": call.callerKind,
        "domain": call.domain,
        "callerSource": hostPort(call.callerLeg.source),
        "callerTransport": call.callerLeg.transport,
        "dialled": call.dialled,
        "resolved": list(call.resolved),
        "callee": call.callee,
        "state": call.state,
        "startedAt": isoTime(call.started),
        "ringingAt": isoTime(call.ringingAt),
        "answeredAt": isoTime(call.answeredAt),
        "duration": round(call.duration, 3),
        "relayNode": relay.get("node") if relayed and isinstance(relay, dict) else None,
        "recovered": call.recovered,
    }


def bindingJSON(binding: Binding, now: float) -> dict[str, Any]:
    """A registration as the API shows it."""
    return {
        "number": binding.aor,
        "contact": binding.contact,
        "source": hostPort(binding.source),
        "transport": binding.transport,
        "local": hostPort(binding.local),
        "userAgent": binding.userAgent,
        "instance": binding.instance,
        "registeredAt": isoTime(binding.registeredAt) if binding.registeredAt else None,
        "expiresAt": isoTime(binding.expiresAt),
        "expiresIn": max(0, round(binding.expiresAt - now)),
    }


def _streamJSON(stream: StreamStats) -> dict[str, Any]:
    values = attrs.asdict(stream)
    values["lastPacketAt"] = isoTime(stream.lastPacketAt)
    return values


def _legJSON(leg: LegStats) -> dict[str, Any]:
    return {
        "latched": hostPort(leg.latched),
        "received": _streamJSON(leg.received),
        "sent": _streamJSON(leg.sent),
        "dropped": leg.dropped,
    }


def relayStatsJSON(stats: RelayStats) -> dict[str, Any]:
    return {"node": stats.node, "caller": _legJSON(stats.caller), "callee": _legJSON(stats.callee)}


_RTPMAP = re.compile(rb"^a=rtpmap:[0-9]+ ([^\r\n]+)", re.MULTILINE)


def testLineJSON(session: Any) -> dict[str, Any]:
    """A test-line session (L{aetasip.testline.session.Session}) as the API shows it."""
    media = session.media
    codec = _RTPMAP.search(session.answerSDP)
    answeredAt = session.answeredAt
    return {
        "number": session.number,
        "kind": session.kind,
        "callId": session.callID,
        "caller": session.invite.fromAddr.uri.user or "",
        "state": session.state,
        "startedAt": isoTime(media.started),
        "answeredAt": isoTime(answeredAt),
        "duration": 0.0 if answeredAt is None else round(max(0.0, media.clock.seconds() - answeredAt), 3),
        "codec": codec.group(1).decode("ascii", "replace") if codec else None,
        "mediaTo": hostPort(media.remote),
        "latched": media.latched,
        "packetsSent": media.packetsSent,
        "packetsReceived": media.packetsReceived,
    }


class NodeUnavailable(Exception):
    """A relay node could not list its sessions; the message names it."""


class Operations:
    """
    @param calls: the service's L{ICallControl}.
    @param location: the location service (live bindings), or C{None}.
    @param relayNodes: the relay's L{IRelay} nodes by name, or C{None} when
        media is not relayed (C{calls.media_handler} is not C{relay}).
    @param testLine: returns the test line's agent while it runs, else C{None}.
    @param now: the clock.
    """

    def __init__(
        self,
        calls: ICallControl,
        location: Any,
        relayNodes: dict[str, Any] | None,
        testLine: Callable[[], Any],
        now: Callable[[], float],
    ) -> None:
        self.calls = calls
        self.location = location
        self.relayNodes = relayNodes
        self.testLine = testLine
        self.now = now

    # -- calls

    def activeCalls(self) -> list[dict[str, Any]]:
        return [callJSON(call) for call in self.calls.active()]

    def releaseCall(self, callID: str, detail: str = "released by the operator") -> list[dict[str, Any]]:
        """
        End every call in progress with this Call-ID: BYE to both parties
        of an answered call, a call being set up cancelled; end cause
        C{operator release}.

        @return: the calls released (empty: none had this Call-ID).
        """
        found = [call for call in self.calls.find(callID) if not call.ended]
        shown = [callJSON(call) for call in found]
        for call in found:
            self.calls.release(call, EndCause.OPERATOR_RELEASE, detail)
        return shown

    # -- registrations

    def bindings(self, number: str | None = None) -> list[dict[str, Any]]:
        """The current registrations (of C{number}), live from the location service."""
        if self.location is None:
            return []
        now = self.now()
        found = self.location.bindings() if number is None else self.location.lookup(number)
        return [bindingJSON(b, now) for b in sorted(found, key=lambda b: (b.aor, b.registeredAt))]

    def removeBinding(self, number: str, contact: str) -> dict[str, Any] | None:
        """
        Forget the registration of C{number} at C{contact} now (calls no
        longer reach it; it is deleted from the store within a second).

        @return: the binding removed, or C{None} when there was none.
        """
        if self.location is None:
            return None
        for binding in self.location.lookup(number):
            if binding.contact == contact:
                shown = bindingJSON(binding, self.now())
                self.location.remove(binding, "unregistered")
                return shown
        return None

    # -- relay sessions

    @property
    def relaying(self) -> bool:
        return self.relayNodes is not None

    async def relaySessions(self) -> list[dict[str, Any]]:
        """Every session of every relay node, with its statistics and its call."""
        sessions = []
        for name, node in (self.relayNodes or {}).items():
            try:
                listed = await node.sessions()
            except Exception as e:
                log.failure("Relay node {name} could not list its sessions", name=name)
                raise NodeUnavailable(f"relay node {name} does not answer: {e}") from None
            for callID, fromTag, stats in listed:
                call = self._callOf(callID, fromTag)
                shown = relayStatsJSON(stats)
                shown.update(node=name, callId=callID, fromTag=fromTag, call=None if call is None else callJSON(call))
                sessions.append(shown)
        return sessions

    async def releaseRelay(self, callID: str) -> list[dict[str, Any]]:
        """
        Release the relay sessions of this Call-ID: their calls are
        released (BYE to both parties; the call's end releases the ports);
        a session whose call is gone is deleted on its node.

        @return: the sessions released (empty: none had this Call-ID).
        """
        released = []
        for session in await self.relaySessions():
            if session["callId"] != callID:
                continue
            call = self._callOf(callID, session["fromTag"])
            if call is not None:
                self.calls.release(call, EndCause.OPERATOR_RELEASE, "relay session released by the operator")
            else:
                assert self.relayNodes is not None
                await self.relayNodes[session["node"]].delete(callID, session["fromTag"])
            released.append(session)
        return released

    def _callOf(self, callID: str, fromTag: str) -> Call | None:
        for call in self.calls.find(callID):
            if call.callerTag == fromTag and not call.ended:
                return call
        return None

    # -- test-line sessions

    @property
    def testLineRunning(self) -> bool:
        return self.testLine() is not None

    def testLineSessions(self) -> list[dict[str, Any]]:
        agent = self.testLine()
        if agent is None:
            return []
        return [testLineJSON(s) for s in sorted(agent.sessions.values(), key=lambda s: s.media.started)]

    def releaseTestLine(self, callID: str | None = None) -> list[dict[str, Any]]:
        """
        End the test-line sessions with this Call-ID (every one when
        C{None}): their calls are released through the calls' control (a
        BYE to the caller and to the line, end cause C{operator release});
        a session whose call the proxy does not know gets the line's own
        BYE.

        @return: the sessions released.
        """
        agent = self.testLine()
        if agent is None:
            return []
        released = []
        for session in list(agent.sessions.values()):
            if callID is not None and session.callID != callID:
                continue
            released.append(testLineJSON(session))
            calls = [c for c in self.calls.find(session.callID) if not c.ended]
            if calls:
                for call in calls:
                    self.calls.release(call, EndCause.OPERATOR_RELEASE, "test-line session released by the operator")
            else:
                agent.release(session, EndCause.OPERATOR_RELEASE)
        return released
