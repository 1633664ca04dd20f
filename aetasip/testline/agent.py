"""
The answering agent of the test line: a SIP user agent server (RFC 3261
sections 12-15) for the test numbers, reached through the proxy like a
registered agent. Sans-IO but for the clock: SIP datagrams come in
through L{LineAgent.datagramReceived} and go out through C{sendSIP};
media ports come from C{openMedia}.

A call rings for C{ringTime}, is answered with the first format of the
caller's offer the line can send (488 when none), streams the programme
(or echoes the caller's RTP), and ends with a BYE at the maximum
duration or when the caller's media stops.
"""

from __future__ import annotations

import collections
import ipaddress
import math
import os
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from aetasip.relay.sdp import SDPError
from aetasip.sip.client import newBranch
from aetasip.sip.message import ParseError, Request, Response
from aetasip.sip.parser import parse
from aetasip.sip.responses import makeResponse
from aetasip.testline import offer
from aetasip.testline.audiofile import FileProgramme, ProgrammeFileError
from aetasip.testline.codecs import Encoder
from aetasip.testline.media import Address, MediaSession
from aetasip.testline.programme import Programme
from aetasip.testline.session import PROGRAMME, LineSettings, OpenMedia, Session

log = Logger()

T1 = 0.5
T2 = 4.0
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS"


