"""
The media hook: where every SDP of a call meets the L{IMediaHandler}.

Which SDP is an offer and which an answer follows RFC 3264 as SIP carries
it (RFC 3261 13.2.1, RFC 3262, RFC 3311, RFC 6337): SDP in an INVITE,
re-INVITE or UPDATE is an offer, and SDP in its responses the answer
(a 18x may preview it, the 2xx repeats it); an INVITE without SDP gets the
offer in its 2xx (or a reliable 18x) and the answer in the ACK (or PRACK).

The handler answers with Deferreds; a call's messages leave in the order
they came, each after the SDP work of those before it. Without a handler,
nothing waits: messages go on at once (the hot path stays as it was).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from aetasip.calls.call import Call
from aetasip.sip.message import Request, Response

log = Logger()

OFFER = "offer"
ANSWER = "answer"


class MediaRefused(Exception):
    """
    A media handler refuses an offer with this SIP status: 400 for SDP it
    cannot read, 503 when it has no resources (no relay ports), 488 for
    media it cannot carry. Any other failure of a handler is answered 503.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.code} {self.reason}"


def refusal(failure: Failure) -> tuple[int, str]:
    """The status and reason phrase refusing an offer whose handler failed with C{failure}."""
    if isinstance(failure.value, MediaRefused):
        return failure.value.code, failure.value.reason
    return 503, "Media relay unavailable"


def sdpOf(message: Request | Response) -> bytes | None:
    """The SDP body of C{message}, or C{None}."""
    body = message.body
    if not body:
        return None
    contentType = message.get("content-type")
    if contentType is None or contentType.split(";", 1)[0].strip().lower() != "application/sdp":
        return None
    return body


def kindOfRequestSDP(method: str) -> str:
    """What SDP in a request is: an answer in an ACK or PRACK, else an offer."""
    return ANSWER if method in ("ACK", "PRACK") else OFFER


def kindOfResponseSDP(requestHadOffer: bool) -> str:
    """What SDP in a response is: the answer to the request's offer, else an offer."""
    return ANSWER if requestHadOffer else OFFER


def declinedAnswer(offer: bytes) -> bytes:
    """
    An SDP answer declining every stream of C{offer} (port 0, RFC 3264
    6): what an ACK carries when the offer of a 2xx cannot be taken. It
    reads the offer's C{m=} lines alone, so it works for SDP no parser
    accepts.
    """
    lines = [b"v=0", b"o=- 0 0 IN IP4 0.0.0.0", b"s=-", b"c=IN IP4 0.0.0.0", b"t=0 0"]
    for line in offer.splitlines():
        fields = line.strip().split()
        if line.startswith(b"m=") and len(fields) >= 3:
            lines.append(b" ".join([fields[0], b"0", fields[2], *(fields[3:4] or [b"0"])]))
    if len(lines) == 5:
        lines.append(b"m=audio 0 RTP/AVP 0")
    return b"\r\n".join(lines) + b"\r\n"


class MediaHook:
    """
    Hands the SDP of a call's messages to the media handler, in order.

    @param handler: an L{IMediaHandler}, or C{None}: SDP is left untouched
        and nothing waits.
    """

    def __init__(self, handler: Any = None) -> None:
        self.handler = handler
        # The last pending message of each call, by Call: later ones wait for it.
        self._tails: dict[Call, Deferred[Any]] = {}

    def pending(self, call: Call | None) -> bool:
        return call is not None and call in self._tails

    def process(
        self,
        call: Call | None,
        message: Request | Response,
        kind: str | None,
        key: str,
        sender: str,
        then: Callable[[Request | Response], None],
        failed: Callable[[Failure], None] | None = None,
        answerFailed: Callable[[Failure], None] | None = None,
    ) -> None:
        """
        Run C{then(message)} once the handler has rewritten the SDP of
        C{message} (when C{kind} is an offer or an answer and a handler is
        set), after the messages of C{call} before it; at once when there
        is nothing to wait for.

        @param failed: what to do when an offer is refused (the handler
            failed).
        @param answerFailed: what to do when the handler fails on an
            answer (the relay cannot carry the media it describes);
            without it, the answer is logged and forwarded unchanged.
        """
        handler = self.handler
        sdp = sdpOf(message) if handler is not None and kind is not None and call is not None else None
        if sdp is None and (call is None or call not in self._tails):
            then(message)
            return
        assert call is not None
        previous = self._tails.get(call)
        d: Deferred[Any] = Deferred()
        if previous is None:
            d.callback(None)
        else:
            previous.addBoth(lambda _: d.callback(None))

        if sdp is not None:
            d.addCallback(
                lambda _: self._rewrite(call, message, kind or OFFER, key, sender, sdp, answerFailed is not None)
            )

        def refused(failure: Failure) -> None:
            if kind == ANSWER and answerFailed is not None:
                answerFailed(failure)
                return
            if failed is None:
                log.failure("Media handler failed on {call}", failure, call=call)
                return
            failed(failure)

        # A refusal of the handler goes to failed; a failure to forward, to the log.
        d.addCallbacks(lambda _: then(message), refused)
        d.addErrback(lambda f: log.failure("Forwarding a message of {call} failed", f, call=call))
        self._tails[call] = d

        def done(result: object) -> object:
            if self._tails.get(call) is d:
                del self._tails[call]
            return result

        d.addBoth(done)

    def _rewrite(
        self, call: Call, message: Request | Response, kind: str, key: str, sender: str, sdp: bytes, strict: bool
    ) -> Any:
        assert self.handler is not None
        method = self.handler.offer if kind == OFFER else self.handler.answer
        d = method(call, key, sender, sdp)

        def rewritten(body: bytes) -> None:
            message.body = body

        def answerFailed(failure: Failure) -> Failure | None:
            if kind == OFFER or strict:
                return failure
            log.failure("Media handler failed on an answer of {call}: forwarded as it is", failure, call=call)
            return None

        return d.addCallbacks(rewritten, answerFailed)

    def callEnded(self, call: Call) -> Deferred[None] | None:
        """
        Tell the handler C{call} ended.

        @return: the handler's Deferred, firing once it released the
            call's media (never failing), or C{None} when it did at once.
        """
        if self.handler is None:
            return None
        try:
            result = self.handler.callEnded(call)
        except Exception:
            log.failure("Media handler failed to end {call}", call=call)
            return None
        if not isinstance(result, Deferred):
            return None
        return result.addErrback(lambda f: log.failure("Media handler failed to end {call}", f, call=call))
