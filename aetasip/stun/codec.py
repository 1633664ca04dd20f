"""
A sans-IO codec for STUN messages.

It reads and writes the message format of RFC 8489 (and RFC 5389, which it
revises), the classic format of RFC 3489 (no magic cookie: a 128-bit
transaction ID), and the attributes of NAT behaviour discovery (RFC 5780).
No sockets, no reactor: bytes in, values out, and the other way round.

A decoded message is a L{Message} of L{Attribute}s kept in wire order with
their padding bytes, so that decoding then encoding gives back exactly the
bytes received (RFC 5769 test vectors pad with spaces, not zeros). Attribute
values are bytes; the C{encode*}/C{decode*} functions convert them.

Decoding raises a subclass of L{STUNDecodeError} that tells the caller what
RFC 8489 asks for:
    - L{NotSTUN}: not a STUN message at all; drop it silently;
    - L{BadFingerprint}: a FINGERPRINT that is wrong or not last; drop it
      silently (RFC 8489 section 7);
    - L{MalformedMessage}: a sound header but a broken body; a request gets a
      400 answer, built from L{MalformedMessage.header}.
"""

from __future__ import annotations

import socket
import struct
import zlib
from collections.abc import Iterable, Iterator

import attrs

MAGIC_COOKIE = 0x2112A442
MAGIC_COOKIE_BYTES = MAGIC_COOKIE.to_bytes(4, "big")
HEADER_LENGTH = 20
FINGERPRINT_XOR = 0x5354554E

# Methods (RFC 8489).
BINDING = 0x001

# Classes, as the two class bits C1 C0 (RFC 8489 section 5).
REQUEST = 0b00
INDICATION = 0b01
SUCCESS_RESPONSE = 0b10
ERROR_RESPONSE = 0b11

# Attribute types. Below 0x8000 an attribute is comprehension-required: a
# request carrying one the server does not understand gets 420.
MAPPED_ADDRESS = 0x0001
RESPONSE_ADDRESS = 0x0002  # RFC 3489 only
CHANGE_REQUEST = 0x0003  # RFC 3489, kept by RFC 5780
SOURCE_ADDRESS = 0x0004  # RFC 3489; RESPONSE-ORIGIN for classic clients
CHANGED_ADDRESS = 0x0005  # RFC 3489; OTHER-ADDRESS for classic clients
USERNAME = 0x0006
PASSWORD = 0x0007  # RFC 3489 only
MESSAGE_INTEGRITY = 0x0008
ERROR_CODE = 0x0009
UNKNOWN_ATTRIBUTES = 0x000A
REFLECTED_FROM = 0x000B  # RFC 3489 only
REALM = 0x0014
NONCE = 0x0015
MESSAGE_INTEGRITY_SHA256 = 0x001C
PASSWORD_ALGORITHM = 0x001D
USERHASH = 0x001E
XOR_MAPPED_ADDRESS = 0x0020
PRIORITY = 0x0024  # RFC 8445 (ICE)
USE_CANDIDATE = 0x0025  # RFC 8445 (ICE)
PADDING = 0x0026  # RFC 5780
RESPONSE_PORT = 0x0027  # RFC 5780
PASSWORD_ALGORITHMS = 0x8002
ALTERNATE_DOMAIN = 0x8003
SOFTWARE = 0x8022
ALTERNATE_SERVER = 0x8023
FINGERPRINT = 0x8028
ICE_CONTROLLED = 0x8029  # RFC 8445
ICE_CONTROLLING = 0x802A  # RFC 8445
RESPONSE_ORIGIN = 0x802B  # RFC 5780
OTHER_ADDRESS = 0x802C  # RFC 5780

