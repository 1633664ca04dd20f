"""
Tests for L{aetasip.stun.server}: request handling driven with bytes and a
L{Clock}, no sockets.
"""

from __future__ import annotations

import os
import random
import struct

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from aetasip.stun import codec
from aetasip.stun.server import (
    ALTERNATE_ADDRESS,
    ALTERNATE_BOTH,
    ALTERNATE_PORT,
    PRIMARY,
    Endpoint,
    STUNServer,
)

from .test_stun_codec import SAMPLE_REQUEST

SOURCE = ("198.51.100.7", 40001)
SOURCE6 = ("2001:db8:77::7", 40001)
TID = bytes(range(12))

# One server address set with every RFC 5780 role.
FULL = {
    PRIMARY: ("192.0.2.1", 3478),
    ALTERNATE_PORT: ("192.0.2.1", 3479),
    ALTERNATE_ADDRESS: ("192.0.2.2", 3478),
    ALTERNATE_BOTH: ("192.0.2.2", 3479),
}


def request(
    *attributes: codec.Attribute,
    method: int = codec.BINDING,
    messageClass: int = codec.REQUEST,
    transactionID: bytes = TID,
    fingerprint: bool = False,
) -> bytes:
    return codec.encode(codec.Message(method, messageClass, transactionID, attributes), addFingerprint=fingerprint)


def classicRequest(*attributes: codec.Attribute, method: int = codec.BINDING) -> bytes:
    """
    An RFC 3489 request: a 128-bit transaction ID instead of the cookie.
    """
    return codec.encode(codec.Message(method, codec.REQUEST, TID, attributes, cookie=0x0BADC0DE))


def change(changeIP: bool, changePort: bool) -> codec.Attribute:
    return codec.Attribute(codec.CHANGE_REQUEST, codec.encodeChangeRequest(changeIP, changePort))


class ServerTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.server = STUNServer(software="aetasip/test", clock=self.clock.seconds)

    def endpoint(self, role: int = PRIMARY, addresses: dict[int, tuple[str, int]] | None = None) -> Endpoint:
        return self.server.endpoint(role, addresses or {PRIMARY: ("192.0.2.1", 3478)})

    def answer(
        self, data: bytes, endpoint: Endpoint | None = None, source: tuple[str, int] = SOURCE
    ) -> tuple[codec.Message, tuple[str, int], int]:
        """
        The decoded reply to C{data}, its destination and sending role.
        """
        reply = self.server.datagram(data, source, endpoint or self.endpoint())
        assert reply is not None, "no answer"
        response = codec.decode(reply[0])
        self.assertEqual(response.method, codec.splitMessageType(int.from_bytes(data[:2], "big"))[0])
        return response, reply[1], reply[2]

    def assertSilent(self, data: bytes, endpoint: Endpoint | None = None) -> None:
        self.assertIsNone(self.server.datagram(data, SOURCE, endpoint or self.endpoint()))

    def assertError(self, data: bytes, code: int, endpoint: Endpoint | None = None) -> codec.Message:
        response, destination, role = self.answer(data, endpoint)
        self.assertEqual(response.messageClass, codec.ERROR_RESPONSE)
        value = response.getValue(codec.ERROR_CODE)
        assert value is not None
        self.assertEqual(codec.decodeErrorCode(value), (code, codec.REASONS[code]))
        self.assertEqual(response.transactionID, TID)
        self.assertEqual((destination, role), (SOURCE, PRIMARY))
        return response

    def mapped(self, response: codec.Message) -> tuple[str, int]:
        value = response.getValue(codec.XOR_MAPPED_ADDRESS)
        assert value is not None
        return codec.decodeXorAddress(value, response.transactionID)

    def address(self, response: codec.Message, attributeType: int) -> tuple[str, int] | None:
        value = response.getValue(attributeType)
        return None if value is None else codec.decodeAddress(value)


