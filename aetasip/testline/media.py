"""
The media of one test line session, sans-IO but for the clock: what it
sends comes out through a C{send(datagram, address)} function, what it
receives comes in through L{MediaSession.received}, and time from an
injected L{IReactorTime} (a L{Clock} in tests).

Symmetric RTP: packets go to the address the SDP gave until the first
RTP packet from the caller arrives, then to where its packets come from
(the public side of a NAT, the relay's port).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from aetasip.testline import rtp
from aetasip.testline.audiofile import FileProgramme
from aetasip.testline.codecs import Encoder
from aetasip.testline.programme import Programme

log = Logger()

Address = tuple[str, int]
Send = Callable[[bytes, Address], None]

MAX_CATCH_UP_MS = 500
"""Audio sent at most in one tick after the reactor was late."""


class MediaSession:
    """
    One session's RTP: the programme sent every packet time, or the
    caller's packets returned (the echo line).

    @ivar remote: where packets go now.
    @ivar latched: whether C{remote} came from the caller's packets.
    @ivar lastHeard: when the caller's last packet (RTP or RTCP) came.
    @ivar packetsSent: RTP packets sent.
    @ivar packetsReceived: RTP packets received.
    @ivar sendBeforeLatch: whether the programme goes to the SDP's address
        before the caller's first packet; if not, it starts (in time, as
        if it had been playing) when that packet arrives.
    @param onTimeout: called once when nothing came for C{timeout}
        seconds (0: never).
    """

    def __init__(
        self,
        clock: IReactorTime,
        send: Send,
        remote: Address,
        payloadType: int,
        encoder: Encoder | None,
        programme: Programme | FileProgramme | None,
        timeout: float,
        onTimeout: Callable[[], None],
        sending: bool = True,
        sendBeforeLatch: bool = True,
    ) -> None:
        self.clock = clock
        self.send = send
        self.remote = remote
        self.latched = False
        self.encoder = encoder
        self.programme = programme
        self.timeout = timeout
        # Whether the caller sends (its SDP is sendrecv or sendonly): a call it
        # holds with inactive or recvonly sends nothing, and is no silent call.
        self.heard = True
        self.onTimeout = onTimeout
        self.sending = sending
        self.sendBeforeLatch = sendBeforeLatch
        self.packetiser = rtp.Packetiser(payloadType)
        self._advertised = remote
        self.started = self.lastHeard = clock.seconds()
        self.packetsSent = self.packetsReceived = 0
        self._slots = 0  # packet times elapsed since the start, sent or skipped
        self._loop: LoopingCall | None = None
        self._timedOut = False

    @property
    def ptime(self) -> int:
        """Milliseconds between packets (the echo line checks for silence every 20 ms)."""
        return self.encoder.format.ptime if self.encoder is not None else 20

    @property
    def echo(self) -> bool:
        return self.encoder is None

    def start(self) -> None:
        """Start sending (the call was answered) and watching for silence."""
        self.started = self.lastHeard = self.clock.seconds()
        self._slots = 0
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self.clock
        self._loop.start(self.ptime / 1000, now=True)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    @property
    def running(self) -> bool:
        return self._loop is not None

    def change(
        self,
        remote: Address,
        payloadType: int,
        encoder: Encoder | None,
        programme: Programme | FileProgramme | None,
        sending: bool,
        sendBeforeLatch: bool,
        heard: bool = True,
    ) -> None:
        """
        A new offer/answer (a re-INVITE, the answer to a late offer) set
        the session's media again: where it goes (a new address in the SDP
        is latched anew from its packets), in which format (same SSRC, the
        sequence numbers go on), whether the line sends (hold) and whether
        the caller does (C{heard}: the media timeout waits while it does
        not). The previous programme, if replaced, is closed.
        """
        self.heard = heard
        if remote != self._advertised:
            # The caller moved (or first said where): its address is learnt again.
            self.remote = remote
            self.latched = False
            self.sendBeforeLatch = sendBeforeLatch
        self._advertised = remote
        self.sending = sending
        same = (encoder.format if encoder else None) == (self.encoder.format if self.encoder else None)
        if same and payloadType == self.packetiser.payloadType:
            if programme is not self.programme and isinstance(programme, FileProgramme):
                programme.close()  # the one it has goes on
            return
        if isinstance(self.programme, FileProgramme) and self.programme is not programme:
            self.programme.close()
        self.packetiser.payloadType = payloadType
        self.packetiser.marker()
        self.encoder = encoder
        self.programme = programme
        if self._loop is not None:
            # Another packet time: the clock of the packets starts again.
            self.stop()
            self.started = self.clock.seconds()
            self._slots = 0
            self._loop = LoopingCall(self._tick)
            self._loop.clock = self.clock
            self._loop.start(self.ptime / 1000, now=True)

    def received(self, datagram: bytes, source: Address) -> None:
        """A datagram on the session's port."""
        if rtp.isRTCP(datagram):
            self.lastHeard = self.clock.seconds()
            return
        try:
            rtp.parse(datagram)
        except rtp.NotRTP:
            return  # not media: neither latched on nor counted as alive
        self.lastHeard = self.clock.seconds()
        self.packetsReceived += 1
        if source != self.remote:
            if self.latched:
                log.info("Test line media moved from {old} to {new}", old=self.remote, new=source)
            self.remote = source
        self.latched = True
        if self.echo and self.sending:
            # The caller's packet back, its numbering kept (one stream, one SSRC) but under
            # our SSRC: its own coming back would be a collision (RFC 3550 8.2).
            self.send(_withSSRC(datagram, self.packetiser.ssrc), source)
            self.packetsSent += 1

    def _tick(self) -> None:
        now = self.clock.seconds()
        if not self.heard:
            self.lastHeard = now  # on hold: the caller said it sends nothing
        elif self.timeout and now - self.lastHeard >= self.timeout and not self._timedOut:
            self._timedOut = True
            self.stop()
            self.onTimeout()
            return
        if self.echo or not self.sending:
            return
        assert self.encoder is not None and self.programme is not None
        due = int((now - self.started) * 1000 / self.ptime) + 1
        late = due - self._slots
        catchUp = MAX_CATCH_UP_MS // self.ptime
        if late > catchUp:
            # The reactor stalled: skip that audio, keep the timestamps true to time.
            skipped = late - catchUp
            self.programme.read(skipped * self.encoder.framesPerPacket)
            self.packetiser.timestamp = (self.packetiser.timestamp + skipped * self.encoder.timestampStep) & 0xFFFFFFFF
            self._slots += skipped
        if not self.latched and not self.sendBeforeLatch:
            # Not yet: the programme runs on unheard, so it starts in time once latched.
            skipped = due - self._slots
            self.programme.read(skipped * self.encoder.framesPerPacket)
            self.packetiser.timestamp = (self.packetiser.timestamp + skipped * self.encoder.timestampStep) & 0xFFFFFFFF
            self._slots = due
            return
        while self._slots < due:
            payload = self.encoder.encode(self.programme.read(self.encoder.framesPerPacket))
            self._slots += 1
            if not payload:
                self.packetiser.timestamp = (self.packetiser.timestamp + self.encoder.timestampStep) & 0xFFFFFFFF
                continue
            self.send(self.packetiser.packet(payload, self.encoder.timestampStep), self.remote)
            self.packetsSent += 1


def _withSSRC(datagram: bytes, ssrc: int) -> bytes:
    return datagram[:8] + ssrc.to_bytes(4, "big") + datagram[12:]
