"""
In-dialog traffic: requests with a To tag, ACKs for 2xx and stray 2xx.

Each is routed through a L{Dialog} the proxy set up, found in the table by
Call-ID and tags, or rebuilt from the signed token of our own Route (a
restart, a backup server); it goes to the *other* leg of that dialog, at
the address that leg's signalling comes from, and only when it comes from
one of the legs. Anything else gets 481 (no such dialog) or 403 (a forged
token, a stranger) and is sent nowhere: the service is neither a relay nor
a reflector.

The router also makes the requests the proxy sends in a dialog's name:
the OPTIONS probes of L{aetasip.calls.liveness} and the BYEs that release
a call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.logger import Logger
from twisted.python.failure import Failure

from aetasip.calls.call import Call, EndCause, Leg
from aetasip.calls.context import Branch, ResponseContext
from aetasip.calls.dialog import CALLEE, CALLER, CONFIRMED, EARLY, Dialog
from aetasip.calls.media import ANSWER, OFFER, declinedAnswer, kindOfRequestSDP, kindOfResponseSDP, refusal, sdpOf
from aetasip.calls.surgery import (
    copyRequest,
    decrementMaxForwards,
    fixContact,
    fixedURI,
    normalHost,
    upstream,
)
from aetasip.calls.token import DialogToken
from aetasip.sip.client import newBranch
from aetasip.sip.errors import ParseError
from aetasip.sip.headers import parseNameAddr, splitCommas
from aetasip.sip.message import Request, Response
from aetasip.sip.transaction import Peer, ServerTransaction
from aetasip.sip.uri import URI

if TYPE_CHECKING:
    from aetasip.calls.proxy import Hop, Proxy

log = Logger()

# What _dialogFor answers for a token that does not verify, and for a
# dialog that ended here lately (its late requests get 481: see
# DialogTable.ended).
FORGED = object()
ENDED = object()

# Methods whose Contact refreshes the sender's remote target (RFC 3261 12.2,
# RFC 3311, RFC 6665).
TARGET_REFRESH = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})

# How long a subscription dialog is kept past its expiry without news.
_SUBSCRIPTION_GRACE = 32.0
_REFER_LIFETIME = 3600.0


def _fromLeg(leg: Leg, peer: Peer) -> bool:
    """
    Does C{peer} stand for C{leg}: the same address and port? (A host alone
    would let anyone behind the same NAT, or on the same host, end or
    take over the call.)
    """
    return leg.source[1] == peer.source[1] and normalHost(leg.source[0]) == normalHost(peer.source[0])


class DialogRouter:
    """The proxy's in-dialog half (see the module docstring)."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy

    # -- requests ---------------------------------------------------------

    def request(self, request: Request, peer: Peer, server: ServerTransaction) -> None:
        """A request with a To tag."""
        proxy = self.proxy
        found = self._ourRoutes(request)
        if found is None:
            server.respond(proxy._reply(request, 400, "Malformed Route"))
            return
        dialog = self._dialogFor(request, found)
        if dialog is FORGED:
            log.info("Forged dialog token in {method} from {peer}", method=request.method, peer=peer)
            server.respond(proxy._reply(request, 403, "Not a dialog of this service"))
            return
        if not isinstance(dialog, Dialog):
            if dialog is ENDED:
                log.info("{method} of a dialog that ended from {peer}: 481", method=request.method, peer=peer)
            server.respond(proxy._reply(request, 481))
            return
        side = dialog.sideOf(request.fromAddr.tag)
        if side is None:
            server.respond(proxy._reply(request, 481))
            return
        if not _fromLeg(dialog.legs[side], peer):
            log.info("{method} of a dialog from a stranger {peer}", method=request.method, peer=peer)
            server.respond(proxy._reply(request, 403, "Not a party to this call"))
            return
        self._learn(dialog.legs[side], peer)
        method = request.method
        other = Dialog.other(side)
        leg = dialog.legs[other]
        dialog.sent(side, request.cseq[0])
        if method == "BYE":
            self._ended(dialog, EndCause.CALLER_BYE if side == CALLER else EndCause.CALLEE_BYE)
        elif method == "NOTIFY" and (request.get("subscription-state") or "").lower().startswith("terminated"):
            proxy.dialogs.remove(dialog)
        hop = proxy.hopToLeg(leg)
        if hop is None:
            server.respond(proxy._reply(request, 480, "Party unreachable"))
            return
        outgoing = copyRequest(request)
        decrementMaxForwards(outgoing)
        # A target refresh may carry a new Contact: it must stay reachable too.
        fixContact(outgoing, peer.source, peer.transport)
        if method in TARGET_REFRESH:
            contact = outgoing.get("contact")
            if contact is not None:
                dialog.legs[side].contact = contact
        if method == "SUBSCRIBE":
            self._subscriptionExpires(dialog, request)
        kind = kindOfRequestSDP(method)
        hadOffer = kind == OFFER and sdpOf(request) is not None
        call = dialog.call
        media = proxy.media
        # Without a handler nothing is ever pending (see MediaHook.process).
        direct = call is None or media.handler is None
        if method != "INVITE":
            # No Timer C, no CANCEL: one client transaction is all it takes.
            if direct:
                self._forward(dialog, other, outgoing, hop, server, hadOffer)
            else:
                media.process(
                    call,
                    outgoing,
                    kind,
                    dialog.key,
                    side,
                    lambda _: self._forward(dialog, other, outgoing, hop, server, hadOffer),
                    lambda failure: server.respond(proxy._reply(request, *refusal(failure))),
                    lambda failure: self._answerFailed(dialog, side, f"a {method}", request, server, failure),
                )
            return
        context = ResponseContext(proxy, request, peer, server, dialog=dialog)
        context.extra = {"to": other, "key": dialog.key}
        # A CANCEL of a re-INVITE finds it there.
        proxy._contexts[server.key] = context
        context.hadOffer = hadOffer
        branch = Branch(leg, outgoing)
        if direct:
            context.start([branch])
            return
        assert call is not None

        def refused(failure: Failure) -> None:
            proxy._contexts.pop(server.key, None)
            server.respond(proxy._reply(request, *refusal(failure)))

        proxy.media.process(call, outgoing, kind, dialog.key, side, lambda _: context.start([branch]), refused)

    def _forward(
        self, dialog: Dialog, to: str, outgoing: Request, hop: Hop, server: ServerTransaction, hadOffer: bool
    ) -> None:
        """Send a non-INVITE in-dialog request to the leg C{to}; its answers go back up."""
        proxy = self.proxy
        send, reliable, transport, local = hop
        branch = newBranch()
        outgoing.addFirst("via", proxy._via(transport, local, branch))
        method = outgoing.method
        leg = dialog.legs[to]

        def answered(response: Response) -> None:
            code = response.code
            if 100 < code < 300:
                fixContact(response, leg.source, leg.transport)
            if 200 <= code < 300:
                self._refreshedBy(dialog, method, to, response)
            answer = upstream(response)
            call = dialog.call
            media = proxy.media
            if call is None or media.handler is None or not 200 <= code < 300:
                server.respond(answer)
                return
            media.process(
                call,
                answer,
                kindOfResponseSDP(hadOffer),
                dialog.key,
                to,
                server.respond,  # type: ignore[arg-type]
                None,
                lambda failure: self._answerFailed(
                    dialog, to, f"the {code} to its {method}", outgoing, server, failure, answer
                ),
            )

        # RFC 4320 4.1: no 408 to a non-INVITE; its sender gave up too.
        proxy.clients.send(outgoing, send, reliable, answered, server.abandon, branch)

    def ack(self, request: Request, peer: Peer) -> None:
        """An ACK for a 2xx: to the other leg, statelessly; dropped outside our dialogs."""
        proxy = self.proxy
        found = self._ourRoutes(request)
        dialog = None if found is None else self._dialogFor(request, found)
        if not isinstance(dialog, Dialog):
            log.debug("Dropped an ACK outside our dialogs from {peer}", peer=peer)
            return
        side = dialog.sideOf(request.fromAddr.tag)
        if side is None or not _fromLeg(dialog.legs[side], peer):
            return
        hop = proxy.hopToLeg(dialog.legs[Dialog.other(side)])
        if hop is None:
            return
        outgoing = copyRequest(request)
        outgoing.addFirst("via", proxy._via(hop[2], hop[3]))
        decrementMaxForwards(outgoing)
        send = hop[0]
        if dialog.call is None:
            send(outgoing.toBytes())
            return
        # SDP in an ACK answers an offer made in the 2xx (RFC 3264 late offer).
        proxy.media.process(
            dialog.call,
            outgoing,
            ANSWER,
            dialog.key,
            side,
            lambda m: send(m.toBytes()),
            None,
            lambda failure: self._ackAnswerFailed(dialog, side, outgoing, send, failure),
        )

    def _ackAnswerFailed(
        self, dialog: Dialog, side: str, outgoing: Request, send: Callable[[bytes], None], failure: Failure
    ) -> None:
        """
        The media handler could not take the answer an ACK carries (to the
        offer of a 2xx: a late offer, RFC 3264). Passing it on would give
        one-way or no audio, and an ACK cannot be refused: like a UAC that
        cannot take the offer of a 2xx (RFC 3261 13.2.2.4), the proxy sends
        the ACK on with an answer declining every stream (RFC 3264 6; the
        un-relayed addresses go nowhere), then a BYE to both sides; end
        cause C{media failure}.
        """
        call = dialog.call
        error = failure.getErrorMessage()
        log.warn("Media failed on the answer in an ACK of {call}: {error}", call=call, error=error)
        outgoing.body = declinedAnswer(sdpOf(outgoing) or b"")
        send(outgoing.toBytes())
        if call is not None:
            self.proxy.release(call, EndCause.MEDIA_FAILURE, f"relay failed on the {side}'s answer in an ACK: {error}")

    def _answerFailed(
        self,
        dialog: Dialog,
        side: str,
        what: str,
        request: Request,
        server: ServerTransaction,
        failure: Failure,
        response: Response | None = None,
    ) -> None:
        """
        The media handler could not take the answer C{side} sent in
        C{what}: a PRACK (to the offer of a reliable 18x, RFC 3262), or
        the 2xx to an UPDATE or PRACK that made an offer (RFC 3311). The
        un-relayed SDP does not go on: the PRACK, or the 2xx, is replaced
        by a 500 with a Warning to the party that sent C{request}. The
        other party has taken the session, which the relay cannot carry:
        before the answer the branch ends as for a reliable 18x whose own
        answer failed (the callee gets a CANCEL, the caller a 500 unless
        another branch answers), after it the call ends with a BYE to
        both; end cause C{media failure}.
        """
        proxy = self.proxy
        call = dialog.call
        error = failure.getErrorMessage()
        log.warn("Media failed on the answer in {what} of {call}: {error}", what=what, call=call, error=error)
        detail = f"relay failed on the {side}'s answer in {what}: {error}"
        quoted = detail.replace("\\", "").replace('"', "'")
        warning = f'399 aetasip "{quoted}"'
        if response is not None:
            # The 2xx, already on its way up, turned into the refusal.
            refused = response.copy()
            refused.code, refused.reason, refused.body = 500, "Media Relay Failed", b""
            for name in ("content-type", "contact", "record-route"):
                refused.remove(name)
        else:
            refused = proxy._reply(request, 500, "Media Relay Failed")
        refused.add("warning", warning)
        server.respond(refused)
        if call is not None:
            proxy.earlyAnswerFailed(call, dialog.key, warning, detail)

    def strayResponse(self, response: Response, peer: Peer | None) -> None:
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
        if peer is not None and not _fromLeg(dialog.legs[Dialog.other(side)], peer):
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
            if peer is not None and not _fromLeg(verified.calleeLeg.leg(), peer):
                # Only the callee may answer: a copy from anywhere else makes no call.
                return None
            if self.proxy.dialogs.cancelled(response.callID, verified.callerTag):
                self._answerOfCancelled(response, verified, str(contacts[0].uri))
                return None
            dialog = self._rebuild(response, verified, str(contacts[0].uri))
            # Requests in the dialog's name (BYE, probes) follow the 2xx:
            # past the caller's CSeq, through the other proxies it names.
            dialog.sent(CALLER, response.cseq[0])
            self._calleeAnswer(dialog, response)
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
        self._calleeAnswer(dialog, response)
        dialog.legs[CALLEE].contact = remote
        self.proxy.dialogs.endedHere(dialog.callID, dialog.callerTag, dialog.calleeTag)
        log.info("{callID} answered after its caller cancelled it: ACK and BYE to the callee", callID=dialog.callID)
        self.ackAnswer(dialog, CALLEE, response.cseq[0], response, False)
        self.requestInDialog(dialog, CALLEE, "BYE", lambda code: None, reason=EndCause.CANCELLED)

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
        self.ackAnswer(dialog, CALLEE, response.cseq[0], response, False)
        self.requestInDialog(dialog, CALLEE, "BYE", lambda code: None, reason=cause)
        dialog.answer = None
        self.proxy.dialogs.remove(dialog)
        self.proxy.liveness.forget(dialog)
        call.end(cause, status, detail)

    # -- finding dialogs ------------------------------------------------------

    def _ourRoutes(self, request: Request) -> list[str] | None:
        """
        Loose routing (RFC 3261 16.4): drop the Route entries naming us.
        @return: the dialog tokens they carried (maybe none); C{None} when
            a Route does not parse.
        """
        tokens: list[str] = []
        try:
            # Parsed once; popped in one pass (a loop popping one entry at a
            # time split the whole list again for each).
            routes = request.routes
        except ParseError:
            return None
        ours = 0
        for route in routes:
            uri = route.uri
            if not self.proxy.isOurs(uri):
                break
            token = uri.params.get("dlg")
            if token:
                tokens.append(token)
            ours += 1
        if ours:
            request.removeFirstValues("route", ours)
        return tokens

    def _dialogFor(self, request: Request, tokens: list[str]) -> Dialog | object | None:
        """
        The dialog of C{request}, from the table or a token; L{FORGED};
        L{ENDED} for a dialog that ended here lately (never rebuilt from
        its token: that is for a restart or a backup server); or C{None}.
        """
        proxy = self.proxy
        fromTag, toTag = request.fromAddr.tag, request.toAddr.tag
        dialogs = proxy.dialogs
        dialog = dialogs.find(request.callID, fromTag, toTag)
        if dialog is not None:
            if dialog.expires is not None and dialog.expires < proxy.clock.seconds():
                dialogs.remove(dialog)
                return ENDED
            return dialog
        if dialogs.ended(request.callID, fromTag, toTag):
            return ENDED
        if not tokens:
            return None
        verified = proxy.signer.verify(tokens[0], request.callID, (fromTag, toTag))
        if verified is None:
            return FORGED
        return self._rebuild(request, verified)

    def _rebuild(self, request: Request | Response, token: DialogToken, remote: str | None = None) -> Dialog:
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

    def dialogFromResponse(
        self, context: ResponseContext, branch: Branch, response: Response, early: bool
    ) -> Dialog | None:
        """The dialog a 1xx or 2xx with a To tag makes (or confirms)."""
        proxy = self.proxy
        tag = response.toAddr.tag
        if tag is None:
            return None
        call = context.call
        existing = proxy.dialogs.find(context.callID, context.fromTag, tag)
        if existing is not None:
            if not early and existing.state == EARLY:
                existing.state = CONFIRMED
                self._calleeAnswer(existing, response)
            return existing
        peer = context.peer
        callerLeg = (
            call.callerLeg if call is not None else Leg(peer.source, peer.transport, peer.local, peer.connection)
        )
        key = branch.target.key if branch.target is not None else "0"
        dialog = Dialog(
            context.method,
            context.callID,
            context.fromTag,
            tag,
            callerLeg,
            branch.leg,
            key,
            call,
            EARLY if early else CONFIRMED,
        )
        dialog.uris = {CALLER: context.fromURI, CALLEE: context.toURI}
        dialog.cseq[CALLER] = context.cseq
        if context.contact is not None:
            callerLeg.contact = context.contact
        if not early:
            # What requests in the dialog's name need (probes, BYE): only
            # confirmed dialogs get them.
            self._calleeAnswer(dialog, response)
        if call is None:
            self._subscriptionExpires(dialog, response)
        dialog = proxy.dialogs.add(dialog)
        if call is not None:
            call.dialogs.append(dialog)
        return dialog

    def _calleeAnswer(self, dialog: Dialog, response: Response) -> None:
        """What requests in the dialog's name need from the answer, kept as text (parsed when used)."""
        contact = response.get("contact")
        if contact is not None:
            dialog.legs[CALLEE].contact = contact
        dialog.recordRoute = [value for name, value in response.headers if name == "record-route"]

    def _routesTo(self, dialog: Dialog, side: str) -> list[str]:
        """The Route set towards C{side} beyond this proxy (other proxies' Record-Route entries)."""
        if dialog.routes is None:
            routes = [route for value in dialog.recordRoute for route in splitCommas(value)]
            # Ours carry a token: other proxies' entries are not even parsed.
            ours = [i for i, route in enumerate(routes) if ";dlg=" in route and self._isOurRoute(route)]
            dialog.routes = {CALLER: [], CALLEE: []}
            if ours:
                dialog.routes[CALLER] = list(reversed(routes[: ours[0]]))
                dialog.routes[CALLEE] = routes[ours[-1] + 1 :]
        return dialog.routes[side]

    def _isOurRoute(self, route: str) -> bool:
        try:
            return self.proxy.isOurs(parseNameAddr(route).uri)
        except ParseError:
            return False

    def refreshed(self, context: ResponseContext, branch: Branch, response: Response) -> None:
        """The 2xx of an in-dialog request went up."""
        dialog = context.dialog
        assert dialog is not None
        self._refreshedBy(dialog, context.method, context.extra.get("to", CALLEE), response)

    def _refreshedBy(self, dialog: Dialog, method: str, side: str, response: Response) -> None:
        """C{side} answered C{method} in C{dialog} with a 2xx."""
        if method in TARGET_REFRESH:
            contact = response.get("contact")
            if contact is not None:
                dialog.legs[side].contact = contact
        if method in ("INVITE", "UPDATE"):
            self.proxy.liveness.refreshed(dialog, response)
        elif method == "SUBSCRIBE":
            self._subscriptionExpires(dialog, response)

    def _subscriptionExpires(self, dialog: Dialog, message: Request | Response) -> None:
        if dialog.method == "INVITE":
            return
        value = message.get("expires")
        lifetime = float(value) if value is not None and value.isdigit() else _REFER_LIFETIME
        dialog.expires = self.proxy.clock.seconds() + lifetime + _SUBSCRIPTION_GRACE

    def _learn(self, leg: Leg, peer: Peer) -> None:
        """A leg's requests now come on C{peer}'s connection (it connected again from the same address)."""
        if leg.connection is not peer.connection:
            leg.transport, leg.local, leg.connection = peer.transport, peer.local, peer.connection

    def _ended(self, dialog: Dialog, cause: str) -> None:
        """A BYE went through C{dialog}: the dialog is over, and its call if it was the answer."""
        self.proxy.dialogs.remove(dialog)
        self.proxy.liveness.forget(dialog)
        call = dialog.call
        if call is not None and call.answeredBy is not None and call.answeredBy.key == dialog.key:
            call.end(cause)

    # -- requests in a dialog's name ----------------------------------------------

    def release(self, call: Call, cause: str, detail: str) -> None:
        """End C{call} from the server's side (see L{Proxy.release})."""
        if call.answeredBy is None:
            control = call.control
            call.end(cause, 487, detail)
            if control is not None:
                control.cancel()
            return
        for dialog in [d for d in call.dialogs if d.state == CONFIRMED and d.key == call.answeredBy.key]:
            for side in (CALLER, CALLEE):
                self.requestInDialog(dialog, side, "BYE", lambda code: None, reason=cause)
        call.end(cause, detail=detail)

    @staticmethod
    def _remoteTarget(leg: Leg) -> str:
        """
        Where a request to C{leg} is addressed: its Contact, pointed at the
        address its packets come from (as the other party sees it).
        """
        uri = None
        if leg.contact:
            try:
                uri = parseNameAddr(leg.contact).uri
            except ParseError:
                pass
        if uri is None:
            host = f"[{leg.source[0]}]" if ":" in leg.source[0] else leg.source[0]
            return str(URI("sip", None, host, leg.source[1]))
        return str(fixedURI(uri, leg.source, leg.transport) or uri)

    def abandonAnswer(
        self, context: ResponseContext, branch: Branch, response: Response, declineOffer: bool, reason: str
    ) -> Callable[[], None] | None:
        """
        End the dialog a callee's 2xx to the initial INVITE made, which the
        proxy does not pass on: an ACK (with an answer declining every
        stream when the 2xx made an offer, RFC 3264 6), then a BYE.

        @return: what sends that ACK again (for each retransmission of
            the 2xx), or C{None} when the callee cannot be reached.
        """
        tag = response.toAddr.tag
        if tag is None:
            return None
        dialog = Dialog(
            "INVITE",
            context.callID,
            context.fromTag,
            tag,
            context.call.callerLeg if context.call is not None else Leg(context.peer.source, "udp", ("", 0)),
            branch.leg,
            branch.target.key if branch.target is not None else "0",
            None,
            CONFIRMED,
        )
        dialog.uris = {CALLER: context.fromURI, CALLEE: context.toURI}
        dialog.cseq[CALLER] = context.cseq
        self._calleeAnswer(dialog, response)
        # Its Route token must not bring it back (a late request of the callee's).
        self.proxy.dialogs.endedHere(dialog.callID, dialog.callerTag, dialog.calleeTag)
        sendAck = self.ackAnswer(dialog, CALLEE, context.cseq, response, declineOffer)
        if sendAck is None:
            return None
        self.requestInDialog(dialog, CALLEE, "BYE", lambda code: None, reason=reason)
        return sendAck

    def ackAnswer(
        self, dialog: Dialog, side: str, cseq: int, response: Response, declineOffer: bool
    ) -> Callable[[], None] | None:
        """
        ACK the 2xx C{side} sent to an INVITE (CSeq C{cseq}) of C{dialog}
        in the other side's name, with an answer declining every stream
        when the 2xx made an offer (RFC 3264 6).

        @return: what sends that ACK again, or C{None} when C{side} cannot
            be reached.
        """
        built = self._inDialog(dialog, side, "ACK", cseq)
        if built is None:
            return None
        ack, hop = built
        if declineOffer:
            ack.set("content-type", "application/sdp")
            ack.body = declinedAnswer(response.body)
        data = ack.toBytes()

        def sendAck() -> None:
            hop[0](data)

        sendAck()
        return sendAck

    def _inDialog(
        self, dialog: Dialog, side: str, method: str, cseq: int, reason: str = ""
    ) -> tuple[Request, Hop] | None:
        """C{method} to C{side} of C{dialog} as if from the other side, and how to send it."""
        proxy = self.proxy
        leg = dialog.legs[side]
        hop = proxy.hopToLeg(leg)
        if hop is None:
            return None
        other = Dialog.other(side)
        tags = {CALLER: dialog.callerTag, CALLEE: dialog.calleeTag}
        target = self._remoteTarget(leg)
        headers = [["via", proxy._via(hop[2], hop[3], newBranch())], ["max-forwards", "70"]]
        headers += [["route", route] for route in self._routesTo(dialog, side)]
        headers += [
            ["from", f"<{dialog.uris[other]}>;tag={tags[other]}"],
            ["to", f"<{dialog.uris[side]}>;tag={tags[side]}"],
            ["call-id", dialog.callID],
            ["cseq", f"{cseq} {method}"],
        ]
        if reason:
            headers.append(["reason", f'SIP;text="{reason}"'])
        headers.append(["user-agent", proxy.serverHeader])
        return Request(method, target, headers), hop

    def requestInDialog(
        self, dialog: Dialog, side: str, method: str, onFinal: Callable[[int | None], None], reason: str = ""
    ) -> None:
        """
        Send C{method} to C{side} of C{dialog}, as if from the other side;
        C{onFinal} gets the final status, or C{None} when none came (or the
        leg cannot be reached).
        """
        proxy = self.proxy
        other = Dialog.other(side)
        if method == "BYE":
            # Past every CSeq the other side used, so it is not out of order.
            dialog.cseq[other] += 1
        built = self._inDialog(dialog, side, method, max(dialog.cseq[other], 1), reason)
        if built is None:
            onFinal(None)
            return
        request, hop = built
        branch = request.topVia.branch or newBranch()

        def answered(response: Response) -> None:
            if response.code >= 200:
                onFinal(response.code)

        proxy.clients.send(request, hop[0], hop[1], answered, lambda: onFinal(None), branch)


def _remoteTarget(message: Request | Response, remote: str | None) -> str:
    """The remote target of the receiver of C{message}: C{remote}, else its Request-URI."""
    if remote is not None:
        return remote
    assert isinstance(message, Request)
    return message.uri