class BindingTests(ServerTestCase):
    """
    Binding requests are answered with the source address.
    """

    def test_ipv4(self) -> None:
        response, destination, role = self.answer(request())
        self.assertEqual((response.messageClass, response.transactionID), (codec.SUCCESS_RESPONSE, TID))
        self.assertEqual(self.mapped(response), SOURCE)
        self.assertEqual((destination, role), (SOURCE, PRIMARY))
        self.assertEqual(response.getValue(codec.SOFTWARE), b"aetasip/test")
        self.assertIsNone(response.get(codec.MAPPED_ADDRESS))

    def test_ipv6(self) -> None:
        endpoint = self.server.endpoint(PRIMARY, {PRIMARY: ("2001:db8::1", 3478)})
        response, destination, _ = self.answer(request(), endpoint, SOURCE6)
        self.assertEqual(self.mapped(response), SOURCE6)
        self.assertEqual(destination, SOURCE6)
        self.assertEqual(self.address(response, codec.RESPONSE_ORIGIN), ("2001:db8::1", 3478))

    def test_ipv6_zone(self) -> None:
        endpoint = self.server.endpoint(PRIMARY, {PRIMARY: ("::", 3478)})
        response, _, _ = self.answer(request(), endpoint, ("fe80::1%eth0", 5000))
        self.assertEqual(self.mapped(response), ("fe80::1", 5000))

    def test_fingerprint_last(self) -> None:
        """
        Every response ends with a FINGERPRINT (checked by L{codec.decode}).
        """
        response, _, _ = self.answer(request())
        self.assertEqual(response.attributes[-1].type, codec.FINGERPRINT)
        response = self.assertError(request(method=0x003), 400)
        self.assertEqual(response.attributes[-1].type, codec.FINGERPRINT)

    def test_attributes_take_the_same_answer(self) -> None:
        """
        The short path (no attributes) and the general one (here SOFTWARE and
        FINGERPRINT) answer alike.
        """
        plain = self.server.datagram(request(), SOURCE, self.endpoint())
        general = self.server.datagram(
            request(codec.Attribute(codec.SOFTWARE, b"codec 1.0"), fingerprint=True), SOURCE, self.endpoint()
        )
        self.assertEqual(plain, general)

    def test_response_origin(self) -> None:
        response, _, _ = self.answer(request())
        self.assertEqual(self.address(response, codec.RESPONSE_ORIGIN), ("192.0.2.1", 3478))

    def test_wildcard_has_no_response_origin(self) -> None:
        endpoint = self.server.endpoint(PRIMARY, {PRIMARY: ("0.0.0.0", 3478)})
        response, _, _ = self.answer(request(), endpoint)
        self.assertIsNone(response.get(codec.RESPONSE_ORIGIN))

    def test_stream_local_address(self) -> None:
        """
        Over TCP the connection's own local address is RESPONSE-ORIGIN, even
        on a wildcard socket.
        """
        endpoint = self.server.endpoint(PRIMARY, {PRIMARY: ("0.0.0.0", 3478)}, local=("192.0.2.9", 3478), stream=True)
        data = self.server.stream(request(), SOURCE, endpoint)
        assert data is not None
        response = codec.decode(data)
        self.assertEqual(self.mapped(response), SOURCE)
        self.assertEqual(self.address(response, codec.RESPONSE_ORIGIN), ("192.0.2.9", 3478))

    def test_no_software(self) -> None:
        server = STUNServer()
        reply = server.datagram(request(), SOURCE, server.endpoint(PRIMARY, {PRIMARY: ("0.0.0.0", 1)}))
        assert reply is not None
        self.assertEqual(
            [a.type for a in codec.decode(reply[0]).attributes], [codec.XOR_MAPPED_ADDRESS, codec.FINGERPRINT]
        )

    def test_rfc5769_sample_request(self) -> None:
        """
        ICE's attributes and short-term credentials are understood and
        ignored: the server does not authenticate Binding.
        """
        response, _, _ = self.answer(SAMPLE_REQUEST)
        self.assertEqual(response.messageClass, codec.SUCCESS_RESPONSE)
        self.assertEqual(response.transactionID, SAMPLE_REQUEST[8:20])

    def test_indication_is_silent(self) -> None:
        self.assertSilent(request(messageClass=codec.INDICATION))
        self.assertSilent(request(messageClass=codec.INDICATION, fingerprint=True))
        self.assertEqual(self.server.counters.indications, 2)

    def test_responses_are_ignored(self) -> None:
        self.assertSilent(request(messageClass=codec.SUCCESS_RESPONSE))
        self.assertSilent(request(messageClass=codec.ERROR_RESPONSE))
        self.assertEqual(self.server.counters.ignored, 2)

    def test_optional_unknown_attribute(self) -> None:
        response, _, _ = self.answer(request(codec.Attribute(0xC001, b"vendor")))
        self.assertEqual(response.messageClass, codec.SUCCESS_RESPONSE)


