"""
SDP for the relay, sans-IO (RFC 8866, formerly RFC 4566; offer/answer of
RFC 3264): read what the relay needs from a session description — each
media section's connection address, port and RTCP address (RFC 3605) —
and write it back pointing at the relay.

A description is kept as its lines, byte for byte: a rewrite changes only
the session and media C{c=} lines, the C{m=} ports, C{a=rtcp} and, when
asked, removes the ICE lines (RFC 8839: an agent would otherwise find its
peer's candidates and route around the relay). Codecs, C{fmtp}, the EBU
Tech 3368 C{a=ebuacip} lines, direction attributes, unknown lines and the
line endings (CRLF or LF) are left as they came.

What cannot be read raises L{SDPError}, whose message is a short reason a
SIP response can carry (the relay answers 400).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

import attrs

MAX_SIZE = 65_536
"""Bytes an SDP body may have."""

MAX_MEDIA = 64
"""Media sections a description may have."""

ICE_ATTRIBUTES = frozenset(
    {
        b"candidate",
        b"remote-candidates",
        b"ice-ufrag",
        b"ice-pwd",
        b"ice-options",
        b"ice-lite",
        b"ice-mismatch",
        b"ice-pacing",
        b"end-of-candidates",
    }
)
"""Attributes of ICE (RFC 8839, RFC 8840), removed from a relayed description."""

DIRECTIONS = frozenset({"sendrecv", "sendonly", "recvonly", "inactive"})

_LINE = re.compile(rb"[a-z]=")
# A token of RFC 8866 9 (addresses, types), and an FQDN for a unicast address.
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9])?")
_PORT = re.compile(r"([0-9]{1,5})(?:/([0-9]{1,5}))?")


class SDPError(ValueError):
    """An SDP body that cannot be read; C{str()} is a short reason."""


@attrs.frozen
class Connection:
    """
    A C{c=} line: C{IN IP4 192.0.2.1} or C{IN IP6 2001:db8::1}.

    @ivar address: as written (an IP address, or a host name).
    @ivar ip: the address parsed, or C{None} for a host name.
    @ivar suffix: a multicast C{/ttl/count}, as written (C{""} for unicast).
    """

    family: str
    address: str
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    suffix: str = ""

    @property
    def unspecified(self) -> bool:
        """C{0.0.0.0} or C{::}: the old way of putting a stream on hold (RFC 3264 8.4)."""
        return self.ip is not None and self.ip.is_unspecified


@attrs.define
class _Line:
    """One line: its type letter, its value and its line ending, as written."""

    type: bytes
    value: bytes
    end: bytes

    def toBytes(self) -> bytes:
        if not self.type:
            return self.end  # a blank line (a trailing CRLF some agents add)
        return self.type + b"=" + self.value + self.end


@attrs.define
class Media:
    """
    One media section (C{m=} and the lines after it).

    @ivar kind: C{audio}, C{video}, …
    @ivar port: the transport port; 0 for a rejected or disabled stream.
    @ivar count: the number of ports of C{port/count} (1 without).
    @ivar proto: C{RTP/AVP}, C{RTP/SAVP}, …
    @ivar formats: the format list, as written.
    @ivar connection: the section's own C{c=}, or C{None}.
    @ivar rtcp: the C{a=rtcp} port, or C{None}; C{rtcpConnection} its
        address if it gives one.
    @ivar direction: the section's own direction attribute, or C{None}.
    """

    kind: str
    port: int
    count: int
    proto: str
    formats: str
    connection: Connection | None = None
    rtcp: int | None = None
    rtcpConnection: Connection | None = None
    direction: str | None = None
    lines: list[_Line] = attrs.Factory(list)

    @property
    def relayable(self) -> bool:
        """An active stream over UDP (RTP, SRTP, DTLS-SRTP, plain UDP) a UDP relay can carry."""
        proto = self.proto.upper()
        return self.port != 0 and (proto.startswith("RTP/") or proto.startswith("UDP"))


@attrs.define
class SessionDescription:
    """
    A parsed SDP body. Its lines are kept as they came: L{toBytes} gives
    the same bytes back, L{rewrite} changes only what the relay must.

    @ivar connection: the session-level C{c=}, or C{None}.
    @ivar direction: the session-level direction attribute, or C{None}.
    @ivar ice: whether any ICE attribute is present.
    """

    connection: Connection | None
    direction: str | None
    media: list[Media]
    ice: bool
    lines: list[_Line]

    def toBytes(self) -> bytes:
        return b"".join(line.toBytes() for line in self.lines) + b"".join(
            line.toBytes() for m in self.media for line in m.lines
        )

    def connectionOf(self, media: Media) -> Connection | None:
        """The C{c=} that applies to C{media}: its own, else the session's."""
        return media.connection if media.connection is not None else self.connection

    def directionOf(self, media: Media) -> str:
        """The direction of C{media} (RFC 3264 5.1: C{sendrecv} when none is given)."""
        return media.direction or self.direction or "sendrecv"

    def rtpAddresses(self) -> list[tuple[str, int] | None]:
        """
        Where each media section wants its RTP: C{(address, port)}, or
        C{None} for a section the relay leaves alone (port 0, not UDP).
        """
        found: list[tuple[str, int] | None] = []
        for media in self.media:
            connection = self.connectionOf(media)
            found.append((connection.address, media.port) if media.relayable and connection is not None else None)
        return found

    def rewrite(self, endpoints: Sequence[tuple[str, int] | None], removeICE: bool = True) -> bytes:
        """
        This description with media section I{i} pointed at
        C{endpoints[i]} (C{(address, rtpPort)}: RTCP on C{rtpPort + 1}),
        or left alone where it is C{None}; ICE lines removed when
        C{removeICE}. An unspecified address (C{0.0.0.0}: hold) stays
        unspecified.
        """
        if len(endpoints) != len(self.media):
            raise ValueError("one endpoint per media section")
        relayed = [(m, e) for m, e in zip(self.media, endpoints, strict=True) if e is not None]
        out: list[bytes] = []
        # The session c= follows the relay when every section that uses it is relayed.
        sessionAddress = None
        if self.connection is not None and relayed:
            users = [m for m in self.media if m.connection is None and m.port != 0]
            targets = {e[0] for m, e in zip(self.media, endpoints, strict=True) if m in users and e is not None}
            if (
                all(e is not None for m, e in zip(self.media, endpoints, strict=True) if m in users)
                and len(targets) == 1
            ):
                sessionAddress = targets.pop()
            elif not users:
                sessionAddress = relayed[0][1][0]  # type: ignore[index]
        for line in self.lines:
            if removeICE and relayed and _isICE(line):
                continue
            if line.type == b"c" and sessionAddress is not None and self.connection is not None:
                out.append(_connectionLine(self.connection, sessionAddress, line.end))
                continue
            out.append(line.toBytes())
        for media, endpoint in zip(self.media, endpoints, strict=True):
            out.extend(self._rewriteMedia(media, endpoint, sessionAddress, removeICE and bool(relayed)))
        return b"".join(out)

    def _rewriteMedia(
        self, media: Media, endpoint: tuple[str, int] | None, sessionAddress: str | None, removeICE: bool
    ) -> list[bytes]:
        if endpoint is None:
            lines = [line.toBytes() for line in media.lines if not (removeICE and _isICE(line))]
            if sessionAddress is not None and media.connection is None and media.port != 0:
                # The session c= moves to the relay; this active section keeps the address it had.
                assert self.connection is not None
                original = self.connection
                own = f"c=IN {original.family} {original.address}{original.suffix}".encode() + media.lines[0].end
                return [lines[0], own, *lines[1:]]
            return lines
        address, port = endpoint
        out: list[bytes] = []
        first = media.lines[0]
        fields = first.value.split(b" ", 2)
        portField = str(port).encode() + (b"/" + str(media.count).encode() if b"/" in fields[1] else b"")
        out.append(b"m=" + fields[0] + b" " + portField + b" " + fields[2] + first.end)
        needsOwn = media.connection is None and (sessionAddress is None or sessionAddress != address)
        if needsOwn:
            template = self.connection if self.connection is not None else _connectionFor(address)
            out.append(_connectionLine(template, address, first.end))
        for line in media.lines[1:]:
            if removeICE and _isICE(line):
                continue
            if line.type == b"c" and media.connection is not None:
                out.append(_connectionLine(media.connection, address, line.end))
            elif line.type == b"a" and line.value.startswith(b"rtcp:"):
                out.append(_rtcpLine(line, address, port + 1, media.rtcpConnection))
            else:
                out.append(line.toBytes())
        return out


