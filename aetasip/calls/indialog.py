"""
In-dialog traffic: requests with a To tag and ACKs for 2xx.

Each is routed through a L{Dialog} the proxy set up, found in the table by
Call-ID and tags, or rebuilt from the signed token of our own Route (a
restart, a backup server: L{aetasip.calls.takeover}, which also takes the
responses no transaction took); it goes to the *other* leg of that dialog, at
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
    fromLeg,
    upstream,
)
from aetasip.calls.takeover import Takeover
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


class DialogRouter:
    """The proxy's in-dialog half (see the module docstring)."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.takeover = Takeover(proxy, self)

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
        if not fromLeg(dialog.legs[side], peer):
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
        if side is None or not fromLeg(dialog.legs[side], peer):
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
            proxy.mediaFailures.early(call, dialog.key, warning, detail)

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
        return self.takeover.rebuild(request, verified)

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