class UnknownAttributeTests(ServerTestCase):
    """
    Unknown comprehension-required attributes get 420 with
    UNKNOWN-ATTRIBUTES.
    """

    def unknown(self, response: codec.Message) -> list[int]:
        value = response.getValue(codec.UNKNOWN_ATTRIBUTES)
        assert value is not None
        return codec.decodeUnknownAttributes(value)

    def test_listed_once_in_order(self) -> None:
        data = request(
            codec.Attribute(0x7F01, b"a"),
            codec.Attribute(codec.SOFTWARE, b"x"),
            codec.Attribute(0x0031, b""),
            codec.Attribute(0x7F01, b"b"),
        )
        self.assertEqual(self.unknown(self.assertError(data, 420)), [0x7F01, 0x0031])

    def test_padding_and_rfc3489_attributes(self) -> None:
        """
        PADDING is not supported; RESPONSE-ADDRESS would make the server a
        reflector (RFC 5389 section 12.2 expects 420 for it).
        """
        for attributeType in (codec.PADDING, codec.RESPONSE_ADDRESS, codec.PASSWORD):
            data = request(codec.Attribute(attributeType, bytes(8)))
            self.assertEqual(self.unknown(self.assertError(data, 420)), [attributeType])

    def test_after_message_integrity_ignored(self) -> None:
        """
        RFC 8489 section 14.5: attributes after MESSAGE-INTEGRITY, but
        FINGERPRINT, are ignored.
        """
        data = request(
            codec.Attribute(codec.USERNAME, b"user"),
            codec.Attribute(codec.MESSAGE_INTEGRITY, bytes(20)),
            codec.Attribute(0x7F01, b"ignored"),
            fingerprint=True,
        )
        response, _, _ = self.answer(data)
        self.assertEqual(response.messageClass, codec.SUCCESS_RESPONSE)

    def test_classic_response_shape(self) -> None:
        """
        A classic client's 420 lists an odd number of types with one
        repeated, and pads the reason with spaces (RFC 3489 11.2.9, 11.2.10).
        """
        reply = self.server.datagram(
            classicRequest(codec.Attribute(codec.RESPONSE_ADDRESS, bytes(8))), SOURCE, self.endpoint()
        )
        assert reply is not None
        response = codec.decode(reply[0])
        self.assertTrue(response.classic)
        self.assertEqual(response.getValue(codec.UNKNOWN_ATTRIBUTES), b"\x00\x02\x00\x02")
        value = response.getValue(codec.ERROR_CODE)
        assert value is not None
        self.assertEqual(value[4:], b"Unknown Attribute   ")
        self.assertIsNone(response.get(codec.FINGERPRINT))