ATTRIBUTE_NAMES: dict[int, str] = {
    MAPPED_ADDRESS: "MAPPED-ADDRESS",
    RESPONSE_ADDRESS: "RESPONSE-ADDRESS",
    CHANGE_REQUEST: "CHANGE-REQUEST",
    SOURCE_ADDRESS: "SOURCE-ADDRESS",
    CHANGED_ADDRESS: "CHANGED-ADDRESS",
    USERNAME: "USERNAME",
    PASSWORD: "PASSWORD",
    MESSAGE_INTEGRITY: "MESSAGE-INTEGRITY",
    ERROR_CODE: "ERROR-CODE",
    UNKNOWN_ATTRIBUTES: "UNKNOWN-ATTRIBUTES",
    REFLECTED_FROM: "REFLECTED-FROM",
    REALM: "REALM",
    NONCE: "NONCE",
    MESSAGE_INTEGRITY_SHA256: "MESSAGE-INTEGRITY-SHA256",
    PASSWORD_ALGORITHM: "PASSWORD-ALGORITHM",
    USERHASH: "USERHASH",
    XOR_MAPPED_ADDRESS: "XOR-MAPPED-ADDRESS",
    PRIORITY: "PRIORITY",
    USE_CANDIDATE: "USE-CANDIDATE",
    PADDING: "PADDING",
    RESPONSE_PORT: "RESPONSE-PORT",
    PASSWORD_ALGORITHMS: "PASSWORD-ALGORITHMS",
    ALTERNATE_DOMAIN: "ALTERNATE-DOMAIN",
    SOFTWARE: "SOFTWARE",
    ALTERNATE_SERVER: "ALTERNATE-SERVER",
    FINGERPRINT: "FINGERPRINT",
    ICE_CONTROLLED: "ICE-CONTROLLED",
    ICE_CONTROLLING: "ICE-CONTROLLING",
    RESPONSE_ORIGIN: "RESPONSE-ORIGIN",
    OTHER_ADDRESS: "OTHER-ADDRESS",
}

# CHANGE-REQUEST flags (RFC 5780 section 7.2).
CHANGE_IP = 0x04
CHANGE_PORT = 0x02

REASONS: dict[int, str] = {
    300: "Try Alternate",
    400: "Bad Request",
    401: "Unauthenticated",
    403: "Forbidden",
    420: "Unknown Attribute",
    438: "Stale Nonce",
    500: "Server Error",
}

_IPV4 = 0x01
_IPV6 = 0x02
_HEADER = struct.Struct("!HHI12s")
_TYPE_LENGTH = struct.Struct("!HH")
_UINT32 = struct.Struct("!I")


class STUNDecodeError(ValueError):
    """
    Bytes that do not decode as a STUN message.
    """


class NotSTUN(STUNDecodeError):
    """
    The bytes are not a STUN message (RFC 8489 section 6.3): too short, the
    first two bits set, a length that is not a multiple of 4 or does not
    match. They are dropped without an answer.
    """


class BadFingerprint(STUNDecodeError):
    """
    A FINGERPRINT attribute that does not match the message, or that is not
    the last attribute. RFC 8489 section 7 asks to drop such a message
    silently: it is probably another protocol's packet.
    """


class MalformedMessage(STUNDecodeError):
    """
    The header is a sound STUN header but the attributes are not: one runs
    past the end of the message. A request gets a 400 (Bad Request) answer.

    @ivar header: the decoded header, to build the error response.
    """

    def __init__(self, reason: str, header: Header) -> None:
        super().__init__(reason)
        self.header = header


