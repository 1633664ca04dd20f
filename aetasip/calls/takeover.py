"""
Switching over: what a server of a cluster does with the calls another
server set up and lost (it died, or gave the floating address away), and
with its own calls after a restart.

Answered calls: their dialogs are rebuilt from the signed token of our
Record-Route (L{Takeover.rebuild}), for an in-dialog request or for the
callee's 2xx to an INVITE the other server forwarded (the dialog is made
here and the 2xx goes to the caller once the media handler took its SDP).

Calls still ringing, the stateless way (RFC 3261 16.11): the branch of
every INVITE the proxy forwards is derived (L{forwardBranch}): a short MAC,
with the cluster's dialog key, over what the caller's INVITE, its CANCEL
and the callee's responses all carry (the caller's branch and address,
Call-ID, From tag, CSeq number), followed by a digest of the target (its
number and Contact) in clear. A server that never saw the INVITE

 - CANCELs the callee's transaction when the caller cancels
   (L{Takeover.cancelCallees}: the numbers the call rang, from the dead
   server's record, and their bindings, from the shared location);
 - recognises the callee's responses as made to a transaction of the
   cluster (L{verifiedCaller}) and passes them up without a transaction: a
   1xx (not 100), a final non-2xx, which it ACKs hop by hop towards the
   callee (the caller's own ACK matches no dialog and is absorbed);
 - bounds the call's life (Timer C, 16.6 step 11): a call whose callee
   rings again here is adopted, and without news for Timer C the callee
   gets a CANCEL and the caller a 408.

The call record the dead server opened is amended with how the call ended.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet.defer import maybeDeferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from aetasip.calls.call import Call, EndCause, Leg
from aetasip.calls.context import TIMER_C
from aetasip.calls.dialog import CALLEE, CALLER, CONFIRMED, EARLY, Dialog
from aetasip.calls.media import ANSWER
from aetasip.calls.surgery import fixContact, fromLeg, loopTag, upstream
from aetasip.calls.token import DialogToken, callerHost, forwardBranch, verifiedCaller
from aetasip.sip.errors import ParseError
from aetasip.sip.headers import Via
from aetasip.sip.message import Request, Response
from aetasip.sip.transaction import Peer
from aetasip.sip.uri import URI

if TYPE_CHECKING:
    from aetasip.calls.indialog import DialogRouter
    from aetasip.calls.proxy import Proxy

log = Logger()

# Calls of another server ringing here, at most (Timer C each).
_ADOPTED = 10_000
_TAG = re.compile(r";\s*tag=[^;>]*", re.I)


class _Ringing:
    """A call of another server whose callee rings here (adopted for Timer C)."""

    __slots__ = ("caller", "peer", "response", "timer")

    def __init__(self, response: Response, caller: Leg, peer: Peer, timer: IDelayedCall) -> None:
        self.response = response
        self.caller = caller
        self.peer = peer
        self.timer = timer


class Takeover:
    """The switch-over half of the proxy (see the module docstring)."""

    def __init__(self, proxy: Proxy, router: DialogRouter) -> None:
        self.proxy = proxy
        self.router = router
        # By the branch of our Via towards the callee.
        self._ringing: dict[str, _Ringing] = {}

    def stop(self) -> None:
        ringing, self._ringing = self._ringing, {}
        for one in ringing.values():
            if one.timer.active():
                one.timer.cancel()

    # -- responses no transaction took ------------------------------------

    def strayResponse(self, response: Response, peer: Peer | None) -> None:
        """
        A response no client transaction took: a 2xx (L{_stray2xx}), or a
        response to an INVITE another server of the cluster forwarded
        (L{_ringingElsewhere}); anything else is dropped.
        """
        try:
            if 200 <= response.code < 300:
                self._stray2xx(response, peer)
            elif response.code > 100:
                self._ringingElsewhere(response, peer)
        except ParseError:
            return

    def _ringingElsewhere(self, response: Response, peer: Peer | None) -> None:
        """
        A 1xx or final non-2xx to an INVITE that another server forwarded
        (its branch verifies, its Via names us): up to the caller, without
        a transaction (the next Via says where); a final one is ACKed to
        the callee here. One whose caller got its final answer here (a
        CANCEL, Timer C, a final response passed on before) is only ACKed.
        """
        proxy = self.proxy
        if peer is None:
            return
        caller = verifiedCaller(proxy.signer, response)
        if caller is None:
            if response.code >= 300 and self._cancelledHere(response):
                # The 487 to an INVITE we cancelled, with the CANCEL's Via
                # alone (sipp's habit): ACKed all the same.
                self._ack(response, peer)
            return
        ours = response.vias[0]
        if not proxy.isOurs(URI("sip", None, ours.host, ours.port)):
            return
        branch = ours.branch or ""
        callID, fromTag = response.callID, response.fromAddr.tag or ""
        final = response.code >= 200
        if final:
            self._ack(response, peer)
            adopted = self._ringing.pop(branch, None)
            if adopted is not None and adopted.timer.active():
                adopted.timer.cancel()
        if proxy.dialogs.cancelled(callID, fromTag):
            return
        port = caller.params.get("rport") or ""
        leg = Leg(
            (callerHost(caller), int(port) if port.isdigit() else caller.port or 5060),
            caller.transport.lower(),
            peer.local,
        )
        hop = proxy.hopToLeg(leg)
        if hop is None:
            return
        hop[0](upstream(response).toBytes())
        if final:
            log.info(
                "{code} of {callID}, forwarded by a server that failed: to the caller",
                code=response.code,
                callID=callID,
            )
            proxy.dialogs.cancelledHere(callID, fromTag)
            # Any other fork stops ringing, as the caller's transaction is over.
            self._cancelOthers(response, caller, leg)
            cause = EndCause.NO_ANSWER if response.code == 408 else EndCause.REJECTED
            self.amendRecord(response, leg, cause, response.code, response.reason if cause == EndCause.REJECTED else "")
        else:
            self._adopt(branch, response, leg, peer)

    def _cancelledHere(self, response: Response) -> bool:
        """Is C{response} (to an INVITE) from a transaction whose CANCEL this server sent lately?"""
        vias = response.vias
        if len(vias) != 1 or response.cseq[1] != "INVITE":
            return False
        return (vias[0].branch, "CANCEL") in self.proxy.clients.transactions

    def _ack(self, response: Response, peer: Peer) -> None:
        """The ACK of a final non-2xx, hop by hop to the callee (RFC 3261 17.1.1.3)."""
        adopted = self._ringing.get(response.vias[0].branch or "")
        target = _requestURIOf(adopted.response if adopted is not None else response)
        headers = [
            ["via", str(response.vias[0])],
            ["max-forwards", "70"],
            ["from", response.get("from") or ""],
            ["to", response.get("to") or ""],
            ["call-id", response.callID],
            ["cseq", f"{response.cseq[0]} ACK"],
        ]
        peer.send(Request("ACK", target, headers).toBytes())

    def _adopt(self, branch: str, response: Response, caller: Leg, peer: Peer) -> None:
        """The callee of another server's call rings here: Timer C runs, started again by each 1xx."""
        adopted = self._ringing.get(branch)
        if adopted is not None:
            adopted.timer.reset(TIMER_C)
            adopted.response = response
            return
        if len(self._ringing) >= _ADOPTED:
            return
        timer = self.proxy.clock.callLater(TIMER_C, self._timerC, branch)
        self._ringing[branch] = _Ringing(response, caller, peer, timer)

    def _timerC(self, branch: str) -> None:
        """
        No news of an adopted call for Timer C: the callee gets a CANCEL,
        the caller a 408 (its INVITE ends), the record C{no answer}.
        """
        adopted = self._ringing.pop(branch, None)
        if adopted is None:
            return
        proxy = self.proxy
        response = adopted.response
        callID, fromTag = response.callID, response.fromAddr.tag or ""
        if proxy.dialogs.cancelled(callID, fromTag):
            return
        log.info("Timer C of {callID}, forwarded by a server that failed: CANCEL and 408", callID=callID)
        proxy.dialogs.cancelledHere(callID, fromTag)
        self._sendCancel(
            _requestURIOf(response),
            str(response.vias[0]),
            branch,
            response,
            [],
            (adopted.peer.send, adopted.peer.reliable),
        )
        timeout = upstream(response)
        timeout.code, timeout.reason, timeout.body = 408, "Request Timeout", b""
        for name in ("content-type", "contact", "record-route", "require", "rseq"):
            timeout.remove(name)
        hop = proxy.hopToLeg(adopted.caller)
        if hop is not None:
            hop[0](timeout.toBytes())
        self.amendRecord(response, adopted.caller, EndCause.NO_ANSWER, 408, "")

    def amendRecord(self, message: Request | Response, caller: Leg, cause: str, status: int, detail: str) -> None:
        """
        A call another server set up ended here (C{message} is the last
        word of it): its record, left open or closed by the failover,
        is amended (a recovered call, started and ended at once).
        """
        proxy = self.proxy
        uri = message.toAddr.uri
        call = Call(
            proxy.clock.seconds,
            message.callID,
            message.fromAddr.tag or "",
            message.fromAddr.uri.user or "",
            "",
            uri.host,
            caller,
            uri.user or "",
            proxy.observers,
        )
        call.recovered = True
        call.start()
        call.end(cause, status, detail)

    # -- cancelling the callees of another server's call ------------------

    def cancelCallees(
        self, cancel: Request, numbers: tuple[str, ...] | list[str], loop: str | None = None, answered: str = ""
    ) -> None:
        """
        The caller of a call another server forwarded cancelled it here:
        a CANCEL to each binding of C{numbers} (what the call rang), with
        the branch that server gave its INVITE there (L{forwardBranch}),
        so that the callee's INVITE transaction matches it (RFC 3261 9.1).
        A binding the INVITE did not reach answers 481 and rings on as it
        did. (C{loop}: the INVITE's loop tag, when C{cancel} is not the
        caller's own; C{answered}: a branch that needs no CANCEL.)
        """
        proxy = self.proxy
        loop = loopTag(cancel) if loop is None else loop
        via, fromTag, cseq = cancel.topVia, cancel.fromAddr.tag or "", cancel.cseq[0]
        for number in numbers:
            for binding in proxy.location.targets(number):
                hop = proxy.senderFor(binding)
                branch = forwardBranch(proxy.signer, via, cancel.callID, fromTag, cseq, number, binding.contact, loop)
                if hop is None or branch == answered:
                    continue
                ours = proxy._via(hop[2], hop[3], branch)
                self._sendCancel(binding.contact, ours, branch, cancel, binding.path, (hop[0], hop[1]))
                adopted = self._ringing.pop(branch, None)
                if adopted is not None and adopted.timer.active():
                    adopted.timer.cancel()

    def _cancelOthers(self, response: Response, caller: Via, leg: Leg) -> None:
        """After a final non-2xx passed up: the call's other forks, if any, are CANCELled (from the records)."""
        lookup = self.proxy.ringingElsewhere
        if lookup is None:
            return
        callID = response.callID
        answered = response.vias[0].branch or ""
        # What the caller's CANCEL would have been.
        headers = [["via", str(caller)], ["from", response.get("from") or ""], ["to", response.get("to") or ""]]
        headers += [["call-id", callID], ["cseq", f"{response.cseq[0]} CANCEL"]]
        cancel = Request("CANCEL", str(response.toAddr.uri), headers)

        def looked(numbers: object) -> None:
            if isinstance(numbers, (tuple, list)):
                self.cancelCallees(cancel, numbers, answered.partition(".")[2], answered)

        d = maybeDeferred(lookup, callID, response.fromAddr.tag or "", leg.source)
        d.addCallback(looked)
        d.addErrback(lambda f: log.failure("Cancelling the other forks of {callID} failed", f, callID=callID))

    def _sendCancel(
        self,
        target: str,
        via: str,
        branch: str,
        message: Request | Response,
        path: list[str] | tuple[str, ...],
        hop: tuple[Callable[[bytes], None], bool],
    ) -> None:
        """A CANCEL of the INVITE another server sent to C{target} with C{branch} (From, To, Call-ID, CSeq of C{message})."""
        headers = [["via", via], ["max-forwards", "70"]]
        headers += [["route", route] for route in path]
        headers += [
            ["from", message.get("from") or ""],
            ["to", _TAG.sub("", message.get("to") or "")],
            ["call-id", message.callID],
            ["cseq", f"{message.cseq[0]} CANCEL"],
        ]
        cancel = Request("CANCEL", target, headers)
        self.proxy.clients.send(cancel, hop[0], hop[1], lambda r: None, lambda: None, branch)

    def _stray2xx(self, response: Response, peer: Peer | None) -> None:
        """
        A 2xx no client transaction took (a retransmission): to the leg
        that asked. A 2xx to an INVITE that another server of the cluster
        forwarded (it died while the call rang; this one has the address
        now) makes its dialog from the signed token of its Record-Route
        and goes to the caller, whose INVITE transaction still waits,
        once the media handler has taken its SDP (L{_answerTaken}).
        """
        if not 200 <= response.code < 300:
            return
        rebuilt = False
        try:
            if len(response.vias) < 2:
                return
            dialog = self.proxy.dialogs.find(response.callID, response.fromAddr.tag, response.toAddr.tag)
            if dialog is None and not self.proxy.dialogs.ended(
                response.callID, response.fromAddr.tag, response.toAddr.tag
            ):
                dialog = self._answeredElsewhere(response, peer)
                rebuilt = dialog is not None
            if dialog is None:
                return
        except ParseError:
            return
        side = dialog.sideOf(response.fromAddr.tag)
        if side is None:
            return
        if peer is not None and not fromLeg(dialog.legs[Dialog.other(side)], peer):
            return
        hop = self.proxy.hopToLeg(dialog.legs[side])
        call = dialog.call
        if hop is None:
            if rebuilt and call is not None:
                # The caller cannot be reached (its connection is gone): the callee is not left answered.
                self._dropAnswer(dialog, call, response, EndCause.DEAD_DIALOG, "caller unreachable after a switch")
            return
        send = hop[0]
        answer = upstream(response)
        if dialog.answer is not None:
            # Rebuilt here from its 2xx: that 2xx's Contact fixed as the dead server would have.
            callee = dialog.legs[CALLEE]
            fixContact(answer, callee.source, callee.transport)
        if rebuilt and call is not None:
            self._answerTaken(dialog, call, response, answer, send)
        elif dialog.answer is not None and call is not None:
            # A retransmission of a 2xx rebuilt here: the SDP the caller got
            # the first time (after the handler's work on it, if pending).
            def again(message: Request | Response) -> None:
                if call.ended or dialog.answer is None:
                    return
                message.body = dialog.answer
                send(message.toBytes())

            self.proxy.media.process(call, answer, None, dialog.key, CALLEE, again)
        else:
            send(answer.toBytes())

    def _answeredElsewhere(self, response: Response, peer: Peer | None) -> Dialog | None:
        """
        The dialog of a 2xx to an INVITE whose signed Record-Route names
        us, sent by the callee the token names, rebuilt; else C{None}.
        """
        if response.cseq[1] != "INVITE" or not response.toAddr.tag:
            return None
        contacts = response.contacts
        if len(contacts) != 1:
            return None
        for route in response.recordRoutes:
            uri = route.uri
            if not self.proxy.isOurs(uri):
                continue
            token = uri.params.get("dlg")
            if not token:
                continue
            verified = self.proxy.signer.verify(token, response.callID, (response.fromAddr.tag, response.toAddr.tag))
            if verified is None or verified.method != "INVITE" or verified.callerTag != response.fromAddr.tag:
                return None
            if peer is not None and not fromLeg(verified.calleeLeg.leg(), peer):
                # Only the callee may answer: a copy from anywhere else makes no call.
                return None
            if self.proxy.dialogs.cancelled(response.callID, verified.callerTag):
                self._answerOfCancelled(response, verified, str(contacts[0].uri))
                return None
            dialog = self.rebuild(response, verified, str(contacts[0].uri))
            # Requests in the dialog's name (BYE, probes) follow the 2xx:
            # past the caller's CSeq, through the other proxies it names.
            dialog.sent(CALLER, response.cseq[0])
            self.router._calleeAnswer(dialog, response)
            dialog.answer = b""
            return dialog
        return None

    def _answerOfCancelled(self, response: Response, token: DialogToken, remote: str) -> None:
        """
        The callee answered a call whose caller cancelled it here (after
        the server that set it up failed): ACK and BYE to the callee, no
        call.
        """
        callerLeg, calleeLeg = token.callerLeg.leg(), token.calleeLeg.leg()
        calleeTag = response.toAddr.tag or ""
        dialog = Dialog(
            "INVITE", response.callID, token.callerTag, calleeTag, callerLeg, calleeLeg, token.key, None, CONFIRMED
        )
        dialog.uris = {CALLER: response.fromAddr.uri, CALLEE: response.toAddr.uri}
        dialog.sent(CALLER, response.cseq[0])
        self.router._calleeAnswer(dialog, response)
        dialog.legs[CALLEE].contact = remote
        self.proxy.dialogs.endedHere(dialog.callID, dialog.callerTag, dialog.calleeTag)
        log.info("{callID} answered after its caller cancelled it: ACK and BYE to the callee", callID=dialog.callID)
        self.router.ackAnswer(dialog, CALLEE, response.cseq[0], response, False)
        self.router.requestInDialog(dialog, CALLEE, "BYE", lambda code: None, reason=EndCause.CANCELLED)

    def _answerTaken(
        self, dialog: Dialog, call: Call, response: Response, answer: Response, send: Callable[[bytes], None]
    ) -> None:
        """
        The 2xx of a call another server set up goes to the caller once the
        media handler took its SDP, like any answer: with an rtpengine node
        the session the dead server's offer made there goes on. The INVITE
        is taken to have carried the offer (a late offer in the 2xx is
        rare among codecs; the ACK's SDP then goes to the handler as an
        answer too). When the handler cannot take it (a built-in relay's
        session died with the other server; a node that knows no such
        call), no one-way audio either: the callee gets ACK and BYE, the
        caller a 500 with a Warning (end cause C{media failure}), and
        dials again.
        """

        def taken(message: Request | Response) -> None:
            if call.ended:
                return
            dialog.answer = message.body
            send(message.toBytes())

        def failed(failure: Failure) -> None:
            self._answerElsewhereFailed(dialog, call, response, answer, send, failure)

        self.proxy.media.process(call, answer, ANSWER, dialog.key, CALLEE, taken, failed, failed)

    def _answerElsewhereFailed(
        self,
        dialog: Dialog,
        call: Call,
        response: Response,
        answer: Response,
        send: Callable[[bytes], None],
        failure: Failure,
    ) -> None:
        error = failure.getErrorMessage()
        log.warn("Media failed on the answer of {call}, set up by another server: {error}", call=call, error=error)
        detail = f"relay failed on the callee's answer after a switch: {error}"
        refusal = answer.copy()
        refusal.code, refusal.reason = 500, "Media Relay Failed"
        for name in ("content-type", "contact", "record-route", "require", "supported", "allow"):
            refusal.remove(name)
        refusal.body = b""
        quoted = detail.replace("\\", "").replace('"', "'")
        refusal.add("warning", f'399 aetasip "{quoted}"')
        send(refusal.toBytes())
        self._dropAnswer(dialog, call, response, EndCause.MEDIA_FAILURE, detail, 500)

    def _dropAnswer(
        self, dialog: Dialog, call: Call, response: Response, cause: str, detail: str, status: int = 0
    ) -> None:
        """End a call whose 2xx (rebuilt here) does not reach its caller: ACK and BYE to the callee."""
        self.router.ackAnswer(dialog, CALLEE, response.cseq[0], response, False)
        self.router.requestInDialog(dialog, CALLEE, "BYE", lambda code: None, reason=cause)
        dialog.answer = None
        self.proxy.dialogs.remove(dialog)
        self.proxy.liveness.forget(dialog)
        call.end(cause, status, detail)

    def rebuild(self, request: Request | Response, token: DialogToken, remote: str | None = None) -> Dialog:
        """
        A dialog (and its call) from a verified token: we set it up before
        a restart. C{request} is an in-dialog request, or (with the
        callee's C{remote} target) the 2xx that answers the call.
        """
        proxy = self.proxy
        fromTag, toTag = request.fromAddr.tag or "", request.toAddr.tag or ""
        callerTag = token.callerTag
        fromCaller = fromTag == callerTag
        calleeTag = toTag if fromCaller else fromTag
        callerLeg, calleeLeg = token.callerLeg.leg(), token.calleeLeg.leg()
        live = proxy.callsByDialogID.get((request.callID, callerTag)) if token.method == "INVITE" else None
        if live is not None:
            # A call in progress here: an early dialog of one of its branches
            # (a PRACK or an UPDATE before the answer).
            return self._earlyDialog(request, token, live, calleeTag, calleeLeg, fromCaller, remote)
        call = None
        if token.method == "INVITE":
            call = Call(
                proxy.clock.seconds,
                request.callID,
                callerTag,
                token.caller,
                "",
                "",
                callerLeg,
                token.callee,
                proxy.observers,
            )
            call.recovered = True
            call.resolve(token.callee)
            target = call.addTarget(token.callee, calleeLeg)
            target.key = token.key
            target.status = 200
            proxy.calls[call.id] = call
            call.whenEnded(proxy._callEnded)
            call.start()
            call.answered(target, calleeTag)
        dialog = Dialog(
            token.method, request.callID, callerTag, calleeTag, callerLeg, calleeLeg, token.key, call, CONFIRMED
        )
        fromURI, toURI = request.fromAddr.uri, request.toAddr.uri
        dialog.uris = {CALLER: fromURI, CALLEE: toURI} if fromCaller else {CALLER: toURI, CALLEE: fromURI}
        # The Request-URI is the receiver's remote target.
        dialog.legs[CALLEE if fromCaller else CALLER].contact = _remoteTarget(request, remote)
        dialog = proxy.dialogs.add(dialog)
        if call is not None:
            call.dialogs.append(dialog)
            proxy.liveness.watch(dialog, None)
        log.info("Dialog {dialog} rebuilt from its signed Route", dialog=dialog)
        return dialog

    def _earlyDialog(
        self,
        request: Request | Response,
        token: DialogToken,
        call: Call,
        calleeTag: str,
        calleeLeg: Leg,
        fromCaller: bool,
        remote: str | None = None,
    ) -> Dialog:
        target = call.target(token.key)
        if target is not None:
            calleeLeg = target.leg
        state = EARLY if call.answeredBy is None else CONFIRMED
        dialog = Dialog(
            "INVITE", call.callID, call.callerTag, calleeTag, call.callerLeg, calleeLeg, token.key, call, state
        )
        fromURI, toURI = request.fromAddr.uri, request.toAddr.uri
        dialog.uris = {CALLER: fromURI, CALLEE: toURI} if fromCaller else {CALLER: toURI, CALLEE: fromURI}
        dialog.legs[CALLEE if fromCaller else CALLER].contact = _remoteTarget(request, remote)
        dialog = self.proxy.dialogs.add(dialog)
        call.dialogs.append(dialog)
        return dialog


def _remoteTarget(message: Request | Response, remote: str | None) -> str:
    """The remote target of the receiver of C{message}: C{remote}, else its Request-URI."""
    if remote is not None:
        return remote
    assert isinstance(message, Request)
    return message.uri


def _requestURIOf(response: Response) -> str:
    """
    The Request-URI the INVITE of C{response} had, as near as a response
    tells: the callee's Contact (its binding, usually), else the To URI.
    (Agents match an ACK or CANCEL to the INVITE by branch, RFC 3261 17.2.3.)
    """
    try:
        contacts = response.contacts
    except ParseError:
        contacts = []
    if len(contacts) == 1:
        return str(contacts[0].uri)
    return str(response.toAddr.uri)