class MalformedTests(ServerTestCase):
    """
    The malformed inputs of the issue: a 400 where RFC 8489 gives one,
    silence for what is not STUN, never an exception.
    """

    def test_bad_cookie_is_a_classic_client(self) -> None:
        """
        A Binding request without the cookie is an RFC 3489 client's: it is
        answered with MAPPED-ADDRESS.
        """
        reply = self.server.datagram(classicRequest(), SOURCE, self.endpoint())
        assert reply is not None
        self.assertEqual(reply[0][4:20], classicRequest()[4:20])
        self.assertEqual(codec.decode(reply[0]).getValue(codec.MAPPED_ADDRESS), codec.encodeAddress(*SOURCE))

    def test_bad_cookie_otherwise_silent(self) -> None:
        self.assertSilent(classicRequest(method=0x003))
        data = request(messageClass=codec.INDICATION)
        self.assertSilent(data[:4] + b"\x00\x00\x00\x00" + data[8:])

    def test_length_not_multiple_of_4(self) -> None:
        data = request(codec.Attribute(codec.SOFTWARE, b"abcd"))
        self.assertSilent(data[:2] + struct.pack("!H", 7) + data[4:-1])

    def test_length_mismatch(self) -> None:
        self.assertSilent(request() + bytes(4))
        self.assertSilent(request(codec.Attribute(codec.SOFTWARE, b"abcd"))[:-4])

    def test_huge_length(self) -> None:
        self.assertSilent(request()[:2] + b"\xff\xfc" + request()[4:])

    def test_truncated_attribute(self) -> None:
        data = request(codec.Attribute(codec.SOFTWARE, b"abcdefgh"))
        self.assertError(data[:22] + b"\x00\x20" + data[24:], 400)
        self.assertError(request()[:2] + b"\x00\x04" + request()[4:] + b"\x80\x22\x00\x04", 400)

    def test_truncated_attribute_classic(self) -> None:
        data = classicRequest(codec.Attribute(codec.CHANGE_REQUEST, bytes(4)))
        reply = self.server.datagram(data[:22] + b"\x00\x08" + data[24:], SOURCE, self.endpoint())
        assert reply is not None
        response = codec.decode(reply[0])
        self.assertTrue(response.classic)
        self.assertEqual(response.messageClass, codec.ERROR_RESPONSE)

    def test_unknown_method(self) -> None:
        self.assertError(request(method=0x003), 400)
        self.assertEqual(self.server.counters.errors, {400: 1})

    def test_bad_fingerprint(self) -> None:
        data = request(fingerprint=True)
        self.assertSilent(data[:-1] + bytes([data[-1] ^ 1]))
        late = data + codec.Attribute(codec.SOFTWARE, b"late").encode()
        self.assertSilent(late[:2] + struct.pack("!H", len(late) - 20) + late[4:])
        self.assertEqual(self.server.counters.badFingerprint, 2)

    def test_corrupted_with_fingerprint_is_silent(self) -> None:
        """
        A corrupted message that ends with a FINGERPRINT is dropped rather
        than answered 400.
        """
        data = bytearray(request(codec.Attribute(codec.SOFTWARE, b"abcdefgh"), fingerprint=True))
        data[23] = 0x40
        self.assertSilent(bytes(data))

    def test_not_stun(self) -> None:
        for data in (
            b"",
            b"\x00",
            b"GET / HTTP/1.1\r\n\r\n",
            b"\xff" * 20,
            b"\x16\x03\x01\x02\x00" + bytes(40),
            bytes(19),
        ):
            self.assertSilent(data)

    def test_random_bytes(self) -> None:
        """
        Random bytes and random mutations of valid requests never raise, and
        whatever is answered decodes.
        """
        generator = random.Random(8489)
        seeds = [request(), request(change(True, True), fingerprint=True), SAMPLE_REQUEST, classicRequest()]
        endpoints = [
            self.endpoint(),
            self.server.endpoint(ALTERNATE_BOTH, FULL),
            self.server.endpoint(PRIMARY, {PRIMARY: ("::", 1)}),
            self.server.endpoint(PRIMARY, {PRIMARY: ("192.0.2.1", 1)}, stream=True),
        ]
        for index in range(20000):
            if index % 2:
                data = bytes(generator.getrandbits(8) for _ in range(generator.randrange(0, 120)))
            else:
                mutated = bytearray(generator.choice(seeds))
                for _ in range(generator.randrange(1, 4)):
                    mutated[generator.randrange(len(mutated))] = generator.getrandbits(8)
                data = bytes(mutated[: generator.randrange(len(mutated) + 1)] if index % 4 == 0 else mutated)
            endpoint = endpoints[index % len(endpoints)]
            source = SOURCE6 if endpoint.ipv6 else SOURCE
            reply = self.server.datagram(data, source, endpoint)
            if reply is not None:
                codec.decode(reply[0])


