"""
rtpengine's ng control protocol, sans-IO: what goes in a datagram, what
comes back, and which request a reply answers.

A message is a cookie, one space and a bencoded dictionary. A request
has a C{command}; its reply carries the same cookie and a C{result}:
C{ok} (or C{pong} to a C{ping}), possibly with a C{warning} (a success:
rtpengine did it, with a remark), or C{error} with an C{error-reason}.
rtpengine treats a request whose cookie it has just answered as a
retransmission and sends the same reply again, so a request is retried
with its cookie unchanged.

L{PendingRequests} matches replies to requests: a reply is taken only from
the address its request went to, with the cookie of a request still
waiting; anything else is dropped and counted, never raised.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from aetasip.relay import bencode

Address = tuple[str, int]


class NgError(Exception):
    """
    rtpengine refused a request (C{result: error}).

    @ivar reason: its C{error-reason}.
    """

    def __init__(self, command: str, reason: str) -> None:
        super().__init__(f"rtpengine refused {command}: {reason}")
        self.command = command
        self.reason = reason


class NgProtocolError(ValueError):
    """A datagram that is not an ng message, or a reply without a valid result."""


@attrs.frozen
class Reply:
    """
    A successful reply.

    @ivar result: C{"ok"} or C{"pong"} (or another non-error result, such
        as C{"load limit"}, which the caller judges).
    @ivar warning: the C{warning} text, or C{None}.
    @ivar body: the whole reply dictionary (strings are C{bytes}).
    """

    result: str
    warning: str | None
    body: dict[str, Any]

    def text(self, key: str) -> str | None:
        """The string value C{key} as text, or C{None} if absent or not a string."""
        value = self.body.get(key)
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else None


def encodeMessage(cookie: bytes, body: Mapping[str, Any]) -> bytes:
    """One ng datagram: C{cookie}, a space, C{body} bencoded."""
    if not cookie or b" " in cookie:
        raise ValueError("an ng cookie is a non-empty token without spaces")
    return cookie + b" " + bencode.encode(body)


def decodeMessage(datagram: bytes) -> tuple[bytes, dict[str, Any]]:
    """
    The cookie and dictionary of an ng datagram.

    @raise NgProtocolError: no cookie, or not one bencoded dictionary.
    """
    cookie, space, payload = datagram.partition(b" ")
    if not space or not cookie:
        raise NgProtocolError("no cookie")
    try:
        body = bencode.decode(payload)
    except bencode.BencodeError as e:
        raise NgProtocolError(f"bad bencode: {e}") from None
    if not isinstance(body, dict):
        raise NgProtocolError("the message is not a dictionary")
    return cookie, body


def _text(value: Any) -> str | None:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else None


def interpretReply(command: str, body: dict[str, Any]) -> Reply:
    """
    The L{Reply} to C{command} that C{body} is.

    @raise NgError: C{result: error}.
    @raise NgProtocolError: no C{result} string; C{pong} to anything but
        C{ping}, or anything but C{pong} to C{ping}.
    """
    result = _text(body.get("result"))
    if result is None:
        raise NgProtocolError("the reply has no result")
    if result == "error":
        raise NgError(command, _text(body.get("error-reason")) or "no reason given")
    if (command == "ping") != (result == "pong"):
        raise NgProtocolError(f"result {result!r} to {command}")
    return Reply(result, _text(body.get("warning")), body)


class Cookies:
    """
    Cookies unique to one client: a random prefix (so two clients, or one
    restarted, never reuse each other's) and a counter.
    """

    def __init__(self, prefix: bytes | None = None) -> None:
        self._prefix = prefix if prefix is not None else os.urandom(6).hex().encode("ascii")
        self._counter = 0

    def __next__(self) -> bytes:
        self._counter += 1
        return b"%s_%d" % (self._prefix, self._counter)

    def __iter__(self) -> Iterator[bytes]:
        return self


@attrs.define(eq=False)
class Request:
    """
    A request waiting for its reply.

    @ivar datagram: the bytes to (re)send.
    @ivar waiter: whatever the I/O layer attached (its Deferred, timers).
    """

    cookie: bytes
    command: str
    address: Address
    datagram: bytes
    waiter: Any = None


@attrs.frozen
class Matched:
    """A reply matched to its request: C{reply}, or C{error} (an L{NgError} or L{NgProtocolError})."""

    request: Request
    reply: Reply | None
    error: Exception | None


class PendingRequests:
    """
    The requests sent and not yet answered, at most C{limit} of them.

    @ivar dropped: datagrams dropped since the start (garbled, unknown
        cookie — often a late reply to a request given up —, or from an
        address other than the request's).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._requests: dict[bytes, Request] = {}
        self._cookies = Cookies()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._requests)

    @property
    def full(self) -> bool:
        return len(self._requests) >= self.limit

    def add(self, command: str, arguments: Mapping[str, Any], address: Address) -> Request:
        """
        A new request of C{command} with C{arguments}, to C{address}.

        @raise OverflowError: L{full}.
        """
        if self.full:
            raise OverflowError(f"{self.limit} ng requests already waiting")
        cookie = next(self._cookies)
        body = dict(arguments)
        body["command"] = command
        request = Request(cookie, command, address, encodeMessage(cookie, body))
        self._requests[cookie] = request
        return request

    def clear(self) -> list[Request]:
        """Stop waiting for every request; return them."""
        requests = list(self._requests.values())
        self._requests.clear()
        return requests

    def forget(self, request: Request) -> None:
        """Stop waiting for C{request}'s reply (given up); a late reply will be dropped."""
        self._requests.pop(request.cookie, None)

    def receive(self, datagram: bytes, source: Address) -> Matched | None:
        """
        The request C{datagram} (from C{source}) answers, now no longer
        pending, or C{None} when the datagram is dropped.
        """
        try:
            cookie, body = decodeMessage(datagram)
        except NgProtocolError:
            # Without a readable cookie nobody can be told: drop it.
            self.dropped += 1
            return None
        request = self._requests.get(cookie)
        if request is None or not _sameAddress(request.address, source):
            self.dropped += 1
            return None
        del self._requests[cookie]
        try:
            return Matched(request, interpretReply(request.command, body), None)
        except (NgError, NgProtocolError) as e:
            return Matched(request, None, e)


def _sameAddress(expected: Address, source: Address) -> bool:
    host = source[0]
    # An IPv4 reply on a dual-stack socket comes from ::ffff:a.b.c.d.
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return (host, source[1]) == (expected[0], expected[1])


def parseAddress(text: str) -> Address:
    """
    C{"127.0.0.1:2223"} or C{"[::1]:2223"} as C{(host, port)}, the host a
    normalised IP address.

    @raise ValueError: anything else (names are not resolved here).
    """
    host, colon, port = text.rpartition(":")
    if not colon or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not IP:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        version = 6
    else:
        version = 4
    address = ipaddress.ip_address(host)
    if address.version != version:
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, [::1]:2223")
    return str(address), int(port)