def _isICE(line: _Line) -> bool:
    return line.type == b"a" and line.value.split(b":", 1)[0].strip() in ICE_ATTRIBUTES


def _connectionFor(address: str) -> Connection:
    ip = ipaddress.ip_address(address)
    return Connection("IP6" if ip.version == 6 else "IP4", address, ip)


def _connectionLine(original: Connection, address: str, end: bytes) -> bytes:
    """A c= line for C{address}; an unspecified original (hold) stays as it was."""
    if original.unspecified:
        return b"c=IN " + original.family.encode() + b" " + original.address.encode() + original.suffix.encode() + end
    family = _connectionFor(address).family
    return b"c=IN " + family.encode() + b" " + address.encode() + end


def _rtcpLine(line: _Line, address: str, port: int, connection: Connection | None) -> bytes:
    if connection is None:
        return b"a=rtcp:" + str(port).encode() + line.end
    written = _connectionFor(address)
    if connection.unspecified:
        written = connection
    return (
        b"a=rtcp:" + str(port).encode() + b" IN " + written.family.encode() + b" " + written.address.encode() + line.end
    )


# -- parsing ---------------------------------------------------------------------


def parse(body: bytes) -> SessionDescription:
    """
    Read an SDP body.

    @raise SDPError: it is not a session description this relay can read
        (a reason in its message).
    """
    if not body:
        raise SDPError("empty SDP")
    if len(body) > MAX_SIZE:
        raise SDPError(f"SDP longer than {MAX_SIZE} bytes")
    if b"\x00" in body:
        raise SDPError("NUL byte in SDP")
    session: list[_Line] = []
    sections: list[Media] = []
    current = session
    for number, raw in enumerate(body.splitlines(keepends=True), 1):
        content = raw.rstrip(b"\r\n")
        end = raw[len(content) :]
        if not content:
            # Blank lines (often a trailing one) are kept as they are.
            current.append(_Line(b"", b"", end))
            continue
        if not _LINE.match(content):
            raise SDPError(f"SDP line {number} is not type=value")
        line = _Line(content[:1], content[2:], end)
        if line.type == b"m":
            if len(sections) >= MAX_MEDIA:
                raise SDPError(f"more than {MAX_MEDIA} media sections")
            sections.append(_media(line, number))
            current = sections[-1].lines
            continue
        current.append(line)
    if not session or session[0].type != b"v":
        raise SDPError("SDP does not start with v=")
    if session[0].value.strip() != b"0":
        raise SDPError("SDP version is not 0")
    connection = None
    direction = None
    ice = False
    for line in session:
        if line.type == b"c":
            if connection is not None:
                raise SDPError("two session-level c= lines")
            connection = _connection(line.value)
        elif line.type == b"a":
            name = line.value.split(b":", 1)[0].strip()
            if name in ICE_ATTRIBUTES:
                ice = True
            elif name.decode("ascii", "replace") in DIRECTIONS:
                direction = name.decode()
    if not any(line.type == b"o" for line in session):
        raise SDPError("SDP without o= line")
    for media in sections:
        for line in media.lines[1:]:
            if line.type == b"c":
                if media.connection is not None and media.connection.suffix == "":
                    raise SDPError(f"two c= lines in the {media.kind} section")
                media.connection = _connection(line.value)
            elif line.type == b"a":
                name, _, value = line.value.partition(b":")
                name = name.strip()
                if name in ICE_ATTRIBUTES:
                    ice = True
                elif name == b"rtcp":
                    media.rtcp, media.rtcpConnection = _rtcp(value)
                elif name.decode("ascii", "replace") in DIRECTIONS:
                    media.direction = name.decode()
        if media.port != 0 and media.connection is None and connection is None:
            raise SDPError(f"no c= line for the {media.kind} section")
    return SessionDescription(connection, direction, sections, ice, session)


