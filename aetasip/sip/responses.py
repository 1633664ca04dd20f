"""
Answers to a SIP request: L{makeResponse} (RFC 3261 8.2.6.2),
L{localResponse} for those this element makes itself, and
L{withinBudget}, which keeps an answer to an unauthenticated UDP request
from amplifying it.
"""

from __future__ import annotations

from aetasip.sip.errors import ParseError
from aetasip.sip.message import REASONS, Request, Response


def makeResponse(request: Request, code: int, reason: str = "", toTag: str | None = None) -> Response:
    """
    A response to C{request} (RFC 3261 8.2.6.2): every Via, the first
    From, To, Call-ID and CSeq copied (a request with several is invalid,
    RFC 4475 multi01, and still answered), a To tag added when C{toTag} is
    given and the request's To has none.
    """
    headers: list[list[str]] = []
    copied: set[str] = set()
    for name, value in request.headers:
        if name == "via":
            headers.append([name, value])
        elif name in _ANSWER_COPIES and name not in copied:
            copied.add(name)
            if name == "to" and toTag is not None and _lacksTag(request):
                value = f"{value};tag={toTag}"
            headers.append([name, value])
    return Response(code, reason or REASONS.get(code, ""), headers)


_ANSWER_COPIES = frozenset(("from", "to", "call-id", "cseq"))


def _lacksTag(request: Request) -> bool:
    """Does the first To have no tag? A To that does not parse is echoed as it is."""
    try:
        return request.toAddr.tag is None
    except ParseError:
        return False


def localResponse(request: Request, code: int, reason: str = "", server: str = "") -> Response:
    """
    A response this element makes itself (not relayed): L{makeResponse}
    with a To tag derived from the Call-ID and CSeq, so every answer to one
    request carries the same tag, and a Server header.
    """
    tag = format(hash((request.get("call-id"), request.get("cseq"))) & 0xFFFFFFFF, "08x")
    response = makeResponse(request, code, reason, toTag=tag)
    if server:
        response.add("server", server)
    if request.size:
        response.budget = AMPLIFICATION * request.size - 1
    return response


AMPLIFICATION = 4
"""
A response of this element to a request over UDP whose sender is not
authenticated (its source may be spoofed: the response would go to a
victim) takes less than this many times the request's bytes: a reflector
that amplifies less than 4x is of no use to an attacker.
"""

# Dropped first, in this order, when a response exceeds its budget: what
# the sender can do without (RFC 3261 20: all optional in these answers).
_EXPENDABLE = ("server", "warning", "supported", "accept", "allow")


def withinBudget(response: Response) -> bytes | None:
    """
    The bytes of C{response}, kept within its L{Response.budget}: optional
    header fields dropped, then all challenges but the first; C{None} when
    even that exceeds it (send nothing: the request was smaller than any
    honest one).
    """
    data = response.toBytes()
    budget = response.budget
    if budget is None or len(data) <= budget:
        return data
    for name in (*_EXPENDABLE, "www-authenticate", "proxy-authenticate"):
        values = response._lookup().get(name)
        if not values:
            continue
        if name in _EXPENDABLE:
            response.remove(name)
        elif len(values) > 1:
            response.set(name, values[0])
        else:
            continue
        data = response.toBytes()
        if len(data) <= budget:
            return data
    return None