def messageType(method: int, messageClass: int) -> int:
    """
    The 14-bit message type of C{method} and C{messageClass}: the class bits
    are interleaved with the method bits (RFC 8489 section 5).
    """
    return (
        (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((messageClass & 0b01) << 4)
        | ((messageClass & 0b10) << 7)
    )


def splitMessageType(value: int) -> tuple[int, int]:
    """
    The (method, class) of the message type C{value}.
    """
    method = (value & 0x000F) | ((value & 0x00E0) >> 1) | ((value & 0x3E00) >> 2)
    messageClass = ((value >> 4) & 0b01) | ((value >> 7) & 0b10)
    return method, messageClass


def paddingLength(length: int) -> int:
    """
    How many bytes pad an attribute value of C{length} bytes to a multiple
    of 4.
    """
    return -length & 3


@attrs.frozen
class Header:
    """
    The 20-byte header of a STUN message.

    @ivar cookie: the magic cookie field; anything else than
        L{MAGIC_COOKIE} marks a classic RFC 3489 message, whose transaction
        ID is this field followed by L{transactionID}.
    """

    method: int
    messageClass: int
    length: int
    cookie: int
    transactionID: bytes

    @property
    def classic(self) -> bool:
        return self.cookie != MAGIC_COOKIE


def decodeHeader(data: bytes) -> Header:
    """
    Decode and check the header at the start of C{data}.

    @raise NotSTUN: when C{data} is shorter than a header, the two first bits
        are not zero, or the length is not a multiple of 4.
    """
    if len(data) < HEADER_LENGTH:
        raise NotSTUN("shorter than a STUN header")
    rawType, length, cookie, transactionID = _HEADER.unpack_from(data)
    if rawType & 0xC000:
        raise NotSTUN("the first two bits of a STUN message are zero")
    if length & 3:
        raise NotSTUN("a STUN message length is a multiple of 4")
    method, messageClass = splitMessageType(rawType)
    return Header(method, messageClass, length, cookie, transactionID)


def streamFrameLength(data: bytes | bytearray) -> int:
    """
    The length of the message that starts C{data}, a stream buffer holding
    at least a header: RFC 8489 section 6.2.2 frames STUN over TCP by the
    message length alone.

    @raise NotSTUN: when the bytes cannot start a STUN message; the stream
        cannot be resynchronised and should be closed.
    """
    if data[0] & 0xC0:
        raise NotSTUN("the first two bits of a STUN message are zero")
    length = (data[2] << 8) | data[3]
    if length & 3:
        raise NotSTUN("a STUN message length is a multiple of 4")
    return HEADER_LENGTH + length


@attrs.frozen
class Attribute:
    """
    One attribute: its type and value, and the padding bytes that followed
    it on the wire (L{None}: zeros when encoded).
    """

    type: int
    value: bytes
    padding: bytes | None = attrs.field(default=None)

    @padding.validator
    def _checkPadding(self, attribute: attrs.Attribute[bytes | None], padding: bytes | None) -> None:
        if padding is not None and len(padding) != paddingLength(len(self.value)):
            raise ValueError(f"{len(self.value)} value bytes take {paddingLength(len(self.value))} padding bytes")

    @property
    def name(self) -> str:
        return ATTRIBUTE_NAMES.get(self.type, f"0x{self.type:04X}")

    @property
    def comprehensionRequired(self) -> bool:
        return self.type < 0x8000

    def encode(self) -> bytes:
        length = len(self.value)
        if length > 0xFFFF:
            raise ValueError("an attribute value is at most 65535 bytes")
        padding = self.padding if self.padding is not None else bytes(paddingLength(length))
        return _TYPE_LENGTH.pack(self.type, length) + self.value + padding


@attrs.frozen
class Message:
    """
    A STUN message.

    @ivar transactionID: the 96-bit transaction ID.
    @ivar cookie: L{MAGIC_COOKIE}, or the first 32 bits of the 128-bit
        transaction ID of a classic RFC 3489 message.
    """

    method: int
    messageClass: int
    transactionID: bytes = attrs.field()
    attributes: tuple[Attribute, ...] = ()
    cookie: int = MAGIC_COOKIE

    @transactionID.validator
    def _checkTransactionID(self, attribute: attrs.Attribute[bytes], value: bytes) -> None:
        if len(value) != 12:
            raise ValueError("a transaction ID is 12 bytes (after the magic cookie)")

    @property
    def classic(self) -> bool:
        return self.cookie != MAGIC_COOKIE

    def get(self, attributeType: int) -> Attribute | None:
        """
        The first attribute of type C{attributeType}, or L{None}.
        """
        for attribute in self.attributes:
            if attribute.type == attributeType:
                return attribute
        return None

    def getValue(self, attributeType: int) -> bytes | None:
        """
        The value of the first attribute of type C{attributeType}, or L{None}.
        """
        attribute = self.get(attributeType)
        return None if attribute is None else attribute.value


def iterAttributes(data: bytes, header: Header | None = None) -> Iterator[tuple[int, int, int]]:
    """
    Walk the attributes of the message C{data}, whose header was checked.

    @param header: the decoded header, for the L{MalformedMessage} raised.
    @return: an iterator of (type, value offset, value length).
    @raise MalformedMessage: when an attribute runs past the end of the
        message.
    """
    end = len(data)
    offset = HEADER_LENGTH
    while offset < end:
        if end - offset < 4:
            raise MalformedMessage("truncated attribute header", header or decodeHeader(data))
        attributeType, length = _TYPE_LENGTH.unpack_from(data, offset)
        valueOffset = offset + 4
        offset = valueOffset + length + (-length & 3)
        if offset > end:
            raise MalformedMessage("attribute longer than the message", header or decodeHeader(data))
        yield attributeType, valueOffset, length


def fingerprint(data: bytes | bytearray | memoryview) -> int:
    """
    The FINGERPRINT value of the message C{data}: everything before the
    FINGERPRINT attribute, with the length field already counting it.
    """
    return zlib.crc32(data) ^ FINGERPRINT_XOR


_FINGERPRINT_HEADER = _TYPE_LENGTH.pack(FINGERPRINT, 4)


def endsWithFingerprint(data: bytes) -> bool:
    """
    Whether the message C{data} ends with what looks like a FINGERPRINT
    attribute: it is then checked before the attributes are walked, so that
    a corrupted message is dropped as FINGERPRINT asks, not answered 400.
    """
    return len(data) >= HEADER_LENGTH + 8 and data[-8:-4] == _FINGERPRINT_HEADER


def checkFingerprint(data: bytes, offset: int) -> bool:
    """
    Whether the FINGERPRINT attribute whose value starts at C{offset} in the
    message C{data} is the last attribute and matches.
    """
    if offset + 4 != len(data):
        return False
    return bool(fingerprint(memoryview(data)[: offset - 4]) == _UINT32.unpack_from(data, offset)[0])


def decode(data: bytes) -> Message:
    """
    Decode the single STUN message C{data} (a whole datagram, or one framed
    message of a stream), checking FINGERPRINT when present.

    @raise NotSTUN: see L{decodeHeader}; also when the length field does not
        match the size of C{data}.
    @raise MalformedMessage: when the attributes do not fill the message.
    @raise BadFingerprint: when FINGERPRINT is wrong or not last.
    """
    header = decodeHeader(data)
    if HEADER_LENGTH + header.length != len(data):
        raise NotSTUN("the length field does not match the message size")
    if endsWithFingerprint(data) and not checkFingerprint(data, len(data) - 4):
        raise BadFingerprint("FINGERPRINT does not match")
    attributes: list[Attribute] = []
    for attributeType, offset, length in iterAttributes(data, header):
        if attributeType == FINGERPRINT and not (length == 4 and checkFingerprint(data, offset)):
            raise BadFingerprint("FINGERPRINT does not match, or is not the last attribute")
        end = offset + length
        attributes.append(Attribute(attributeType, data[offset:end], data[end : end + (-length & 3)]))
    return Message(header.method, header.messageClass, header.transactionID, tuple(attributes), header.cookie)


def encode(message: Message, *, addFingerprint: bool = False) -> bytes:
    """
    The bytes of C{message}.

    @param addFingerprint: append a FINGERPRINT attribute computed over the
        message (which must not hold one already).
    """
    body = b"".join(attribute.encode() for attribute in message.attributes)
    if addFingerprint:
        if message.get(FINGERPRINT) is not None:
            raise ValueError("the message already has a FINGERPRINT")
        length = len(body) + 8
    else:
        length = len(body)
    if length > 0xFFFF:
        raise ValueError("a STUN message body is at most 65535 bytes")
    data = (
        _TYPE_LENGTH.pack(messageType(message.method, message.messageClass), length)
        + _UINT32.pack(message.cookie)
        + message.transactionID
        + body
    )
    if addFingerprint:
        data += _FINGERPRINT_HEADER + _UINT32.pack(fingerprint(data))
    return data


# -- attribute values ----------------------------------------------------------


def _packHost(host: str) -> tuple[int, bytes]:
    # An IPv6 source may carry a zone ("fe80::1%eth0"); the wire has none.
    host = host.partition("%")[0]
    if ":" in host:
        return _IPV6, socket.inet_pton(socket.AF_INET6, host)
    return _IPV4, socket.inet_pton(socket.AF_INET, host)


def encodeAddress(host: str, port: int) -> bytes:
    """
    A MAPPED-ADDRESS value (also RESPONSE-ORIGIN, OTHER-ADDRESS,
    SOURCE-ADDRESS, CHANGED-ADDRESS, ALTERNATE-SERVER).
    """
    family, packed = _packHost(host)
    return struct.pack("!BBH", 0, family, port) + packed


def decodeAddress(value: bytes) -> tuple[str, int]:
    """
    The (host, port) of a MAPPED-ADDRESS-like value.

    @raise ValueError: for an unknown family or a wrong length.
    """
    if len(value) == 8 and value[1] == _IPV4:
        return socket.inet_ntop(socket.AF_INET, value[4:]), (value[2] << 8) | value[3]
    if len(value) == 20 and value[1] == _IPV6:
        return socket.inet_ntop(socket.AF_INET6, value[4:]), (value[2] << 8) | value[3]
    raise ValueError("an address value is family 1 with 4 address bytes or family 2 with 16")


def _xorPad(transactionID: bytes, size: int) -> int:
    return int.from_bytes((MAGIC_COOKIE_BYTES + transactionID)[:size], "big")


def encodeXorAddress(host: str, port: int, transactionID: bytes) -> bytes:
    """
    An XOR-MAPPED-ADDRESS value: the port XORed with the top of the magic
    cookie, the address with the cookie (IPv4) or the cookie and the
    transaction ID (IPv6).
    """
    family, packed = _packHost(host)
    address = int.from_bytes(packed, "big") ^ _xorPad(transactionID, len(packed))
    return struct.pack("!BBH", 0, family, port ^ (MAGIC_COOKIE >> 16)) + address.to_bytes(len(packed), "big")


def decodeXorAddress(value: bytes, transactionID: bytes) -> tuple[str, int]:
    """
    The (host, port) of an XOR-MAPPED-ADDRESS value.

    @raise ValueError: for an unknown family or a wrong length.
    """
    _, port = decodeAddress(value)
    packed = value[4:]
    address = int.from_bytes(packed, "big") ^ _xorPad(transactionID, len(packed))
    family = socket.AF_INET if len(packed) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, address.to_bytes(len(packed), "big")), port ^ (MAGIC_COOKIE >> 16)


