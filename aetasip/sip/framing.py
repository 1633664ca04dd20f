"""
Framing of SIP messages on byte streams (TCP, TLS) and recognition of
keep-alives, sans-IO.

On a stream, a message ends after its header section (up to the first empty
line) and exactly C{Content-Length} bytes of body (RFC 3261 18.3). Between
messages, RFC 5626 3.5.1 keep-alives travel: a double CRLF "ping", which is
answered with a single CRLF "pong", and a single CRLF "pong", which is
ignored. RFC 3261 7.5 also has receivers ignore CRLFs before a start-line;
those come out as pings and pongs too, and answering them is harmless.

L{StreamFramer.feed} returns frames, each one of:
  - L{Message}: the bytes of one complete message;
  - L{Ping}: answer it with C{b"\\r\\n"};
  - L{Pong}: nothing to do (it may refresh a liveness timer);
  - L{FramingError}: always the last frame; the stream cannot be resynchronised,
    so answer 400 if possible and close the connection.

The empty line ending a header section and keep-alives must be made of
CRLFs, as RFC 3261 7 requires of senders.
"""

from __future__ import annotations

import re
from typing import TypeAlias

import attrs

__all__ = ["PING", "PONG", "Frame", "FramingError", "Message", "Ping", "Pong", "StreamFramer", "isKeepAlive"]


@attrs.frozen
class Message:
    """
    A complete SIP message: header section, empty line and body.

    @ivar data: its bytes, exactly as received.
    """

    data: bytes


@attrs.frozen
class Ping:
    """
    A CRLFCRLF keep-alive between messages; answer with one CRLF.
    """


@attrs.frozen
class Pong:
    """
    A lone CRLF between messages: the answer to a ping, or padding.
    """


@attrs.frozen
class FramingError:
    """
    The stream cannot be framed; nothing more will be read from it.

    @ivar reason: what was wrong, for the log and a 400 reason phrase.
    """

    reason: str


Frame: TypeAlias = Message | Ping | Pong | FramingError

PING = Ping()
PONG = Pong()

# Content-Length, or its compact form "l", at the start of a header line
# (never the start-line: no line end comes before it). A line may end with
# a bare LF here, as the message parser tolerates that too and must see the
# same headers; a value may be folded onto continuation lines.
_CONTENT_LENGTH = re.compile(rb"\n(?:content-length|l)[ \t]*:((?:[^\r\n]|\r?\n[ \t])*)", re.IGNORECASE)

# More digits than this cannot fit any configurable message size.
_MAX_LENGTH_DIGITS = 10


class StreamFramer:
    """
    Splits the bytes of one SIP stream connection into frames.

    Data may arrive in pieces of any size: the search for the end of the
    header section resumes where it stopped, so feeding a message byte by
    byte stays linear.

    @ivar maxMessageSize: the largest message (header section and body)
        accepted, in bytes.
    @ivar error: the L{FramingError} that ended the stream, or C{None}.
    """

    def __init__(self, maxMessageSize: int = 65535) -> None:
        self.maxMessageSize = maxMessageSize
        self.error: FramingError | None = None
        self._buffer = bytearray()
        # Offsets relative to the start of the buffer, which is always the
        # start of the next frame: where to resume searching for the empty
        # line, and the end of the message once its header section is read.
        self._searchFrom = 0
        self._messageEnd = -1

    @property
    def pending(self) -> int:
        """Bytes of an unfinished message waiting for the rest."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame]:
        """
        Add bytes received on the stream.

        @return: the frames completed by these bytes, in order. After a
            L{FramingError} (the last frame of its list) every later call
            returns an empty list.
        """
        if self.error is not None:
            return []
        buffer = self._buffer
        # The common case is a chunk holding whole messages: parse it in
        # place rather than copy it into the buffer first.
        buf: bytes | bytearray
        if buffer:
            buffer += data
            buf = buffer
        else:
            buf = data
        end = len(buf)
        frames: list[Frame] = []
        pos = 0
        searchFrom = self._searchFrom
        messageEnd = self._messageEnd
        while pos < end:
            if messageEnd < 0:
                # A message never starts with CRLF, so CRLF here is a keep-alive.
                if buf[pos] == 13:  # CR
                    if end - pos < 4 and buf[pos:end] in (b"\r", b"\r\n", b"\r\n\r"):
                        break  # could still become a ping: wait
                    if buf.startswith(b"\r\n\r\n", pos):
                        frames.append(PING)
                        pos += 4
                        searchFrom = pos
                        continue
                    if buf.startswith(b"\r\n", pos):
                        frames.append(PONG)
                        pos += 2
                        searchFrom = pos
                        continue
                blank = buf.find(b"\r\n\r\n", max(searchFrom, pos))
                if blank < 0:
                    if end - pos > self.maxMessageSize:
                        return self._fail(frames, "header section too large")
                    # The empty line may straddle this chunk and the next.
                    searchFrom = max(pos, end - 3)
                    break
                bodyStart = blank + 4
                length = self._contentLength(buf, pos, blank)
                if isinstance(length, str):
                    return self._fail(frames, length)
                messageEnd = bodyStart + length
                if messageEnd - pos > self.maxMessageSize:
                    return self._fail(frames, "message too large")
            if messageEnd > end:
                break
            frames.append(Message(bytes(buf[pos:messageEnd])))
            pos = searchFrom = messageEnd
            messageEnd = -1
        if buf is buffer:
            del buffer[:pos]
        elif pos < end:
            buffer += memoryview(data)[pos:]
        self._searchFrom = max(0, searchFrom - pos)
        self._messageEnd = messageEnd - pos if messageEnd >= 0 else -1
        return frames

    def _contentLength(self, buf: bytes | bytearray, start: int, end: int) -> int | str:
        """
        The Content-Length of the header section in C{buf[start:end]}.

        @return: the length, or the reason it is unusable.
        """
        length = None
        for match in _CONTENT_LENGTH.finditer(buf, start, end):
            value = match.group(1).strip()
            if not value.isdigit() or len(value) > _MAX_LENGTH_DIGITS:
                return "bad Content-Length"
            if length is not None and int(value) != length:
                return "conflicting Content-Length headers"
            length = int(value)
        if length is None:
            # RFC 3261 18.3: mandatory on streams. Taking 0 would read any
            # body as the next message, which a sender could use to smuggle
            # one past the proxy.
            return "missing Content-Length"
        return length

    def _fail(self, frames: list[Frame], reason: str) -> list[Frame]:
        self.error = FramingError(reason)
        frames.append(self.error)
        self._buffer = bytearray()
        return frames


# What keep-alive datagrams are made of: CRLFs, other whitespace some agents
# send, and NUL padding.
_KEEPALIVE_FILLER = b"\r\n \t\x00"


def isKeepAlive(datagram: bytes) -> bool:
    """
    Whether a UDP datagram is a keep-alive rather than a SIP message: it
    holds only CRLFs, whitespace and NULs (RFC 5626 CRLF keep-alives sent
    over UDP, agents' single CRLF, NUL-filled NAT probes), or the word
    C{jack} padded with those (keep-alive of some analogue adapters). Such
    datagrams are ignored, never parsed or answered: over UDP the RFC 5626
    keep-alive is STUN, which starts with a byte below 4 and is left to the
    caller's STUN demultiplexing.
    """
    rest = datagram.strip(_KEEPALIVE_FILLER)
    return not rest or rest == b"jack"
