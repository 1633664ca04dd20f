"""
The seams of aetasip: every pluggable policy is a zope interface here.

Implementations live in their own modules; third parties provide them as
Twisted plugins (see ``twisted/plugins/aetasip_plugin.py`` and README.rst).
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IAuthBackend(Interface):
    """
    Where digest credentials of accounts come from.

    A backend never stores or returns a plain SIP password: it returns the
    digest HA1 values (``H(number ":" realm ":" password)``) for the
    algorithms it knows.
    """

    name = Attribute("Short name of this backend, used in logs.")

    def credentials(number: str):
        """
        Look up the account C{number}.

        @return: a L{Deferred} firing with an
            L{aetasip.auth.Credentials} or with C{None} when this backend
            knows no such account. It fails with
            L{aetasip.auth.BackendUnavailable} when the backend cannot answer
            now (directory down); callers answer 503 then.
        """


class IAuthBackendFactory(Interface):
    """
    A named maker of L{IAuthBackend}s, discovered with
    C{twisted.plugin.getPlugins}.
    """

    name = Attribute("The name operators use in the configuration.")

    def makeBackend(options: dict, store):
        """
        Build a backend from its configuration section C{options}.

        @param store: the service's L{aetasip.store.AsyncStore}, for backends
            that keep their data there.
        @return: a provider of L{IAuthBackend}.
        """


class ILocationStore(Interface):
    """
    Where registrations (bindings of an address-of-record to contacts) live.
    """

    def lookup(aor: str):
        """
        @return: the list of current L{aetasip.location.Binding}s of
            C{aor}, soonest expiry last; synchronous, it is on the call path.
        """

    def targets(aor: str):
        """
        @return: where a call to C{aor} goes: its L{lookup} bindings, then
            those of the service's own agents (the test line), which are
            no registrations.
        """

    def bindings():
        """
        @return: every current binding, for reports.
        """


class IRegistrationListener(Interface):
    """
    Hears registration events.
    """

    def registrationEvent(event):
        """
        Called synchronously with an L{aetasip.location.RegistrationEvent}
        whose C{kind} is one of C{registered}, C{refreshed},
        C{unregistered}, C{expired} or C{conflict}. It must not block and
        must not raise.
        """


class IRoutingPolicy(Interface):
    """
    One step of call routing (L{aetasip.routing}).
    """

    name = Attribute("The name the configuration uses (routing.policies).")

    def apply(call, directory):
        """
        Examine and refine C{call} (an L{aetasip.routing.Call}), looking
        accounts and groups up in C{directory}.

        @return: an L{aetasip.routing.Refusal} to refuse the call, or
            C{None} to let the next step go on.
        """


class IRoutingPolicyFactory(Interface):
    """
    A named maker of L{IRoutingPolicy}s, discovered with
    C{twisted.plugin.getPlugins}.
    """

    name = Attribute("The name operators use in routing.policies.")

    def makePolicy(options):
        """
        @param options: the C{routing} configuration section.
        @return: a provider of L{IRoutingPolicy}.
        """


class ICallObserver(Interface):
    """
    Hears what happens to calls (L{aetasip.calls.call.Call}): call
    records, metrics and the portal are observers. Each method is called
    synchronously, once per call and in this order (a call may skip
    ringing and answered); it must not block. An observer that raises is
    logged and does not disturb the call.
    """

    def callStarted(call):
        """The call was routed and its first branches went out."""

    def callRinging(call):
        """A callee rings (180 or 183)."""

    def callAnswered(call):
        """A callee answered: the 2xx went up to the caller."""

    def callEnded(call):
        """
        The call is over: C{call.endCause}, C{call.status} say how. The
        media handler has released its media first: what it keeps on the
        call (C{call.media}, the relay's final statistics) is there.
        """


class ICallObserverFactory(Interface):
    """
    A named maker of L{ICallObserver}s, discovered with
    C{twisted.plugin.getPlugins} and named in C{calls.observers}.
    """

    name = Attribute("The name operators use in calls.observers.")

    def makeObserver(config, store):
        """
        @param config: the service's L{aetasip.config.Config}.
        @param store: the service's async store.
        @return: a provider of L{ICallObserver}; if it is also an
            L{twisted.application.service.IService}, it is started and
            stopped with the service.
        """


class ICallControl(Interface):
    """
    What media handlers, the test line, the admin API and the portal may do
    with the calls in progress (L{aetasip.calls.control.CallControl}).
    """

    def active():
        """The calls in progress (L{aetasip.calls.call.Call}), oldest first."""

    def find(callID):
        """The calls in progress with this SIP Call-ID (usually one)."""

    def release(call, cause, detail):
        """
        End C{call} from the server's side: an answered call gets a BYE on
        both legs, one still being set up is cancelled (the caller gets
        487). C{cause} is one of L{aetasip.calls.call.EndCause}; C{detail}
        a short text for its record. Nothing happens to an ended call.
        """

    def endedElsewhere(call, cause, detail):
        """
        C{call}, answered on this server, ended on another server of a
        cluster (its BYE went there after a switch): end it here too with
        C{cause} and C{detail}, sending nothing to its parties; its media
        is released. Nothing happens to a call not answered here.
        """

    def probe(enabled):
        """
        Send the dead-call probes (in-dialog OPTIONS) of answered calls, or
        stop sending them (a standby server of a cluster): while stopped,
        no call is judged dead.
        """

    def lookForCallsRingingElsewhere(lookup):
        """
        Answer the caller's CANCEL of a call another server of a cluster
        set up and left ringing (it died, or gave the address away): with
        C{lookup(callID, callerTag, source)} returning a L{Deferred}
        firing with the numbers such a call, from the caller's C{source},
        was ringing there (its call record says so), or C{None}, a CANCEL
        matching no INVITE here gets 200 and its caller a 487, the callee's
        bindings of those numbers get a CANCEL, and the callee's later 2xx
        is ACKed and ended, not passed on. C{None}: 481, as for any CANCEL
        of an unknown INVITE.
        """


class IMediaHandler(Interface):
    """
    Sees every SDP offer and answer of every call, and may rewrite them
    (the RTP relay). Each call returns a L{Deferred}: the proxy forwards
    the message once it fires, and keeps the order of a call's messages.

    @ivar name: short name, for logs.
    """

    name = Attribute("Short name of this handler, used in logs.")

    def offer(call, key, sender, sdp):
        """
        An SDP offer from C{sender} (C{"caller"} or C{"callee"}) on the
        branch C{key} of C{call} (the initial INVITE once per forked
        branch, a late offer in a 2xx, a re-INVITE, an UPDATE).

        @return: a L{Deferred} firing with the SDP (bytes) to forward;
            failing refuses the offer: the sender gets the status of an
            L{aetasip.calls.media.MediaRefused} (400 for bad SDP), or 503
            for any other failure (the branch is cancelled for an initial
            INVITE).
        """

    def answer(call, key, sender, sdp):
        """
        An SDP answer from C{sender} on branch C{key} (in a 18x, a 2xx, an
        ACK or a PRACK).

        @return: a L{Deferred} firing with the SDP to forward. Failing
            (the relay cannot carry that media) ends the branch for the
            answer of an initial INVITE: a 2xx is ACKed and the callee gets
            a BYE, the caller a 500 unless another branch answers; a
            reliable 18x has its branch cancelled; an unreliable 18x goes
            on without its SDP (no early media). Elsewhere (re-INVITEs,
            ACK, PRACK) the failure is logged and the answer forwarded
            unchanged.
        """

    def callEnded(call):
        """
        C{call} is over: release what it holds. Must not raise.

        @return: C{None}, or a L{Deferred} firing once it is released and
            what the handler keeps on the call (C{call.media}, final
            statistics) is there: the call's observers hear C{callEnded}
            then. It should fire within seconds (a node's own request
            timeouts bound it); a failure is logged.
        """


class IRelay(Interface):
    """
    One RTP relay node: the built-in relay (L{aetasip.relay}) or an
    rtpengine reached over its ng protocol. The relay's media handler
    decides which legs of a call are relayed and through which node, then
    asks the node to rewrite each SDP so that media goes through it. The
    model is rtpengine's (offer, answer, delete, query, keyed by Call-ID and
    tags), so both kinds of node fit it.

    A session is named by C{(callID, fromTag)}; the callee side of a forked
    call by its C{branch} (the L{aetasip.calls.call.Target} key) until the
    answer gives its C{toTag}.

    @ivar name: the node's name (a key of the relay configuration).
    """

    name = Attribute("The node's name in the configuration.")

    def offer(callID, fromTag, branch, sender, sdp, source, latchAnySource):
        """
        An SDP offer from C{sender} (C{"caller"} or C{"callee"}, a
        re-INVITE may come from either) whose signalling came from
        C{source} (C{(host, port)}).

        @param latchAnySource: the sender is behind NAT: its media is
            latched from the first packet coming from C{source}'s host,
            any port, and nothing is sent to the address its SDP
            advertises until then.
        @return: a L{Deferred} firing with the SDP to forward (pointing at
            the relay), or failing (no ports left, node unreachable).
        """

    def answer(callID, fromTag, toTag, branch, sender, sdp, source, latchAnySource):
        """
        The SDP answer to the last offer, like L{offer}. C{toTag} is the
        callee's To tag on this branch, C{None} when its response had none.
        """

    def delete(callID, fromTag):
        """
        Release the session's ports. Always safe to call, also for a
        session the node does not know.

        @return: a L{Deferred} firing with the final
            L{aetasip.relay.stats.RelayStats}, or C{None} if the node had
            no such session.
        """

    def query(callID, fromTag):
        """
        @return: a L{Deferred} firing with the session's current
            L{aetasip.relay.stats.RelayStats}, or C{None}.
        """

    def sessions():
        """
        @return: a L{Deferred} firing with a list of C{(callID, fromTag,
            RelayStats)} for every session the node holds (for
            C{aetasip-admin relay show} and the admin API).
        """


class IMediaHandlerFactory(Interface):
    """
    A named maker of L{IMediaHandler}s, discovered with
    C{twisted.plugin.getPlugins} and named in C{calls.media_handler}.
    """

    name = Attribute("The name operators use in calls.media_handler.")

    def makeHandler(config, calls, directory):
        """
        @param config: the service's L{aetasip.config.Config}.
        @param calls: the service's L{ICallControl}, through which a
            handler ends a call (C{calls.release(call, cause, detail)}) or
            lists calls.
        @param directory: the accounts and groups
            (L{aetasip.routing.Directory}), for per-account and per-group
            media settings (the relay mode).
        @return: a provider of L{IMediaHandler}; if it is also an
            L{twisted.application.service.IService}, it is started and
            stopped with the service.
        """


class ICallRecordSink(Interface):
    """
    Where call records (L{aetasip.records.record.CallRecord}) are kept:
    the SQL store by default (L{aetasip.records.sink.StoreRecordSink}).
    L{aetasip.records.cdr.CDRService} calls it one operation at a time;
    each may fail (the store is down), and is then tried again.
    """

    def recover(server, now):
        """
        Close the records C{server} left open when it died, with the end
        cause C{unknown end} at the last time it knew them alive, and start
        its heartbeat at C{now}. Called once when the service starts,
        before any write.

        @return: a L{Deferred} firing with the records closed.
        """

    def write(records, server, now):
        """
        Write C{records} (new ones, or new versions of records already
        written, by C{id}) durably, and note that C{server} was alive at
        C{now}.

        @return: a L{Deferred} firing once they are durable.
        """

    def heartbeat(server, now):
        """
        Note that C{server}, with its open calls, was alive at C{now}.

        @return: a L{Deferred}.
        """