class ClassicTests(ServerTestCase):
    """
    Classic RFC 3489 clients get RFC 3489 responses.
    """

    def test_shape(self) -> None:
        endpoint = self.server.endpoint(PRIMARY, FULL)
        reply = self.server.datagram(classicRequest(), SOURCE, endpoint)
        assert reply is not None
        response = codec.decode(reply[0])
        self.assertEqual(reply[0][4:20], classicRequest()[4:20])
        self.assertEqual(
            [a.type for a in response.attributes],
            [codec.MAPPED_ADDRESS, codec.SOURCE_ADDRESS, codec.CHANGED_ADDRESS],
        )
        self.assertEqual(self.address(response, codec.MAPPED_ADDRESS), SOURCE)
        self.assertEqual(self.address(response, codec.SOURCE_ADDRESS), FULL[PRIMARY])
        self.assertEqual(self.address(response, codec.CHANGED_ADDRESS), FULL[ALTERNATE_BOTH])
        self.assertEqual(self.server.counters.classicRequests, 1)

    def test_change_request(self) -> None:
        endpoint = self.server.endpoint(PRIMARY, FULL)
        reply = self.server.datagram(classicRequest(change(True, False)), SOURCE, endpoint)
        assert reply is not None
        self.assertEqual(reply[2], ALTERNATE_ADDRESS)
        self.assertEqual(self.address(codec.decode(reply[0]), codec.SOURCE_ADDRESS), FULL[ALTERNATE_ADDRESS])

    def test_ipv6(self) -> None:
        endpoint = self.server.endpoint(PRIMARY, {PRIMARY: ("::", 3478)})
        reply = self.server.datagram(classicRequest(), SOURCE6, endpoint)
        assert reply is not None
        self.assertEqual(self.address(codec.decode(reply[0]), codec.MAPPED_ADDRESS), SOURCE6)


class DiscoveryTests(ServerTestCase):
    """
    RFC 5780: OTHER-ADDRESS, RESPONSE-ORIGIN, CHANGE-REQUEST, RESPONSE-PORT.
    """

    def test_other_address_is_opposite(self) -> None:
        for role in FULL:
            response, _, sendRole = self.answer(request(), self.server.endpoint(role, FULL))
            self.assertEqual(sendRole, role)
            self.assertEqual(self.address(response, codec.OTHER_ADDRESS), FULL[role ^ ALTERNATE_BOTH])
            self.assertEqual(self.address(response, codec.RESPONSE_ORIGIN), FULL[role])

    def test_change_request(self) -> None:
        for role in FULL:
            endpoint = self.server.endpoint(role, FULL)
            for changeIP, changePort, flip in (
                (False, False, 0),
                (True, False, ALTERNATE_ADDRESS),
                (False, True, ALTERNATE_PORT),
                (True, True, ALTERNATE_BOTH),
            ):
                response, destination, sendRole = self.answer(request(change(changeIP, changePort)), endpoint)
                self.assertEqual(sendRole, role ^ flip)
                self.assertEqual(destination, SOURCE)
                self.assertEqual(self.mapped(response), SOURCE)
                self.assertEqual(self.address(response, codec.RESPONSE_ORIGIN), FULL[role ^ flip])
                # OTHER-ADDRESS is relative to where the request arrived.
                self.assertEqual(self.address(response, codec.OTHER_ADDRESS), FULL[role ^ ALTERNATE_BOTH])
        self.assertEqual(self.server.counters.changeRequests, 12)

    def test_alternate_port_only(self) -> None:
        """
        With an alternate port but no alternate address, there is no
        OTHER-ADDRESS (it would promise a change of address); changing the
        port works, changing the address is not understood.
        """
        addresses = {PRIMARY: FULL[PRIMARY], ALTERNATE_PORT: FULL[ALTERNATE_PORT]}
        endpoint = self.server.endpoint(PRIMARY, addresses)
        response, _, sendRole = self.answer(request(change(False, True)), endpoint)
        self.assertEqual(sendRole, ALTERNATE_PORT)
        self.assertIsNone(response.get(codec.OTHER_ADDRESS))
        self.assertEqual(self.address(response, codec.RESPONSE_ORIGIN), FULL[ALTERNATE_PORT])
        for flags in ((True, False), (True, True)):
            error = self.assertError(request(change(*flags)), 420, endpoint)
            self.assertEqual(error.getValue(codec.UNKNOWN_ATTRIBUTES), b"\x00\x03")

    def test_no_alternates(self) -> None:
        response, _, _ = self.answer(request(change(False, False)))
        self.assertEqual(response.messageClass, codec.SUCCESS_RESPONSE)
        self.assertIsNone(response.get(codec.OTHER_ADDRESS))
        self.assertError(request(change(False, True)), 420)

    def test_change_request_over_tcp(self) -> None:
        endpoint = self.server.endpoint(PRIMARY, FULL, stream=True)
        data = self.server.stream(request(change(True, True)), SOURCE, endpoint)
        assert data is not None
        value = codec.decode(data).getValue(codec.ERROR_CODE)
        assert value is not None
        self.assertEqual(codec.decodeErrorCode(value)[0], 400)

    def test_change_request_wrong_length(self) -> None:
        self.assertError(request(codec.Attribute(codec.CHANGE_REQUEST, b"\x00\x06")), 400)

    def test_response_port(self) -> None:
        data = request(codec.Attribute(codec.RESPONSE_PORT, codec.encodeResponsePort(5000)))
        response, destination, _ = self.answer(data)
        self.assertEqual(destination, (SOURCE[0], 5000))
        self.assertEqual(self.mapped(response), SOURCE)

    def test_response_port_errors(self) -> None:
        self.assertError(request(codec.Attribute(codec.RESPONSE_PORT, codec.encodeResponsePort(0))), 400)
        self.assertError(request(codec.Attribute(codec.RESPONSE_PORT, b"\x13\x88")), 400)
        endpoint = self.server.endpoint(PRIMARY, FULL, stream=True)
        data = self.server.stream(
            request(codec.Attribute(codec.RESPONSE_PORT, codec.encodeResponsePort(5000))), SOURCE, endpoint
        )
        assert data is not None
        self.assertEqual(codec.decode(data).messageClass, codec.ERROR_RESPONSE)


