"""
Session timers (RFC 4028) as a proxy sees them: the interval the agents
agree on, a floor for it (422), and when a session lapses without refresh.
"""

from __future__ import annotations

from collections.abc import Callable

from aetasip.sip.headers import splitCommas
from aetasip.sip.message import Message, Request, Response

# RFC 4028 section 4: no session interval below 90 seconds.
MIN_SE_FLOOR = 90


def interval(message: Message) -> int | None:
    """The delta-seconds of C{Session-Expires} (the parser names its compact form C{x} so too), or C{None}."""
    value = message.get("session-expires")
    if value is None:
        return None
    delta = value.split(";", 1)[0].strip()
    if not delta.isdigit() or len(delta) > 9:
        return None
    return int(delta)


def supportsTimer(message: Message) -> bool:
    for value in message.getAll("supported"):
        if "timer" in (option.strip().lower() for option in splitCommas(value)):
            return True
    return False


def sessionExpires(request: Request, minimum: int, reply: Callable[[Request, int, str], Response]) -> Response | None:
    """
    Check the session interval an INVITE asks for against C{minimum}
    (RFC 4028 section 8.1): too short, it gets 422 with our Min-SE when its
    sender knows session timers; otherwise it is raised to the minimum on
    its way. C{None} when the INVITE may go on.
    """
    asked = interval(request)
    if asked is None or asked >= minimum:
        return None
    if supportsTimer(request):
        response = reply(request, 422, "Session Interval Too Small")
        response.add("min-se", str(minimum))
        return response
    request.set("session-expires", str(minimum))
    request.set("min-se", str(minimum))
    return None