class LineAgent:
    """
    Answers the test lines' calls.

    @ivar sessions: the sessions in progress by (Call-ID, caller's tag).
    @ivar contact: our SIP C{host:port}, for Contact and Via.
    """

    def __init__(
        self,
        clock: IReactorTime,
        sendSIP: Callable[[bytes, Address], None],
        openMedia: OpenMedia,
        settings: LineSettings,
        contact: str,
    ) -> None:
        self.clock = clock
        self.sendSIP = sendSIP
        self.openMedia = openMedia
        self.settings = settings
        self.contact = contact
        self.sessions: dict[tuple[str, str], Session] = {}
        # When each caller's recent calls started (the last hour's), for callsPerHour.
        self._recent: dict[str, collections.deque[float]] = {}
        self._byes: dict[str, tuple[Session, IDelayedCall]] = {}

    # -- input --------------------------------------------------------------------

    def datagramReceived(self, data: bytes, source: Address) -> None:
        if not data.strip():
            return  # a keep-alive
        try:
            message = parse(data)
        except ParseError as e:
            request = getattr(e, "request", None)
            if request is not None:
                self._send(self._response(request, getattr(e, "status", 400), ""), source)
            return
        if isinstance(message, Response):
            self._responseReceived(message)
            return
        try:
            self._requestReceived(message, source)
        except Exception:
            log.failure("Test line: {method} from {source} failed", method=message.method, source=source)
            if message.method != "ACK":
                self._send(self._response(message, 500, ""), source)

    def _requestReceived(self, request: Request, source: Address) -> None:
        key = (request.callID, request.fromAddr.tag or "")
        session = self.sessions.get(key)
        method = request.method
        if method == "ACK":
            if session is not None and request.toAddr.tag == session.localTag:
                self._ack(session, request)
            return
        if method == "CANCEL":
            self._cancel(request, session, source)
            return
        if request.toAddr.tag is None and method == "INVITE":
            if session is not None:
                if session.lastResponse is not None and session.invite.topVia.branch == request.topVia.branch:
                    self._send(session.lastResponse, source)  # a retransmission
                else:
                    self._send(self._response(request, 482, "Loop Detected"), source)
                return
            self._invite(request, source)
            return
        if method == "OPTIONS":
            response = self._response(request, 200, "", session.localTag if session else None)
            response.add("allow", ALLOW)
            response.add("accept", "application/sdp")
            self._send(response, source)
            return
        if request.toAddr.tag is None:
            self._send(self._allowing(self._response(request, 405, "")), source)
            return
        if session is None or request.toAddr.tag != session.localTag or session.state == "ended":
            self._send(self._response(request, 481, ""), source)
            return
        if method == "BYE":
            self._send(self._response(request, 200, "", session.localTag), source)
            self._end(session, "caller hung up")
        elif method == "INVITE":
            self._reinvite(session, request, source)
        else:
            self._send(self._allowing(self._response(request, 405, "", session.localTag)), source)

    def _responseReceived(self, response: Response) -> None:
        branch = response.topVia.branch or ""
        pending = self._byes.pop(branch, None)
        if pending is not None and response.code >= 200:
            _, timer = pending
            if timer.active():
                timer.cancel()
        elif pending is not None:
            self._byes[branch] = pending  # a provisional response: wait for the final one

    # -- calls -------------------------------------------------------------------------

    def _invite(self, request: Request, source: Address) -> None:
        number = request.requestURI.user or ""
        kind = self.settings.lines.get(number)
        if kind is None:
            self._send(self._response(request, 404, ""), source)
            return
        choice = None
        if request.body:
            try:
                choice = offer.choose(request.body)
            except SDPError as e:
                self._send(self._response(request, 400, f"Bad SDP: {e}"), source)
                return
            except offer.NotAcceptable as e:
                response = self._response(request, 488, "")
                response.add("warning", f'304 aetasip "{e}"')
                self._send(response, source)
                return
        if sum(1 for s in self.sessions.values() if s.number == number) >= self.settings.maxSessions:
            self._send(self._response(request, 486, ""), source)
            return
        wait = self._overLimit(request.fromAddr.uri.user or "")
        if wait is not None:
            response = self._response(request, 486, "Too Many Test Calls")
            response.add("retry-after", str(wait))
            self._send(response, source)
            return
        tag = os.urandom(6).hex()
        encoder = programme = None
        if choice is not None:
            try:
                encoder, programme = self._media(kind, choice, None)
            except ProgrammeFileError as e:
                log.error("Test line {number}: {error}", number=number, error=str(e))
                self._send(self._response(request, 503, "Programme Unavailable"), source)
                return
        holder: list[Session] = []
        port = self.openMedia(lambda data, addr: holder[0].media.received(data, addr) if holder else None)
        media = MediaSession(
            self.clock,
            port.send,
            choice.remote if choice is not None else ("0.0.0.0", 0),
            choice.payloadType if choice is not None else 0,
            encoder,
            programme,
            self.settings.mediaTimeout,
            lambda: self._release(holder[0], "media timeout"),
            sending=choice is not None and choice.direction in ("sendrecv", "sendonly"),
            # Only to the caller's own host before its packets say where it is: an SDP address
            # elsewhere (a private one behind NAT, a third party's) gets nothing from us.
            sendBeforeLatch=choice is not None and _sameHost(choice.remote[0], _callerHost(request)),
        )
        session = Session(number, kind, request, source, tag, b"", media, port)
        session.sdpSession = int.from_bytes(os.urandom(4), "big")
        if choice is not None:
            session.answerSDP = self._sdp(
                session,
                lambda v: offer.answer(request.body, choice, self.settings.advertise, port.port, v, session.sdpSession),
            )
        else:
            # A late offer (RFC 3264, RFC 6337 2.1): the line offers in its 2xx, the answer comes in the ACK.
            session.answerSDP = self._sdp(
                session, lambda v: offer.makeOffer(self.settings.advertise, port.port, session.sdpSession, v)
            )
            session.offerPending = True
        holder.append(session)
        self.sessions[(request.callID, request.fromAddr.tag or "")] = session
        log.info(
            "Test line {number} ({kind}): call {callID} in {codec}",
            number=number,
            kind=kind,
            callID=request.callID,
            codec=choice.format.rtpmap() if choice is not None else "(its offer in the 2xx)",
        )
        self._reply(session, 180)
        session.timers["answer"] = self.clock.callLater(self.settings.ringTime, self._answer, session)

    def _overLimit(self, caller: str) -> int | None:
        """
        Count a call of C{caller}; or, when it made C{callsPerHour} in the
        last hour, the seconds until it may call again.
        """
        limit = self.settings.callsPerHour
        if not limit:
            return None
        now = self.clock.seconds()
        for who in list(self._recent):
            times = self._recent[who]
            while times and times[0] <= now - 3600:
                times.popleft()
            if not times:
                del self._recent[who]
        times = self._recent.setdefault(caller, collections.deque())
        if len(times) >= limit:
            return max(1, math.ceil(times[0] + 3600 - now))
        times.append(now)
        return None

    def _media(
        self, kind: str, choice: offer.Choice, current: MediaSession | None
    ) -> tuple[Encoder | None, Programme | FileProgramme | None]:
        """
        The encoder and programme of C{choice}: none for the echo line,
        those of C{current} when its format stays.

        @raise ProgrammeFileError: the programme file is gone.
        """
        if kind != PROGRAMME:
            return None, None
        if current is not None and current.encoder is not None and current.encoder.format == choice.format:
            return current.encoder, current.programme
        programme = self._programme(choice.format.sampleRate, choice.format.audioChannels)
        return Encoder(choice.format), programme

    def _sdp(self, session: Session, build: Callable[[int], bytes]) -> bytes:
        """
        C{build(version)}: the line's next SDP in C{session}, its version
        raised only when it differs from the last one sent (RFC 3264 8).
        """
        body = build(session.sdpVersion)
        if session.lastSDP and _withoutOrigin(body) != _withoutOrigin(session.lastSDP):
            session.sdpVersion += 1
            body = build(session.sdpVersion)
        session.lastSDP = body
        return body

    def _programme(self, rate: int, channels: int) -> Programme | FileProgramme:
        if self.settings.programmeFile is not None:
            return FileProgramme(self.settings.programmeFile, rate, channels)
        return Programme(rate, channels)

    def _answer(self, session: Session) -> None:
        session.timers.pop("answer", None)
        session.state = "answered"
        session.answeredAt = self.clock.seconds()
        self._reply(session, 200, session.answerSDP)
        assert session.lastResponse is not None
        self._retransmit(session, session.lastResponse, T1, 0.0)
        if not session.offerPending:
            session.media.start()  # else once the answer to its offer came, in the ACK
        if self.settings.maxDuration:
            session.timers["duration"] = self.clock.callLater(
                self.settings.maxDuration, self._release, session, "duration limit"
            )

    def _retransmit(
        self, session: Session, response: Response, interval: float, waited: float, name: str = "retransmit"
    ) -> None:
        """
        RFC 3261 13.3.1.4: a 2xx (of the INVITE, or of a re-INVITE: timer
        C{name}) again until its ACK; none after 64*T1: BYE.
        """
        if waited >= 64 * T1:
            session.timers.pop(name, None)
            self._release(session, "no ACK")
            return

        def again() -> None:
            self._send(response, session.source)
            self._retransmit(session, response, min(2 * interval, T2), waited + interval, name)

        session.timers[name] = self.clock.callLater(interval, again)

    def _ack(self, session: Session, request: Request) -> None:
        """The ACK of the 2xx of the INVITE, or of a re-INVITE; with the answer to the line's offer."""
        number = request.cseq[0]
        if session.state == "answered" and number == session.invite.cseq[0]:
            session.state = "confirmed"
            self._cancelTimer(session, "retransmit")
        elif session.reinviteResponse is not None and number == session.reinviteCSeq:
            session.reinviteResponse = None
            self._cancelTimer(session, "reinvite")
        else:
            return  # a retransmission, or an ACK of nothing we sent
        if not session.offerPending:
            return
        session.offerPending = False
        first = not session.media.running
        if not request.body:
            self._release(session, "no SDP answer in the ACK")
            return
        try:
            choice = offer.choose(request.body, known=offer.OFFERED_MAPS)
            self._change(session, choice, _callerHost(session.invite))
        except ProgrammeFileError as e:
            log.error("Test line {number}: {error}", number=session.number, error=str(e))
            self._release(session, "programme unavailable")
            return
        except (SDPError, offer.NotAcceptable) as e:
            log.info("Test line: the answer in the ACK of {callID} is refused: {error}", callID=session.callID, error=e)
            self._release(session, f"answer not acceptable: {e}")
            return
        if first:
            log.info(
                "Test line {number}: call {callID} in {codec} (late offer)",
                number=session.number,
                callID=session.callID,
                codec=choice.format.rtpmap(),
            )
            session.media.start()

    def _change(self, session: Session, choice: offer.Choice, callerHost: str | None) -> None:
        """The media of C{session} as the last offer/answer set it (see L{MediaSession.change})."""
        encoder, programme = self._media(session.kind, choice, session.media)
        session.media.change(
            choice.remote,
            choice.payloadType,
            encoder,
            programme,
            sending=choice.direction in ("sendrecv", "sendonly") and not _unspecified(choice.remote[0]),
            sendBeforeLatch=_sameHost(choice.remote[0], callerHost),
            heard=choice.direction in ("sendrecv", "recvonly"),
        )

    def _reinvite(self, session: Session, request: Request, source: Address) -> None:
        """
        A re-INVITE (RFC 3261 14.2, RFC 3264 8, RFC 6337): hold and
        resume (C{a=sendonly}, C{a=inactive}, C{c=0.0.0.0}), another
        format, a new address. Without SDP the line offers (every format,
        the one in use first) and the answer comes in the ACK. An offer it
        cannot take gets 488 and the session goes on as it was.
        """
        number = request.cseq[0]
        if number == session.reinviteCSeq and session.reinviteResponse is not None:
            self._send(session.reinviteResponse, source)  # a retransmission
            return
        if session.offerPending or session.reinviteResponse is not None:
            # An offer of ours (or the 2xx of the last re-INVITE) still awaits its ACK (RFC 3261 14.2).
            response = self._response(request, 491, "", session.localTag)
            self._send(response, source)
            return
        if request.body:
            try:
                choice = offer.choose(request.body)
                self._change(session, choice, _callerHost(request))
            except SDPError as e:
                self._send(self._response(request, 400, f"Bad SDP: {e}", session.localTag), source)
                return
            except offer.NotAcceptable as e:
                response = self._response(request, 488, "", session.localTag)
                response.add("warning", f'304 aetasip "{e}"')
                self._send(response, source)
                return
            except ProgrammeFileError:
                self._send(self._response(request, 503, "Programme Unavailable", session.localTag), source)
                return
            body = self._sdp(
                session,
                lambda v: offer.answer(
                    request.body, choice, self.settings.advertise, session.port.port, v, session.sdpSession
                ),
            )
        else:
            current = session.media.packetiser.payloadType
            body = self._sdp(
                session,
                lambda v: offer.makeOffer(self.settings.advertise, session.port.port, session.sdpSession, v, current),
            )
            session.offerPending = True
        response = self._response(request, 200, "", session.localTag)
        self._decorate(response, request)
        response.set("content-type", "application/sdp")
        response.body = body
        session.reinviteCSeq = number
        session.reinviteResponse = response
        self._send(response, source)
        self._retransmit(session, response, T1, 0.0, "reinvite")

    def _cancelTimer(self, session: Session, name: str) -> None:
        timer = session.timers.pop(name, None)
        if timer is not None and timer.active():
            timer.cancel()

    def _cancel(self, request: Request, session: Session | None, source: Address) -> None:
        if session is None or session.invite.topVia.branch != request.topVia.branch:
            self._send(self._response(request, 481, ""), source)
            return
        self._send(self._response(request, 200, "", session.localTag), source)
        if session.state == "ringing":
            self._reply(session, 487)
            self._end(session, "cancelled")

    # -- ending ---------------------------------------------------------------------------

    def release(self, session: Session, cause: str = "operator release") -> None:
        """End C{session} from our side: a BYE once answered, else 480."""
        self._release(session, cause)

    def _release(self, session: Session, cause: str) -> None:
        if session.state == "ended":
            return
        session.endCause = cause
        if session.state == "ringing":
            self._reply(session, 480)
        else:
            self._sendBye(session)
        self._end(session, cause)

    def _sendBye(self, session: Session) -> None:
        invite = session.invite
        session.cseq += 1
        branch = newBranch()
        contact = invite.contacts[0].uri if invite.contacts else invite.fromAddr.uri
        bye = Request("BYE", str(contact))
        bye.add("via", f"SIP/2.0/UDP {self.contact};branch={branch};rport")
        for route in invite.getAll("record-route"):
            bye.add("route", route)
        bye.add("max-forwards", "70")
        bye.add("from", f"{invite.get('to')};tag={session.localTag}")
        bye.add("to", invite.get("from") or "")
        bye.add("call-id", invite.callID)
        bye.add("cseq", f"{session.cseq} BYE")
        bye.add("reason", f'SIP;cause=200;text="{session.endCause or "test line"}"')
        bye.add("user-agent", self.settings.serverHeader)
        bye.add("content-length", "0")
        data = bye.toBytes()

        def again(interval: float, waited: float) -> None:
            if waited >= 64 * T1:
                self._byes.pop(branch, None)
                return
            self.sendSIP(data, session.source)
            self._byes[branch] = (
                session,
                self.clock.callLater(interval, again, min(2 * interval, T2), waited + interval),
            )

        again(T1, 0.0)

    def _end(self, session: Session, cause: str) -> None:
        if session.state == "ended":
            return
        session.endCause = session.endCause or cause
        session.state = "ended"
        for timer in session.timers.values():
            if timer.active():
                timer.cancel()
        session.timers.clear()
        session.media.stop()
        if isinstance(session.media.programme, FileProgramme):
            session.media.programme.close()
        session.port.close()
        self.sessions.pop((session.callID, session.invite.fromAddr.tag or ""), None)
        log.info(
            "Test line {number}: call {callID} ended ({cause}), {sent} packets sent, {received} received",
            number=session.number,
            callID=session.callID,
            cause=cause,
            sent=session.media.packetsSent,
            received=session.media.packetsReceived,
        )

    def stop(self) -> None:
        """The service stops: every session gets its BYE (or 480) now."""
        for session in list(self.sessions.values()):
            self._release(session, "server shutdown")
        for _, timer in self._byes.values():
            if timer.active():
                timer.cancel()
        self._byes.clear()

    # -- messages -------------------------------------------------------------------------

    def _reply(self, session: Session, code: int, body: bytes = b"") -> None:
        response = self._response(session.invite, code, "", session.localTag)
        if 100 < code < 300:
            self._decorate(response, session.invite)
        if body:
            response.set("content-type", "application/sdp")
            response.body = body
        session.lastResponse = response
        self._send(response, session.source)

    def _decorate(self, response: Response, request: Request) -> None:
        for route in request.getAll("record-route"):
            response.add("record-route", route)
        number = request.requestURI.user or ""
        response.add("contact", f"<sip:{number}@{self.contact}>")
        response.add("allow", ALLOW)

    def _response(self, request: Request, code: int, reason: str, tag: str | None = None) -> Response:
        if tag is None and request.toAddr.tag is None:
            tag = os.urandom(6).hex()
        response = makeResponse(request, code, reason, toTag=tag)
        response.add("server", self.settings.serverHeader)
        return response

    def _allowing(self, response: Response) -> Response:
        response.add("allow", ALLOW)
        return response

    def _send(self, response: Response, destination: Address) -> None:
        if not response.has("content-length"):
            response.set("content-length", str(len(response.body)))
        self.sendSIP(response.toBytes(), destination)


def _callerHost(request: Request) -> str | None:
    """
    Where the caller's signalling came from: its Via, below the proxy's,
    with the C{received} address the proxy noted (RFC 3261 18.2.1).
    """
    vias = request.vias
    if len(vias) < 2:
        return None
    via = vias[1]
    received = via.params.get("received")
    return received if received else via.host.strip("[]")


def _withoutOrigin(body: bytes) -> bytes:
    """An SDP without its o= line: what says whether it changed."""
    return b"\n".join(line for line in body.splitlines() if not line.startswith(b"o="))


def _unspecified(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_unspecified
    except ValueError:
        return False


def _sameHost(a: str, b: str | None) -> bool:
    if b is None:
        return False
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


__all__ = ["LineAgent"]