def encodeErrorCode(code: int, reason: str | None = None) -> bytes:
    """
    An ERROR-CODE value; C{reason} defaults to the RFC's phrase.
    """
    if not 300 <= code <= 699:
        raise ValueError("a STUN error code is from 300 to 699")
    text = REASONS.get(code, "Error") if reason is None else reason
    return struct.pack("!HBB", 0, code // 100, code % 100) + text.encode("utf-8")


def decodeErrorCode(value: bytes) -> tuple[int, str]:
    """
    The (code, reason) of an ERROR-CODE value.

    @raise ValueError: when shorter than 4 bytes or the reason is not UTF-8.
    """
    if len(value) < 4:
        raise ValueError("an ERROR-CODE value is at least 4 bytes")
    return (value[2] & 0x07) * 100 + value[3], value[4:].decode("utf-8")


def encodeUnknownAttributes(types: Iterable[int], *, classic: bool = False) -> bytes:
    """
    An UNKNOWN-ATTRIBUTES value. RFC 3489 had no padding and repeated one
    type to fill 32 bits: C{classic} does the same for classic clients.
    """
    listed = list(types)
    if classic and len(listed) % 2:
        listed.append(listed[-1])
    return struct.pack(f"!{len(listed)}H", *listed)


def decodeUnknownAttributes(value: bytes) -> list[int]:
    """
    The attribute types listed in an UNKNOWN-ATTRIBUTES value.
    """
    if len(value) % 2:
        raise ValueError("an UNKNOWN-ATTRIBUTES value is a list of 16-bit types")
    return list(struct.unpack(f"!{len(value) // 2}H", value))


def encodeChangeRequest(changeIP: bool = False, changePort: bool = False) -> bytes:
    """
    A CHANGE-REQUEST value.
    """
    return _UINT32.pack((CHANGE_IP if changeIP else 0) | (CHANGE_PORT if changePort else 0))


def decodeChangeRequest(value: bytes) -> tuple[bool, bool]:
    """
    The (change IP, change port) flags of a CHANGE-REQUEST value.
    """
    if len(value) != 4:
        raise ValueError("a CHANGE-REQUEST value is 4 bytes")
    flags = _UINT32.unpack(value)[0]
    return bool(flags & CHANGE_IP), bool(flags & CHANGE_PORT)


def encodeResponsePort(port: int) -> bytes:
    """
    A RESPONSE-PORT value: the port and 2 bytes of padding inside the value.
    """
    return struct.pack("!HH", port, 0)


def decodeResponsePort(value: bytes) -> int:
    """
    The port of a RESPONSE-PORT value.
    """
    if len(value) != 4:
        raise ValueError("a RESPONSE-PORT value is 4 bytes")
    return int((value[0] << 8) | value[1])


def encodeSoftware(text: str) -> bytes:
    """
    A SOFTWARE value: fewer than 128 characters of UTF-8 (RFC 8489 section
    14.14).
    """
    if len(text) >= 128:
        raise ValueError("SOFTWARE is fewer than 128 characters")
    return text.encode("utf-8")
