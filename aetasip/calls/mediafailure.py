"""
What the proxy does when the media handler cannot take the SDP of a
message it forwards (the relay failed, or the SDP is bad): a refused
offer ends its branch with the handler's answer; a failed answer ends the
branch that sent it (ACK, BYE) rather than give one-way audio, or goes
on without its SDP when it was only a preview.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.logger import Logger
from twisted.python.failure import Failure

from aetasip.calls.call import Call, EndCause
from aetasip.calls.context import Branch, ResponseContext
from aetasip.calls.dialog import CALLEE
from aetasip.calls.media import OFFER, refusal
from aetasip.sip.message import Response

if TYPE_CHECKING:
    from aetasip.calls.proxy import Proxy

log = Logger()


class MediaFailures:
    """The proxy's answers to media failures (see the module docstring)."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy

    def refused(self, context: ResponseContext, branch: Branch, failure: Failure) -> None:
        log.warn("Media refused for {call}: {error}", call=context.call, error=failure.getErrorMessage())
        if context.call is not None:
            context.call.endDetail = f"media: {failure.getErrorMessage()}"
        branch.request = None
        context.refuse(branch, *refusal(failure))

    def answer(
        self, context: ResponseContext, branch: Branch, response: Response, kind: str | None, failure: Failure
    ) -> None:
        """
        The media handler could not take the SDP of a callee's response to
        the initial INVITE (the relay failed, or the SDP is bad): passing
        it on unchanged would give one-way audio, so the branch ends. Like
        a UAC that cannot accept the media of a 2xx (RFC 3261 13.2.2.4),
        the proxy ACKs a 2xx (declining every stream of a late offer) and
        sends a BYE to the callee; the caller gets a 500 with a Warning,
        unless another branch answers. A reliable 18x (RFC 3262) made its
        SDP the answer: its branch is cancelled the same way. An
        unreliable 18x only previews the answer (RFC 6337 3.1): it goes
        on without its SDP, no early media, and the 2xx tries again.
        """
        call = context.call
        error = failure.getErrorMessage()
        log.warn(
            "Media failed on the {code} of branch {key} of {call}: {error}",
            code=response.code,
            key=branch.target.key if branch.target is not None else "?",
            call=call,
            error=error,
        )
        code = response.code
        if code < 200 and "100rel" not in (response.get("require") or "").lower():
            response.body = b""
            response.remove("content-type")
            context.response(branch, response)
            return
        detail = f"relay failed on the callee's {'answer' if kind != OFFER else 'offer'}: {error}"
        quoted = detail.replace("\\", "").replace('"', "'")
        warning = f'399 aetasip "{quoted}"'
        if code < 200:
            branch.code = max(branch.code, code)
            self.proxy.cancelling.branch(branch)
        else:
            branch.ackAgain = self.proxy.router.abandonAnswer(context, branch, response, kind == OFFER, "media failure")
        context.refuse(branch, 500, "Media Relay Failed", warning, detail)

    def reinviteAnswer(
        self, context: ResponseContext, branch: Branch, response: Response, kind: str | None, failure: Failure
    ) -> None:
        """
        The media handler could not take the SDP of a response to a
        re-INVITE. A 1xx goes on without its SDP (the 2xx repeats it). A
        2xx ends the call, as for the initial INVITE: the side that sent
        it has taken the new session (RFC 3261 14.1, "the session
        parameters remain unchanged", is for a re-INVITE that failed,
        which this one did not), and the relay cannot carry it, so
        passing it on would leave one-way or no audio, and answering the
        offerer with an error would leave the two sides with different
        sessions. The proxy ACKs the 2xx (declining every stream of an
        offer in it), the offerer gets a 500 with a Warning, and both get
        a BYE; end cause C{media failure}.
        """
        dialog = context.dialog
        assert dialog is not None
        call = dialog.call
        error = failure.getErrorMessage()
        log.warn(
            "Media failed on the {code} to a re-INVITE of {call}: {error}",
            code=response.code,
            call=call,
            error=error,
        )
        if response.code < 200 or call is None or call.ended:
            response.body = b""
            response.remove("content-type")
            context.response(branch, response)
            return
        answerer = context.extra.get("to", CALLEE)
        contact = response.get("contact")
        if contact is not None:
            dialog.legs[answerer].contact = contact
        branch.code = response.code
        branch.ackAgain = self.proxy.router.ackAnswer(dialog, answerer, context.cseq, response, kind == OFFER)
        detail = f"relay failed on the {answerer}'s {'answer' if kind != OFFER else 'offer'} to a re-INVITE: {error}"
        quoted = detail.replace("\\", "").replace('"', "'")
        context.refuse(branch, 500, "Media Relay Failed", f'399 aetasip "{quoted}"')
        self.proxy.release(call, EndCause.MEDIA_FAILURE, detail)

    def early(self, call: Call, key: str, warning: str, detail: str) -> None:
        """
        The media of the early dialog C{key} of C{call} failed (the answer
        in a PRACK): its branch is cancelled and ends with a 500 and
        C{warning}, as in L{answer} for a reliable 18x; once the
        call is answered, or without a branch still ringing, the call ends.
        """
        if call.ended:
            return
        control = call.control
        # A hunting series rings its members one context at a time.
        context = getattr(control, "current", control)
        branches = getattr(context, "branches", None) or []
        branch = next((b for b in branches if b.target is not None and b.target.key == key and b.code < 200), None)
        if call.answeredBy is not None or branch is None:
            self.proxy.release(call, EndCause.MEDIA_FAILURE, detail)
            return
        self.proxy.cancelling.branch(branch)
        context.refuse(branch, 500, "Media Relay Failed", warning, detail)
