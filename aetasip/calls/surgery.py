"""
What the proxy changes in the messages it forwards (RFC 3261 16.6, 16.7),
as plain functions of messages.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from aetasip.sip.client import newBranch
from aetasip.sip.errors import ParseError
from aetasip.sip.headers import NameAddr, parseNameAddr
from aetasip.sip.message import Message, Request, Response
from aetasip.sip.uri import URI

if TYPE_CHECKING:
    from aetasip.calls.call import Leg
    from aetasip.sip.transaction import Peer

LOOP_TAG_LENGTH = 12
LOOPED_BRANCH_LENGTH = len(newBranch()) + 1 + LOOP_TAG_LENGTH


def copyRequest(request: Request) -> Request:
    return request.copy()


def copyResponse(response: Response) -> Response:
    return response.copy()


def upstream(response: Response) -> Response:
    """C{response} without our Via, to go up (RFC 3261 16.7 step 9)."""
    copy = copyResponse(response)
    copy.removeFirstValue("via")
    return copy


def loopTag(request: Request) -> str:
    """
    What identifies a request as it reached us (RFC 3261 16.6 step 8):
    its Request-URI before translation, From and To tags, Call-ID and
    CSeq number, hashed.
    """
    number, _ = request.cseq
    text = f"{request.uri}\0{request.fromAddr.tag}\0{request.toAddr.tag}\0{request.callID}\0{number}"
    return hashlib.md5(text.encode("utf-8", "surrogateescape"), usedforsecurity=False).hexdigest()[:LOOP_TAG_LENGTH]


def looped(request: Request, isOurs: Callable[[URI], bool]) -> bool:
    """
    Has this request been forwarded by us before, unchanged (RFC 3261
    16.3 step 4, 16.6 step 8)? One of its Vias is ours (C{isOurs}) and its
    branch ends with the loop tag this very request gives. A request that
    comes back changed (another Request-URI: a call forwarded back to us)
    is a spiral, and is routed again.
    """
    tag = None
    for via in request.vias:
        branch = via.branch
        if branch is None or len(branch) != LOOPED_BRANCH_LENGTH or branch[-LOOP_TAG_LENGTH - 1] != ".":
            continue
        if tag is None:
            tag = loopTag(request)
        if branch.endswith(tag) and isOurs(URI("sip", None, via.host, via.port)):
            return True
    return False


def better(candidate: Response, best: Response) -> bool:
    """RFC 3261 16.7 step 6: a 6xx wins, then the lowest class."""
    a, b = candidate.code, best.code
    if (a >= 600) != (b >= 600):
        return a >= 600
    return a // 100 < b // 100


def decrementMaxForwards(request: Request) -> None:
    value = request.get("max-forwards")
    # The parser checked the value (ASCII digits, at most 3 once leading zeros
    # are stripped); int() of the thousands of zeros it may still hold fails.
    hops = int(value.lstrip("0") or "0") if value is not None and value.isascii() and value.isdigit() else 70
    request.set("max-forwards", str(max(hops - 1, 0)))


def fixContact(message: Message, source: tuple[str, int], transport: str) -> None:
    """
    Point the Contact at C{source}, the address the agent's packets come
    from over C{transport}, when it differs (an agent behind NAT
    advertising its private address): the other side of the dialog then
    reaches it there, through us.
    """
    values = message.getAll("contact")
    if len(values) != 1:
        return
    try:
        contact = parseNameAddr(values[0])
    except ParseError:
        return
    uri = fixedURI(contact.uri, source, transport)
    if uri is not None:
        # A new NameAddr: parsed ones are shared (see parseNameAddr).
        message.set("contact", str(NameAddr(uri, contact.display, contact.params)))


def fixedURI(uri: URI, source: tuple[str, int], transport: str) -> URI | None:
    """C{uri} pointing at C{source} over C{transport}; C{None} when it does already."""
    host, port = source
    address = f"[{host}]" if ":" in host else host
    if uri.host == address and (uri.port or 5060) == port:
        return None
    uri = uri.copy()
    uri.host, uri.port = address, port
    if transport != "udp":
        uri.params["transport"] = transport
    return uri


def contactURI(message: Message) -> str | None:
    """The one Contact URI of C{message}, as text, or C{None}."""
    values = message.getAll("contact")
    if len(values) != 1:
        return None
    try:
        return str(parseNameAddr(values[0]).uri)
    except ParseError:
        return None


def normalHost(host: str) -> str:
    """An address as a dictionary key: no IPv6 brackets, lower case."""
    return host[1:-1].lower() if host.startswith("[") else host.lower()


def fromLeg(leg: Leg, peer: Peer) -> bool:
    """
    Does C{peer} stand for C{leg}: the same address and port? (A host alone
    would let anyone behind the same NAT, or on the same host, end or
    take over the call.)
    """
    return leg.source[1] == peer.source[1] and normalHost(leg.source[0]) == normalHost(peer.source[0])
