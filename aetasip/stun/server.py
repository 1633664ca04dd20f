"""
STUN request handling, sans-IO: bytes from a source address arrive on one
of the server's sockets; out comes the response, where to send it and from
which socket, or nothing.

The sockets of one listen address form a set of up to four I{roles}
(RFC 5780): primary address and port, primary address and
alternate port, alternate address and primary port, both alternate. A role
is two bits, L{ALTERNATE_PORT} and L{ALTERNATE_ADDRESS}, so CHANGE-REQUEST
flips bits of the role a request arrived on, and the "other" address of
OTHER-ADDRESS is the role with both bits flipped.

Binding requests get XOR-MAPPED-ADDRESS (RFC 8489), or MAPPED-ADDRESS for
classic RFC 3489 clients (RFC 8489 section 11, RFC 5389 section 12.2), plus
RESPONSE-ORIGIN and OTHER-ADDRESS (SOURCE-ADDRESS and CHANGED-ADDRESS for
classic clients) when known, SOFTWARE and FINGERPRINT. The common case, a
Binding request without attributes, takes a short path that builds the
response from bytes precomputed for the receiving socket.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import time
import zlib
from collections.abc import Callable, Mapping

from aetasip.stun import codec

PRIMARY = 0
ALTERNATE_PORT = 1
ALTERNATE_ADDRESS = 2
ALTERNATE_BOTH = ALTERNATE_ADDRESS | ALTERNATE_PORT

Address = tuple[str, int]
Reply = tuple[bytes, Address, int]
"""What to send: (datagram, destination, role of the socket to send from)."""

# Comprehension-required attributes a Binding request may carry and that
# this server understands. RFC 8489's authentication attributes are
# understood and ignored: this server does not authenticate Binding, as
# RFC 8489 allows. PADDING (RFC 5780) and the RFC 3489 RESPONSE-ADDRESS and
# PASSWORD are not: they get 420, as RFC 5389 section 12.2 foresees for the
# last two (RESPONSE-ADDRESS would make the server a reflector).
UNDERSTOOD = frozenset(
    {
        codec.MAPPED_ADDRESS,
        codec.CHANGE_REQUEST,
        codec.SOURCE_ADDRESS,
        codec.CHANGED_ADDRESS,
        codec.USERNAME,
        codec.MESSAGE_INTEGRITY,
        codec.ERROR_CODE,
        codec.UNKNOWN_ATTRIBUTES,
        codec.REALM,
        codec.NONCE,
        codec.MESSAGE_INTEGRITY_SHA256,
        codec.PASSWORD_ALGORITHM,
        codec.USERHASH,
        codec.XOR_MAPPED_ADDRESS,
        codec.PRIORITY,
        codec.USE_CANDIDATE,
        codec.RESPONSE_PORT,
    }
)

AMPLIFICATION = 4
"""
A response takes less than this many times its request's bytes: STUN over
UDP answers sources that may be spoofed (a 20-byte Binding request over
IPv6 got 96 bytes back).
"""

_EMPTY_BINDING_REQUEST = b"\x00\x01\x00\x00" + codec.MAGIC_COOKIE_BYTES
_COOKIE_BYTES = codec.MAGIC_COOKIE_BYTES
# The class bits C1 and C0 of a message type, and those of an indication.
_CLASS_BITS = codec.messageType(0, codec.ERROR_RESPONSE)
_INDICATION_BITS = codec.messageType(0, codec.INDICATION)
_MAGIC = codec.MAGIC_COOKIE
_FINGERPRINT_XOR = codec.FINGERPRINT_XOR
_XOR_PORT = codec.MAGIC_COOKIE >> 16
_XOR_MAPPED_V4 = struct.Struct("!HHBBHI")
_MAPPED_V4 = struct.Struct("!HHBBH4s")
_ADDRESS_V6_HEAD = struct.Struct("!HHBBH")
_FINGERPRINT_ATTRIBUTE = struct.Struct("!HHI")
_TYPE_LENGTH = struct.Struct("!HH")
_FINGERPRINT_HEADER = _TYPE_LENGTH.pack(codec.FINGERPRINT, 4)
_SUCCESS_TYPE = 0x0101
_crc32 = zlib.crc32
_inet_aton = socket.inet_aton


class Counters:
    """
    What the server did, for the metrics endpoint: plain integers,
    incremented on the packet path.

    @ivar requests: requests received (classic ones included), before the
        rate limit.
    @ivar classicRequests: requests without the magic cookie (RFC 3489).
    @ivar responses: success responses sent.
    @ivar errors: error responses sent, by code.
    @ivar indications: indications received (accepted, not answered).
    @ivar changeRequests: responses sent from another socket (CHANGE-REQUEST).
    @ivar rateLimited: requests dropped by the per-source rate limit.
    @ivar notSTUN: packets or streams that were not STUN, dropped.
    @ivar badFingerprint: messages with a wrong FINGERPRINT, dropped.
    @ivar ignored: responses and other messages a server does not answer.
    @ivar sendFailures: responses the operating system refused to send.
    @ivar tcpConnections: TCP connections accepted.
    """

    __slots__ = (
        "badFingerprint",
        "changeRequests",
        "classicRequests",
        "errors",
        "ignored",
        "indications",
        "notSTUN",
        "rateLimited",
        "requests",
        "responses",
        "sendFailures",
        "tcpConnections",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.classicRequests = 0
        self.responses = 0
        self.errors: dict[int, int] = {}
        self.indications = 0
        self.changeRequests = 0
        self.rateLimited = 0
        self.notSTUN = 0
        self.badFingerprint = 0
        self.ignored = 0
        self.sendFailures = 0
        self.tcpConnections = 0

    def asDict(self) -> dict[str, int]:
        """
        The counters by metric name: snake case (C{rate_limited},
        C{not_stun}), C{errors} in all and C{errors_420} by code.
        """
        values = {_METRIC_NAMES[name]: getattr(self, name) for name in self.__slots__ if name != "errors"}
        values["errors"] = sum(self.errors.values())
        for code, count in sorted(self.errors.items()):
            values[f"errors_{code}"] = count
        return values


_METRIC_NAMES = {
    "badFingerprint": "bad_fingerprint",
    "changeRequests": "change_requests",
    "classicRequests": "classic_requests",
    "ignored": "ignored",
    "indications": "indications",
    "notSTUN": "not_stun",
    "rateLimited": "rate_limited",
    "requests": "requests",
    "responses": "responses",
    "sendFailures": "send_failures",
    "tcpConnections": "tcp_connections",
}


class RateLimiter:
    """
    At most C{rate} requests per second from one source address, counted in
    one-second windows. The table is dropped at every new window, so it
    holds only the sources of the last second however many are spoofed.
    """

    __slots__ = ("_clock", "_counts", "_rate", "_window")

    def __init__(self, rate: int, clock: Callable[[], float]) -> None:
        self._rate = rate
        self._clock = clock
        self._window = -1
        self._counts: dict[str, int] = {}

    def allow(self, host: str) -> bool:
        """
        Count one request from C{host}; whether it may be answered.
        """
        window = int(self._clock())
        if window != self._window:
            self._window = window
            self._counts = {}
        count = self._counts.get(host, 0)
        if count >= self._rate:
            return False
        self._counts[host] = count + 1
        return True


def _known(address: Address | None) -> Address | None:
    """
    C{address}, or L{None} when it is a wildcard that tells a client nothing.
    """
    if address is None or ipaddress.ip_address(address[0].partition("%")[0]).is_unspecified:
        return None
    return address


def _attribute(attributeType: int, value: bytes) -> bytes:
    return codec.Attribute(attributeType, value).encode()


class Endpoint:
    """
    One socket of the server, as request handling sees it: its role, the
    roles of its set, and the response pieces that depend only on them,
    computed once.

    @ivar role: the role of this socket in its set.
    @ivar roles: the roles the set has (a CHANGE-REQUEST for a missing one
        gets 420).
    @ivar stream: whether this is a TCP socket (no CHANGE-REQUEST nor
        RESPONSE-PORT: a connection answers on itself).
    @ivar ipv6: whether sources are IPv6.
    """

    __slots__ = (
        "_classic",
        "_classicLean",
        "_leanBelow",
        "_modern",
        "_modernLean",
        "ipv6",
        "role",
        "roles",
        "stream",
    )

    def __init__(
        self,
        role: int,
        addresses: Mapping[int, Address],
        software: bytes,
        *,
        local: Address | None = None,
        stream: bool = False,
    ) -> None:
        """
        @param addresses: the bound address of every socket of the set, by
            role; wildcard hosts are not advertised.
        @param software: the encoded SOFTWARE attribute, or C{b""}.
        @param local: the real local address of this socket when known
            better than C{addresses[role]} (a TCP connection's).
        """
        self.role = role
        self.roles = frozenset(addresses)
        self.stream = stream
        self.ipv6 = ":" in addresses[role][0]
        mappedLength = 24 if self.ipv6 else 12
        # RFC 5780 section 7.4 and RFC 3489: OTHER-ADDRESS (CHANGED-ADDRESS)
        # is the socket of the other address and the other port, whatever the
        # request asked; it is only given by a server that has both.
        other = _known(addresses[role ^ ALTERNATE_BOTH]) if len(addresses) == 4 else None
        self._modern: dict[int, tuple[bytes, bytes]] = {}
        self._classic: dict[int, tuple[bytes, bytes]] = {}
        # The same for the smallest requests (a bare 20-byte Binding, the
        # codecs' keep-alive): what fits in less than AMPLIFICATION times
        # their size, as a spoofed request's answer must (RFC 5780's
        # OTHER-ADDRESS first, then RESPONSE-ORIGIN, then SOFTWARE).
        self._modernLean: dict[int, tuple[bytes, bytes]] = {}
        self._classicLean: dict[int, tuple[bytes, bytes]] = {}
        budget = AMPLIFICATION * 20 - 1
        for sendRole, address in addresses.items():
            origin = _known(local if sendRole == role and local is not None else address)
            # (rank when room is short, attribute), in wire order.
            modern: list[tuple[int, bytes]] = []
            classic: list[tuple[int, bytes]] = []
            if origin is not None:
                modern.append((1, _attribute(codec.RESPONSE_ORIGIN, codec.encodeAddress(*origin))))
                classic.append((1, _attribute(codec.SOURCE_ADDRESS, codec.encodeAddress(*origin))))
            if other is not None:
                modern.append((0, _attribute(codec.OTHER_ADDRESS, codec.encodeAddress(*other))))
                classic.append((0, _attribute(codec.CHANGED_ADDRESS, codec.encodeAddress(*other))))
            if software:
                modern.append((2, software))
            # Besides these: the mapped address, and FINGERPRINT (8 bytes) but in RFC 3489's shape.
            for attributes, fixed, full, lean in (
                (modern, mappedLength + 8, self._modern, self._modernLean),
                (classic, mappedLength, self._classic, self._classicLean),
            ):
                tail = b"".join(attribute for _, attribute in attributes)
                full[sendRole] = (_TYPE_LENGTH.pack(_SUCCESS_TYPE, fixed + len(tail)), tail)
                room = budget - 20 - fixed
                kept = set()
                for rank, attribute in sorted(attributes):
                    if len(attribute) <= room:
                        kept.add(rank)
                        room -= len(attribute)
                tail = b"".join(attribute for rank, attribute in attributes if rank in kept)
                lean[sendRole] = (_TYPE_LENGTH.pack(_SUCCESS_TYPE, fixed + len(tail)), tail)
        # Requests below this size get the lean answers.
        fullSize = 20 + mappedLength + 8 + max((len(tail) for _, tail in self._modern.values()), default=0)
        self._leanBelow = -(-(fullSize + 1) // AMPLIFICATION)

    def success(self, data: bytes, source: Address, sendRole: int) -> bytes:
        """
        The Binding success response to the request C{data} from C{source},
        sent from the socket of C{sendRole}: XOR-MAPPED-ADDRESS, the
        precomputed attributes, FINGERPRINT.
        """
        prefix, tail = (self._modern if len(data) >= self._leanBelow else self._modernLean)[sendRole]
        host, port = source
        if self.ipv6:
            packed = _packIPv6(host)
            xored = int.from_bytes(packed, "big") ^ int.from_bytes(data[4:20], "big")
            mapped = _ADDRESS_V6_HEAD.pack(codec.XOR_MAPPED_ADDRESS, 20, 0, 2, port ^ _XOR_PORT) + xored.to_bytes(
                16, "big"
            )
        else:
            address = int.from_bytes(_inet_aton(host), "big") ^ _MAGIC
            mapped = _XOR_MAPPED_V4.pack(codec.XOR_MAPPED_ADDRESS, 8, 0, 1, port ^ _XOR_PORT, address)
        message = prefix + data[4:20] + mapped + tail
        return message + _FINGERPRINT_ATTRIBUTE.pack(codec.FINGERPRINT, 4, _crc32(message) ^ _FINGERPRINT_XOR)

    def classicSuccess(self, data: bytes, source: Address, sendRole: int) -> bytes:
        """
        The Binding success response to the classic RFC 3489 request
        C{data}: MAPPED-ADDRESS, SOURCE-ADDRESS and CHANGED-ADDRESS, in the
        RFC 3489 shape (its 128-bit transaction ID echoed, no FINGERPRINT).
        """
        prefix, tail = (self._classic if len(data) >= self._leanBelow else self._classicLean)[sendRole]
        host, port = source
        if self.ipv6:
            mapped = _ADDRESS_V6_HEAD.pack(codec.MAPPED_ADDRESS, 20, 0, 2, port) + _packIPv6(host)
        else:
            mapped = _MAPPED_V4.pack(codec.MAPPED_ADDRESS, 8, 0, 1, port, _inet_aton(host))
        return prefix + data[4:20] + mapped + tail


def _packIPv6(host: str) -> bytes:
    try:
        return socket.inet_pton(socket.AF_INET6, host)
    except OSError:
        # A link-local source carries its zone ("fe80::1%eth0").
        return socket.inet_pton(socket.AF_INET6, host.partition("%")[0])


class STUNServer:
    """
    Answers STUN requests (sans-IO).

    @ivar counters: the L{Counters} of everything handled.
    """

    def __init__(
        self,
        *,
        software: str | None = None,
        rateLimit: int = 0,
        clock: Callable[[], float] = time.monotonic,
        counters: Counters | None = None,
    ) -> None:
        """
        @param software: the SOFTWARE attribute of responses, or L{None}.
        @param rateLimit: requests answered per second per source address;
            0 for no limit.
        @param clock: the time in seconds (injected for tests).
        """
        self.counters = counters if counters is not None else Counters()
        self._software = b"" if software is None else _attribute(codec.SOFTWARE, codec.encodeSoftware(software))
        self._limiter = RateLimiter(rateLimit, clock) if rateLimit else None

    def endpoint(
        self,
        role: int,
        addresses: Mapping[int, Address],
        *,
        local: Address | None = None,
        stream: bool = False,
    ) -> Endpoint:
        """
        The L{Endpoint} of the socket of C{role} in a set bound at
        C{addresses} (by role). See L{Endpoint.__init__}.
        """
        return Endpoint(role, addresses, self._software, local=local, stream=stream)

    def datagram(self, data: bytes, source: Address, endpoint: Endpoint) -> Reply | None:
        """
        Handle the datagram C{data} from C{source} received on C{endpoint}.

        @return: (response, destination, role of the socket to send it from),
            or L{None} when nothing is to be sent.
        """
        if len(data) == 20 and data[:8] == _EMPTY_BINDING_REQUEST:
            # The keep-alive of every codec: no attributes, nothing to check.
            counters = self.counters
            counters.requests += 1
            if self._limiter is not None and not self._limiter.allow(source[0]):
                counters.rateLimited += 1
                return None
            counters.responses += 1
            role = endpoint.role
            return endpoint.success(data, source, role), source, role
        return self._request(data, source, endpoint)

    def stream(self, data: bytes, source: Address, endpoint: Endpoint) -> bytes | None:
        """
        Handle C{data}, one message framed out of the TCP connection from
        C{source} accepted on C{endpoint}.

        @return: the response, or L{None}.
        """
        reply = self._request(data, source, endpoint)
        return None if reply is None else reply[0]

    def _request(self, data: bytes, source: Address, endpoint: Endpoint) -> Reply | None:
        counters = self.counters
        size = len(data)
        if size < 20:
            counters.notSTUN += 1
            return None
        rawType, length = _TYPE_LENGTH.unpack_from(data)
        # RFC 8489 section 6.3: the first two bits are zero and the length is
        # a multiple of 4 that matches the datagram.
        if rawType & 0xC000 or length & 3 or length + 20 != size:
            counters.notSTUN += 1
            return None
        classic = data[4:8] != _COOKIE_BYTES
        messageClass = rawType & _CLASS_BITS
        if messageClass:
            if classic:
                counters.notSTUN += 1
            elif messageClass == _INDICATION_BITS:
                counters.indications += 1
            else:
                counters.ignored += 1
            return None
        binding = rawType == codec.BINDING
        if data[-8:-4] == _FINGERPRINT_HEADER and size >= 28 and not codec.checkFingerprint(data, size - 4):
            # Checked first: a corrupted message is dropped, not answered 400.
            counters.badFingerprint += 1
            return None
        if classic and not binding:
            # Without the cookie, only a Binding request is told apart from
            # random bytes with any confidence.
            counters.notSTUN += 1
            return None

        unknown: list[int] = []
        changeValue: bytes | None = None
        responsePortValue: bytes | None = None
        protected = False
        malformed = False
        offset = 20
        while offset < size:
            if size - offset < 4:
                malformed = True
                break
            attributeType, length = _TYPE_LENGTH.unpack_from(data, offset)
            start = offset + 4
            offset = start + length + (-length & 3)
            if offset > size:
                malformed = True
                break
            if attributeType == codec.FINGERPRINT:
                if length != 4 or not codec.checkFingerprint(data, start):
                    counters.badFingerprint += 1
                    return None
            elif protected or attributeType >= 0x8000:
                # RFC 8489 section 14.5: what follows MESSAGE-INTEGRITY (but
                # FINGERPRINT) is ignored; comprehension-optional attributes
                # may be.
                continue
            elif attributeType == codec.CHANGE_REQUEST:
                changeValue = data[start : start + length]
            elif attributeType == codec.RESPONSE_PORT:
                responsePortValue = data[start : start + length]
            elif attributeType == codec.MESSAGE_INTEGRITY or attributeType == codec.MESSAGE_INTEGRITY_SHA256:
                protected = True
            elif attributeType not in UNDERSTOOD and attributeType not in unknown:
                unknown.append(attributeType)

        counters.requests += 1
        if classic:
            counters.classicRequests += 1
        if self._limiter is not None and not self._limiter.allow(source[0]):
            counters.rateLimited += 1
            return None

        role = endpoint.role
        if malformed or not binding:
            return self._error(data, classic, 400, (), source, role)
        if unknown:
            return self._error(data, classic, 420, unknown, source, role)

        sendRole = role
        if changeValue is not None:
            if len(changeValue) != 4:
                return self._error(data, classic, 400, (), source, role)
            flags = changeValue[3]
            if flags & (codec.CHANGE_IP | codec.CHANGE_PORT):
                if endpoint.stream:
                    # A TCP connection can only answer on itself.
                    return self._error(data, classic, 400, (), source, role)
                sendRole = role ^ (
                    (ALTERNATE_ADDRESS if flags & codec.CHANGE_IP else 0)
                    | (ALTERNATE_PORT if flags & codec.CHANGE_PORT else 0)
                )
                if sendRole not in endpoint.roles:
                    # No socket to answer from: answer as a server without
                    # RFC 5780 does, CHANGE-REQUEST being comprehension-
                    # required, so that the client knows the test is not
                    # available here (rather than seeing a filtering NAT).
                    return self._error(data, classic, 420, (codec.CHANGE_REQUEST,), source, role)
                counters.changeRequests += 1

        destination = source
        if responsePortValue is not None:
            if len(responsePortValue) != 4 or endpoint.stream:
                return self._error(data, classic, 400, (), source, role)
            port = (responsePortValue[0] << 8) | responsePortValue[1]
            if port == 0:
                return self._error(data, classic, 400, (), source, role)
            destination = (source[0], port)

        counters.responses += 1
        if classic:
            return endpoint.classicSuccess(data, source, sendRole), destination, sendRole
        return endpoint.success(data, source, sendRole), destination, sendRole

    def _error(
        self,
        data: bytes,
        classic: bool,
        code: int,
        unknown: tuple[int, ...] | list[int],
        source: Address,
        role: int,
    ) -> Reply:
        """
        The error response C{code} to the request C{data}, sent back from the
        socket it arrived on.
        """
        errors = self.counters.errors
        errors[code] = errors.get(code, 0) + 1
        reason = codec.REASONS[code]
        if classic:
            # RFC 3489 had no attribute padding: its reason phrases are
            # padded with spaces to a multiple of 4 bytes instead.
            reason = reason.ljust(-(-len(reason) // 4) * 4)
        body = _attribute(codec.ERROR_CODE, codec.encodeErrorCode(code, reason))
        if unknown:
            body += _attribute(codec.UNKNOWN_ATTRIBUTES, codec.encodeUnknownAttributes(unknown, classic=classic))
        rawType = codec.messageType(codec.splitMessageType((data[0] << 8) | data[1])[0], codec.ERROR_RESPONSE)
        if classic:
            return _TYPE_LENGTH.pack(rawType, len(body)) + data[4:20] + body, source, role
        if 20 + len(body) + len(self._software) + 8 < AMPLIFICATION * len(data):
            body += self._software
        message = _TYPE_LENGTH.pack(rawType, len(body) + 8) + data[4:20] + body
        return (
            message + _FINGERPRINT_ATTRIBUTE.pack(codec.FINGERPRINT, 4, _crc32(message) ^ _FINGERPRINT_XOR),
            source,
            role,
        )
