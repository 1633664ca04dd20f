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