class RateLimitTests(ServerTestCase):
    """
    At most C{rateLimit} requests per second per source address are
    answered, so that spoofed requests cannot turn the server into a
    reflector.
    """

    def setUp(self) -> None:
        super().setUp()
        self.server = STUNServer(rateLimit=3, clock=self.clock.seconds)

    def answered(self, source: tuple[str, int] = SOURCE, data: bytes | None = None) -> int:
        endpoint = self.endpoint()
        return sum(
            self.server.datagram(data or request(transactionID=os.urandom(12)), source, endpoint) is not None
            for _ in range(10)
        )

    def test_limit_per_second(self) -> None:
        self.clock.advance(100.2)
        self.assertEqual(self.answered(), 3)
        self.clock.advance(0.5)
        self.assertEqual(self.answered(), 0)
        self.clock.advance(0.5)
        self.assertEqual(self.answered(), 3)
        self.assertEqual(self.server.counters.rateLimited, 24)
        self.assertEqual(self.server.counters.requests, 30)

    def test_per_source_address(self) -> None:
        self.assertEqual(self.answered(("198.51.100.7", 1)), 3)
        self.assertEqual(self.answered(("198.51.100.7", 2)), 0)
        self.assertEqual(self.answered(("198.51.100.8", 1)), 3)

    def test_errors_count(self) -> None:
        self.assertEqual(self.answered(data=request(method=0x003)), 3)

    def test_unlimited(self) -> None:
        self.server = STUNServer(rateLimit=0, clock=self.clock.seconds)
        self.assertEqual(self.answered(), 10)


class CountersTests(ServerTestCase):
    def test_as_dict(self) -> None:
        self.answer(request())
        self.assertError(request(codec.Attribute(0x7F00, b"")), 420)
        self.assertError(request(method=0x003), 400)
        self.assertSilent(b"junk")
        counters = self.server.counters.asDict()
        self.assertEqual(
            {k: counters[k] for k in ("requests", "responses", "errors", "errors_400", "errors_420", "not_stun")},
            {"requests": 3, "responses": 1, "errors": 2, "errors_400": 1, "errors_420": 1, "not_stun": 1},
        )
        self.assertEqual(
            set(counters) - {"errors_400", "errors_420"},
            {
                "requests",
                "classic_requests",
                "responses",
                "errors",
                "indications",
                "change_requests",
                "rate_limited",
                "not_stun",
                "bad_fingerprint",
                "ignored",
                "send_failures",
                "tcp_connections",
            },
        )
        self.assertTrue(all(isinstance(v, int) for v in counters.values()))