def _text(value: bytes, what: str) -> str:
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        raise SDPError(f"non-ASCII {what}") from None


def _media(line: _Line, number: int) -> Media:
    fields = _text(line.value, "m= line").split(" ")
    if len(fields) < 4 or not all(fields[:3]):
        raise SDPError(f"malformed m= line (line {number})")
    kind, ports, proto = fields[0], fields[1], fields[2]
    formats = " ".join(fields[3:])
    found = _PORT.fullmatch(ports)
    if not _TOKEN.fullmatch(kind) or found is None:
        raise SDPError(f"malformed m= line (line {number})")
    port = int(found.group(1))
    count = int(found.group(2)) if found.group(2) is not None else 1
    if port > 65535 or not 1 <= count <= 65535:
        raise SDPError(f"m= port out of range (line {number})")
    return Media(kind, port, count, proto, formats, lines=[line])


def _connection(value: bytes) -> Connection:
    fields = _text(value, "c= line").split(" ")
    if len(fields) != 3 or fields[0] != "IN" or fields[1] not in ("IP4", "IP6"):
        raise SDPError("malformed c= line")
    return _address(fields[1], fields[2])


def _address(family: str, written: str) -> Connection:
    address, slash, suffix = written.partition("/")
    suffix = slash + suffix
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        if not _HOSTNAME.fullmatch(address) or len(address) > 253:
            raise SDPError(f"bad address in SDP: {address[:64]!r}") from None
        return Connection(family, address, None, suffix)
    if (ip.version == 6) != (family == "IP6"):
        raise SDPError(f"address {address} is not {family}")
    if suffix and not ip.is_multicast:
        raise SDPError(f"TTL or count on the unicast address {address}")
    return Connection(family, address, ip, suffix)


def _rtcp(value: bytes) -> tuple[int, Connection | None]:
    fields = _text(value, "a=rtcp").strip().split(" ")
    if not fields[0].isdigit() or int(fields[0]) > 65535:
        raise SDPError("malformed a=rtcp")
    port = int(fields[0])
    if len(fields) == 1:
        return port, None
    if len(fields) != 4 or fields[1] != "IN" or fields[2] not in ("IP4", "IP6"):
        raise SDPError("malformed a=rtcp")
    return port, _address(fields[2], fields[3])
