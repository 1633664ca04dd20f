"""
What the test line's answering agent (L{aetasip.testline.agent}) works
with: its settings, the media port of a session, and the L{Session} it
keeps for each call from its INVITE to its end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import attrs
from twisted.internet.interfaces import IDelayedCall

from aetasip.sip.message import Request, Response
from aetasip.testline.media import Address, MediaSession

PROGRAMME = "programme"
ECHO = "echo"


class MediaPort(Protocol):
    """A UDP port of one session's media (L{aetasip.testline.service})."""

    port: int

    def send(self, datagram: bytes, address: Address) -> None: ...

    def close(self) -> None: ...


OpenMedia = Callable[[Callable[[bytes, Address], None]], MediaPort]
"""Opens a media port whose datagrams go to the given function."""


@attrs.frozen
class LineSettings:
    """
    The C{testline} section (L{aetasip.testline.settings}).

    @ivar lines: number -> L{PROGRAMME} or L{ECHO}.
    """

    lines: dict[str, str]
    ringTime: float = 1.0
    maxDuration: float = 600.0
    mediaTimeout: float = 10.0
    maxSessions: int = 20
    advertise: str = "127.0.0.1"
    serverHeader: str = "aetasip"
    programmeFile: str | None = None
    callsPerHour: int = 0


@attrs.define(eq=False)
class Session:
    """One call to a test line, from its INVITE to its end."""

    number: str
    kind: str
    invite: Request
    source: Address
    localTag: str
    answerSDP: bytes
    media: MediaSession
    port: MediaPort
    state: str = "ringing"  # ringing, answered (2xx sent), confirmed (ACKed), ended
    lastResponse: Response | None = None
    cseq: int = 0
    timers: dict[str, IDelayedCall] = attrs.Factory(dict)
    endCause: str = ""
    answeredAt: float | None = None
    # The SDP of the line in this session (RFC 3264 8: one o= session id, its
    # version raised with each change), and the offer it made and awaits the
    # answer to in an ACK (an INVITE or re-INVITE without SDP), if any.
    sdpSession: int = 0
    sdpVersion: int = 1
    lastSDP: bytes = b""
    offerPending: bool = False
    # The last re-INVITE's CSeq and 2xx (sent again for its retransmissions, until its ACK).
    reinviteCSeq: int = -1
    reinviteResponse: Response | None = None

    @property
    def callID(self) -> str:
        return self.invite.callID
