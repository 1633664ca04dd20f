"""
Tests for L{aetasip.stun.codec}: the RFC 5769 test vectors, FINGERPRINT,
attribute values and the errors of malformed bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from twisted.trial.unittest import SynchronousTestCase

from aetasip.stun import codec

# RFC 5769 section 2: the short-term password of every vector.
PASSWORD = b"VOkJxbRl1RmTxUk/WvJxBt"
TRANSACTION_ID = bytes.fromhex("b7e7a701bc34d686fa87dfae")

# RFC 5769 section 2.1, "Sample Request".
SAMPLE_REQUEST = bytes.fromhex(
    "000100582112a442b7e7a701bc34d686fa87dfae"
    "802200105354554e207465737420636c69656e74"
    "002400046e0001ff"
    "80290008932ff9b151263b36"
    "000600096576746a3a68367659202020"
    "000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2"
    "80280004e57a3bcf"
)

# RFC 5769 section 2.2, "Sample IPv4 Response".
SAMPLE_IPV4_RESPONSE = bytes.fromhex(
    "0101003c2112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000080001a147e112a643"
    "000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7"
    "80280004c07d4c96"
)

# RFC 5769 section 2.3, "Sample IPv6 Response".
SAMPLE_IPV6_RESPONSE = bytes.fromhex(
    "010100482112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d9"
    "00080014a382954e4be67bf11784c97c8292c275bfe3ed41"
    "80280004c8fb0b4c"
)


def messageIntegrity(data: bytes, key: bytes) -> bytes:
    """
    The MESSAGE-INTEGRITY of the message C{data} (which ends just before that
    attribute): HMAC-SHA1 with the length field counting the attribute.
    """
    adjusted = data[:2] + struct.pack("!H", len(data) - 20 + 24) + data[4:]
    return hmac.new(key, adjusted, hashlib.sha1).digest()


class VectorTests(SynchronousTestCase):
    """
    The RFC 5769 test vectors decode to the documented values and encode
    back to the same bytes.
    """

    def assertIntegrity(self, data: bytes) -> None:
        offset = data.index(b"\x00\x08\x00\x14", 20)
        self.assertEqual(messageIntegrity(data[:offset], PASSWORD), data[offset + 4 : offset + 24])

    def test_sample_request_decodes(self) -> None:
        message = codec.decode(SAMPLE_REQUEST)
        self.assertEqual(
            (message.method, message.messageClass, message.transactionID, message.classic),
            (codec.BINDING, codec.REQUEST, TRANSACTION_ID, False),
        )
        self.assertEqual(
            [a.type for a in message.attributes],
            [
                codec.SOFTWARE,
                codec.PRIORITY,
                codec.ICE_CONTROLLED,
                codec.USERNAME,
                codec.MESSAGE_INTEGRITY,
                codec.FINGERPRINT,
            ],
        )
        self.assertEqual(message.getValue(codec.SOFTWARE), b"STUN test client")
        self.assertEqual(message.getValue(codec.PRIORITY), bytes.fromhex("6e0001ff"))
        username = message.get(codec.USERNAME)
        assert username is not None
        self.assertEqual((username.value, username.padding), (b"evtj:h6vY", b"   "))
        self.assertEqual(message.getValue(codec.FINGERPRINT), bytes.fromhex("e57a3bcf"))
        self.assertIntegrity(SAMPLE_REQUEST)

    def test_sample_request_reencodes_exactly(self) -> None:
        self.assertEqual(codec.encode(codec.decode(SAMPLE_REQUEST)), SAMPLE_REQUEST)

    def test_ipv4_response_decodes(self) -> None:
        message = codec.decode(SAMPLE_IPV4_RESPONSE)
        self.assertEqual((message.method, message.messageClass), (codec.BINDING, codec.SUCCESS_RESPONSE))
        self.assertEqual(message.getValue(codec.SOFTWARE), b"test vector")
        value = message.getValue(codec.XOR_MAPPED_ADDRESS)
        assert value is not None
        self.assertEqual(codec.decodeXorAddress(value, message.transactionID), ("192.0.2.1", 32853))
        self.assertIntegrity(SAMPLE_IPV4_RESPONSE)

    def test_ipv6_response_decodes(self) -> None:
        message = codec.decode(SAMPLE_IPV6_RESPONSE)
        value = message.getValue(codec.XOR_MAPPED_ADDRESS)
        assert value is not None
        self.assertEqual(
            codec.decodeXorAddress(value, message.transactionID),
            ("2001:db8:1234:5678:11:2233:4455:6677", 32853),
        )
        self.assertIntegrity(SAMPLE_IPV6_RESPONSE)

    def test_responses_reencode_exactly(self) -> None:
        for vector in (SAMPLE_IPV4_RESPONSE, SAMPLE_IPV6_RESPONSE):
            self.assertEqual(codec.encode(codec.decode(vector)), vector)

    def test_responses_built_from_values(self) -> None:
        """
        Built from the documented values (the padding of SOFTWARE is a
        space, as in the RFC), with MESSAGE-INTEGRITY computed here and
        FINGERPRINT by the encoder, the responses are the vectors.
        """
        for vector, host in (
            (SAMPLE_IPV4_RESPONSE, "192.0.2.1"),
            (SAMPLE_IPV6_RESPONSE, "2001:db8:1234:5678:11:2233:4455:6677"),
        ):
            attributes = (
                codec.Attribute(codec.SOFTWARE, b"test vector", b" "),
                codec.Attribute(codec.XOR_MAPPED_ADDRESS, codec.encodeXorAddress(host, 32853, TRANSACTION_ID)),
            )
            partial = codec.encode(codec.Message(codec.BINDING, codec.SUCCESS_RESPONSE, TRANSACTION_ID, attributes))
            integrity = codec.Attribute(codec.MESSAGE_INTEGRITY, messageIntegrity(partial, PASSWORD))
            message = codec.Message(codec.BINDING, codec.SUCCESS_RESPONSE, TRANSACTION_ID, (*attributes, integrity))
            self.assertEqual(codec.encode(message, addFingerprint=True), vector)


class FingerprintTests(SynchronousTestCase):
    """
    FINGERPRINT: CRC-32 of the message before it, XOR 0x5354554e, checked
    when present.
    """

    def test_value(self) -> None:
        for vector in (SAMPLE_REQUEST, SAMPLE_IPV4_RESPONSE, SAMPLE_IPV6_RESPONSE):
            self.assertEqual(codec.fingerprint(vector[:-8]), int.from_bytes(vector[-4:], "big"))
            self.assertTrue(codec.checkFingerprint(vector, len(vector) - 4))

    def test_any_changed_byte_is_detected(self) -> None:
        for index in range(20, len(SAMPLE_IPV4_RESPONSE) - 8):
            changed = bytearray(SAMPLE_IPV4_RESPONSE)
            changed[index] ^= 0x01
            self.assertRaises(codec.BadFingerprint, codec.decode, bytes(changed))

    def test_wrong_value(self) -> None:
        changed = SAMPLE_REQUEST[:-1] + bytes([SAMPLE_REQUEST[-1] ^ 0xFF])
        self.assertRaises(codec.BadFingerprint, codec.decode, changed)

    def test_not_last(self) -> None:
        """
        A FINGERPRINT followed by another attribute is refused, even when
        its value matches what precedes it.
        """
        body = SAMPLE_REQUEST[20:] + struct.pack("!HH4s", codec.SOFTWARE, 4, b"more")
        data = SAMPLE_REQUEST[:2] + struct.pack("!H", len(body)) + SAMPLE_REQUEST[4:20] + body
        self.assertRaises(codec.BadFingerprint, codec.decode, data)

    def test_wrong_length(self) -> None:
        head = struct.pack("!HH", 0x0001, 12) + codec.MAGIC_COOKIE_BYTES + TRANSACTION_ID
        self.assertRaises(
            codec.BadFingerprint, codec.decode, head + struct.pack("!HH8s", codec.FINGERPRINT, 8, bytes(8))
        )

    def test_added_by_encoder(self) -> None:
        message = codec.Message(codec.BINDING, codec.REQUEST, TRANSACTION_ID)
        data = codec.encode(message, addFingerprint=True)
        self.assertEqual(len(data), 28)
        self.assertEqual(codec.decode(data).getValue(codec.FINGERPRINT), data[-4:])
        self.assertRaises(ValueError, codec.encode, codec.decode(data), addFingerprint=True)


class HeaderTests(SynchronousTestCase):
    """
    Message types interleave method and class bits; headers are checked.
    """

    def test_message_types(self) -> None:
        self.assertEqual(codec.messageType(codec.BINDING, codec.REQUEST), 0x0001)
        self.assertEqual(codec.messageType(codec.BINDING, codec.INDICATION), 0x0011)
        self.assertEqual(codec.messageType(codec.BINDING, codec.SUCCESS_RESPONSE), 0x0101)
        self.assertEqual(codec.messageType(codec.BINDING, codec.ERROR_RESPONSE), 0x0111)
        self.assertEqual(codec.messageType(0x003, codec.REQUEST), 0x0003)  # TURN Allocate
        for method in range(0x1000):
            for messageClass in range(4):
                value = codec.messageType(method, messageClass)
                self.assertLess(value, 0x4000)
                self.assertEqual(codec.splitMessageType(value), (method, messageClass))

    def test_short(self) -> None:
        self.assertRaises(codec.NotSTUN, codec.decode, SAMPLE_REQUEST[:19])
        self.assertRaises(codec.NotSTUN, codec.decode, b"")

    def test_first_bits(self) -> None:
        self.assertRaises(codec.NotSTUN, codec.decode, b"\x40" + SAMPLE_REQUEST[1:])
        self.assertRaises(codec.NotSTUN, codec.decode, b"\x80" + SAMPLE_REQUEST[1:])

    def test_length_not_multiple_of_4(self) -> None:
        data = SAMPLE_REQUEST[:2] + struct.pack("!H", 0x57) + SAMPLE_REQUEST[4:-1]
        self.assertRaises(codec.NotSTUN, codec.decode, data)

    def test_length_does_not_match(self) -> None:
        self.assertRaises(codec.NotSTUN, codec.decode, SAMPLE_REQUEST + b"\x00\x00\x00\x00")
        self.assertRaises(codec.NotSTUN, codec.decode, SAMPLE_REQUEST[:-4])

    def test_huge_length(self) -> None:
        data = SAMPLE_REQUEST[:2] + b"\xff\xfc" + SAMPLE_REQUEST[4:]
        self.assertRaises(codec.NotSTUN, codec.decode, data)

    def test_classic_message(self) -> None:
        """
        Without the magic cookie, a message is a classic RFC 3489 one; the
        cookie field is the start of its 128-bit transaction ID.
        """
        data = b"\x00\x01\x00\x00" + bytes(range(16))
        message = codec.decode(data)
        self.assertTrue(message.classic)
        self.assertEqual(message.cookie, 0x00010203)
        self.assertEqual(codec.encode(message), data)

    def test_stream_frame_length(self) -> None:
        self.assertEqual(codec.streamFrameLength(SAMPLE_REQUEST), len(SAMPLE_REQUEST))
        self.assertEqual(codec.streamFrameLength(b"\x00\x01\xff\xfc" + bytes(16)), 20 + 0xFFFC)
        self.assertRaises(codec.NotSTUN, codec.streamFrameLength, b"GET / HTTP/1.1\r\n\r\n    ")
        self.assertRaises(codec.NotSTUN, codec.streamFrameLength, b"\x00\x01\x00\x03" + bytes(16))


class MalformedTests(SynchronousTestCase):
    """
    A sound header over broken attributes raises L{codec.MalformedMessage}
    carrying the header, so that a request can get a 400.
    """

    def header(self, length: int) -> bytes:
        return struct.pack("!HH", 0x0001, length) + codec.MAGIC_COOKIE_BYTES + TRANSACTION_ID

    def test_truncated_attribute(self) -> None:
        data = self.header(8) + struct.pack("!HH", codec.SOFTWARE, 16) + b"abcd"
        error = self.assertRaises(codec.MalformedMessage, codec.decode, data)
        self.assertEqual(
            (error.header.method, error.header.messageClass, error.header.transactionID),
            (codec.BINDING, codec.REQUEST, TRANSACTION_ID),
        )

    def test_attribute_padding_missing(self) -> None:
        data = self.header(8) + struct.pack("!HH", codec.SOFTWARE, 5) + b"abcd"
        self.assertRaises(codec.MalformedMessage, codec.decode, data)

    def test_truncated_attribute_header(self) -> None:
        data = self.header(4) + struct.pack("!HH", codec.SOFTWARE, 0)
        self.assertEqual(codec.decode(data).getValue(codec.SOFTWARE), b"")
        # A length of 4 with a 4-byte attribute header announcing 4 more.
        data = self.header(4) + struct.pack("!HH", codec.SOFTWARE, 4)
        self.assertRaises(codec.MalformedMessage, codec.decode, data)


class AttributeValueTests(SynchronousTestCase):
    """
    The values of the attributes the server reads and writes.
    """

    def test_address(self) -> None:
        for host, port in (("192.0.2.1", 3478), ("2001:db8::1", 65535), ("0.0.0.0", 0)):
            self.assertEqual(codec.decodeAddress(codec.encodeAddress(host, port)), (host, port))
        self.assertEqual(codec.encodeAddress("192.0.2.1", 32853), bytes.fromhex("00018055c0000201"))

    def test_address_zone_dropped(self) -> None:
        self.assertEqual(codec.encodeAddress("fe80::1%eth0", 5), codec.encodeAddress("fe80::1", 5))

    def test_address_errors(self) -> None:
        self.assertRaises(ValueError, codec.decodeAddress, bytes.fromhex("00038055c0000201"))
        self.assertRaises(ValueError, codec.decodeAddress, bytes.fromhex("00018055c00002"))
        self.assertRaises(ValueError, codec.decodeAddress, bytes.fromhex("00028055c0000201"))

    def test_xor_address(self) -> None:
        for host in ("203.0.113.9", "2001:db8::dead:beef"):
            value = codec.encodeXorAddress(host, 40000, TRANSACTION_ID)
            self.assertEqual(codec.decodeXorAddress(value, TRANSACTION_ID), (host, 40000))
            self.assertNotEqual(value, codec.encodeAddress(host, 40000))

    def test_error_code(self) -> None:
        value = codec.encodeErrorCode(420)
        self.assertEqual(value, b"\x00\x00\x04\x14Unknown Attribute")
        self.assertEqual(codec.decodeErrorCode(value), (420, "Unknown Attribute"))
        self.assertEqual(codec.decodeErrorCode(codec.encodeErrorCode(400, "Bad")), (400, "Bad"))
        self.assertRaises(ValueError, codec.encodeErrorCode, 200)
        self.assertRaises(ValueError, codec.decodeErrorCode, b"\x00\x00\x04")

    def test_unknown_attributes(self) -> None:
        self.assertEqual(codec.encodeUnknownAttributes([0x0002, 0x0026, 0x7FFF]), bytes.fromhex("000200267fff"))
        self.assertEqual(
            codec.encodeUnknownAttributes([0x0002, 0x0026, 0x7FFF], classic=True), bytes.fromhex("000200267fff7fff")
        )
        self.assertEqual(codec.decodeUnknownAttributes(bytes.fromhex("00020026")), [0x0002, 0x0026])
        self.assertRaises(ValueError, codec.decodeUnknownAttributes, b"\x00")

    def test_change_request(self) -> None:
        self.assertEqual(codec.encodeChangeRequest(True, True), b"\x00\x00\x00\x06")
        self.assertEqual(codec.decodeChangeRequest(b"\x00\x00\x00\x04"), (True, False))
        self.assertEqual(codec.decodeChangeRequest(b"\x00\x00\x00\x02"), (False, True))
        self.assertRaises(ValueError, codec.decodeChangeRequest, b"\x00\x00\x02")

    def test_response_port(self) -> None:
        self.assertEqual(codec.encodeResponsePort(3479), b"\x0d\x97\x00\x00")
        self.assertEqual(codec.decodeResponsePort(b"\x0d\x97\x00\x00"), 3479)
        self.assertRaises(ValueError, codec.decodeResponsePort, b"\x0d\x97")

    def test_software(self) -> None:
        self.assertEqual(codec.encodeSoftware("aetasip/1 é"), "aetasip/1 é".encode())
        self.assertRaises(ValueError, codec.encodeSoftware, "x" * 128)

    def test_attribute_padding(self) -> None:
        self.assertEqual(codec.Attribute(codec.USERNAME, b"abcde").encode(), b"\x00\x06\x00\x05abcde\x00\x00\x00")
        self.assertEqual(codec.Attribute(codec.USERNAME, b"abcde", b"   ").encode(), b"\x00\x06\x00\x05abcde   ")
        self.assertRaises(ValueError, codec.Attribute, codec.USERNAME, b"abcde", b" ")
        self.assertEqual(codec.Attribute(0x7FFE, b"").name, "0x7FFE")
        self.assertEqual(codec.Attribute(codec.OTHER_ADDRESS, b"").name, "OTHER-ADDRESS")
        self.assertFalse(codec.Attribute(codec.SOFTWARE, b"").comprehensionRequired)

    def test_transaction_id_length(self) -> None:
        self.assertRaises(ValueError, codec.Message, codec.BINDING, codec.REQUEST, b"short")
