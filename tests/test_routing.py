"""
Routing policies: the number plan, hunting groups, incoming and outgoing
call blocking, the final 404, and their chain.

The examples of the user guide (section 5 of
C{seeds/aeta-sip-server-guide-en-b.txt}) are tests, verbatim.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

import twisted.plugins
from aetasip import config
from aetasip.config import ConfigError
from aetasip.interfaces import IRoutingPolicy, IRoutingPolicyFactory
from aetasip.routing import Account, Call, Refusal
from aetasip.routing.blocking import INCOMING_BLOCKED, OUTGOING_BLOCKED, BlockingPolicy
from aetasip.routing.chain import RoutingChain, makeRoutingChain, policyFactories
from aetasip.routing.hunting import HUNTING_CALLER, HuntingPolicy
from aetasip.routing.numberplan import ExistsPolicy, NumberPlanPolicy, normalise
from tests.routingdirectory import MemoryDirectory, guideDirectory

CHECKOUT_PLUGINS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "twisted", "plugins")

NOT_FOUND = Refusal(404, "Not Found")
SHIPPED = ["numberplan", "hunting", "blocking", "exists"]
SERIES = ["45676001", "45676002", "45676003"]


def newCall(directory: MemoryDirectory, caller: str, dialled: str) -> Call:
    account = directory.account(caller)
    assert account is not None, caller
    return Call(account, dialled, dialled)


class PluginPathMixin(SynchronousTestCase):
    def setUp(self) -> None:
        # The checkout's plugins, whether or not aetasip is installed.
        if CHECKOUT_PLUGINS not in twisted.plugins.__path__:
            self.patch(twisted.plugins, "__path__", [*twisted.plugins.__path__, CHECKOUT_PLUGINS])

    def chain(self, **settings: Any) -> RoutingChain:
        return makeRoutingChain(config.build({f"routing.{k}": v for k, v in settings.items()}))


class GuideExampleTests(PluginPathMixin):
    """
    The guide's examples, through the default chain.
    """

    def route(self, caller: str, dialled: str, **options4567: bool) -> tuple[Refusal | None, Call]:
        directory = guideDirectory(**options4567)
        call = newCall(directory, caller, dialled)
        return self.chain().route(call, directory), call

    def assertRouted(self, caller: str, dialled: str, callee: str, **options4567: bool) -> None:
        refusal, call = self.route(caller, dialled, **options4567)
        self.assertIsNone(refusal)
        self.assertEqual(call.callee, callee)
        self.assertIsNone(call.series)

    def assertBlocked(self, caller: str, dialled: str, refusal: Refusal, **options4567: bool) -> None:
        self.assertEqual(self.route(caller, dialled, **options4567)[0], refusal)

    # 5.3 Short numbering
    def test_45675412_calls_45675002(self) -> None:
        self.assertRouted("45675412", "45675002", "45675002")

    def test_45675412_calls_5002(self) -> None:
        self.assertRouted("45675412", "5002", "45675002")

    def test_45995005_calls_5002(self) -> None:
        self.assertRouted("45995005", "5002", "45995002")

    # 5.4 Incoming calls blocking, on group 4567
    def test_incoming_blocking_45675412_calls_45675002(self) -> None:
        self.assertRouted("45675412", "45675002", "45675002", incomingBlock=True)

    def test_incoming_blocking_45995005_calls_45675002(self) -> None:
        self.assertBlocked("45995005", "45675002", INCOMING_BLOCKED, incomingBlock=True)

    def test_incoming_blocking_factory_caller(self) -> None:
        """Calls originating from factory accounts are also rejected."""
        self.assertBlocked("902080", "45675002", INCOMING_BLOCKED, incomingBlock=True)

    # 5.5 Outgoing calls blocking, on group 4567
    def test_outgoing_blocking_45675412_calls_45675002(self) -> None:
        self.assertRouted("45675412", "45675002", "45675002", outgoingBlock=True)

    def test_outgoing_blocking_45675412_calls_45995033(self) -> None:
        self.assertBlocked("45675412", "45995033", OUTGOING_BLOCKED, outgoingBlock=True)

    def test_outgoing_blocking_45675412_calls_902080(self) -> None:
        self.assertBlocked("45675412", "902080", OUTGOING_BLOCKED, outgoingBlock=True)

    def test_outgoing_blocking_45675412_calls_15000(self) -> None:
        self.assertRouted("45675412", "15000", "15000", outgoingBlock=True)

    # 5.8 Hunting group
    def test_hunting_group_number(self) -> None:
        refusal, call = self.route("45995005", "45676000", hunting=True)
        self.assertIsNone(refusal)
        self.assertEqual(call.callee, "45676000")
        self.assertEqual(call.series, SERIES)

    def test_hunting_6000_from_the_group(self) -> None:
        refusal, call = self.route("45675412", "6000", hunting=True)
        self.assertIsNone(refusal)
        self.assertEqual(call.callee, "45676000")
        self.assertEqual(call.series, SERIES)

    def test_hunting_series_cannot_place_calls(self) -> None:
        self.assertBlocked("45676001", "45675002", HUNTING_CALLER, hunting=True)
        self.assertBlocked("45676002", "15000", HUNTING_CALLER, hunting=True)
        self.assertEqual(HUNTING_CALLER.code, 403)


class DefaultChainTests(PluginPathMixin):
    """
    The default chain beyond the guide's examples.
    """

    def setUp(self) -> None:
        super().setUp()
        self.directory = guideDirectory()

    def route(self, caller: str, dialled: str) -> tuple[Refusal | None, Call]:
        call = newCall(self.directory, caller, dialled)
        return self.chain().route(call, self.directory), call

    def test_default_chain(self) -> None:
        chain = self.chain()
        self.assertEqual(chain.names, SHIPPED)
        for policy in chain.policies:
            self.assertTrue(verifyObject(IRoutingPolicy, policy))
        self.assertTrue(verifyObject(IRoutingPolicy, chain))

    def test_unknown_number_is_404(self) -> None:
        self.assertEqual(self.route("45675412", "45679999")[0], NOT_FOUND)
        self.assertEqual(self.route("45675412", "sip-operator")[0], NOT_FOUND)

    def test_short_number_of_nobody_is_404(self) -> None:
        refusal, call = self.route("45675412", "5999")
        self.assertEqual(refusal, NOT_FOUND)
        self.assertEqual(call.callee, "45675999")

    def test_short_number_without_a_group_is_left_as_dialled(self) -> None:
        for caller in ["902080", "15000"]:
            refusal, call = self.route(caller, "5002")
            self.assertEqual(refusal, NOT_FOUND)
            self.assertEqual(call.callee, "5002")

    def test_accounts_without_a_group_call_anyone(self) -> None:
        """Premium-service options do not concern accounts without a group."""
        self.directory.addGroup("4567", incomingBlock=True, outgoingBlock=True, hunting=True)
        self.directory.addGroup("4599", incomingBlock=True, outgoingBlock=True, hunting=True)
        self.assertEqual(self.route("15000", "902080"), (None, Call(Account("15000", "test"), "902080", "902080")))
        self.assertEqual(self.route("902080", "15001")[0], None)
        self.assertEqual(self.route("15001", "15000")[0], None)

    def test_visual_separators(self) -> None:
        refusal, call = self.route("45995005", "45-67-50-02")
        self.assertIsNone(refusal)
        self.assertEqual(call.callee, "45675002")

    def test_hunting_off_is_404(self) -> None:
        self.assertEqual(self.route("45995005", "45676000")[0], NOT_FOUND)
        self.assertEqual(self.route("45675412", "6000")[0], NOT_FOUND)

    def test_hunting_without_series_is_404(self) -> None:
        self.directory.addGroup("4599", hunting=True)
        refusal, call = self.route("45675412", "45996000")
        self.assertEqual(refusal, NOT_FOUND)
        self.assertIsNone(call.series)

    def test_6000_without_a_group_is_404(self) -> None:
        self.directory.addGroup("4567", hunting=True)
        self.assertEqual(self.route("902080", "6000")[0], NOT_FOUND)

    def test_hunting_series_members_can_be_called(self) -> None:
        refusal, call = self.route("45995005", "45676002")
        self.assertIsNone(refusal)
        self.assertEqual((call.callee, call.series), ("45676002", None))

    def test_hunting_number_is_inside_the_group(self) -> None:
        """
        A call to the hunting group number is a call into the group: its
        incoming blocking applies, and its outgoing blocking does not.
        """
        self.directory.addGroup("4567", hunting=True, incomingBlock=True, outgoingBlock=True)
        self.assertEqual(self.route("45995005", "45676000")[0], INCOMING_BLOCKED)
        self.assertEqual(self.route("902080", "45676000")[0], INCOMING_BLOCKED)
        refusal, call = self.route("45675412", "6000")
        self.assertIsNone(refusal)
        self.assertEqual(call.series, SERIES)
        self.directory.addGroup("4599", hunting=True, outgoingBlock=True)
        self.directory.add("45996001", "hunting", "4599")
        self.assertEqual(self.route("45675412", "45996000")[0], OUTGOING_BLOCKED)
        self.assertEqual(self.route("45995005", "6000")[1].series, ["45996001"])

    def test_series_members_inside_an_incoming_blocked_group(self) -> None:
        self.directory.addGroup("4567", incomingBlock=True)
        self.assertEqual(self.route("45995005", "45676001")[0], INCOMING_BLOCKED)

    def test_outgoing_blocking_refuses_unknown_numbers_first(self) -> None:
        """Blocking comes before the 404: a blocked group learns nothing of other numbers."""
        self.directory.addGroup("4567", outgoingBlock=True)
        self.assertEqual(self.route("45675412", "45999999")[0], OUTGOING_BLOCKED)

    def test_both_blockings_between_two_groups(self) -> None:
        self.directory.addGroup("4567", outgoingBlock=True)
        self.directory.addGroup("4599", incomingBlock=True)
        self.assertEqual(self.route("45995005", "45675002")[0], None)
        self.assertEqual(self.route("45675002", "45995005")[0], INCOMING_BLOCKED)


class NumberPlanTests(SynchronousTestCase):
    """
    The C{numberplan} policy alone.
    """

    def setUp(self) -> None:
        self.directory = guideDirectory()
        self.policy = NumberPlanPolicy()

    def resolve(self, caller: str, dialled: str) -> str:
        call = newCall(self.directory, caller, dialled)
        self.assertIsNone(self.policy.apply(call, self.directory))
        self.assertIsNone(call.series)
        return call.callee

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IRoutingPolicy, self.policy))
        self.assertEqual(self.policy.name, "numberplan")

    def test_full_numbers_unchanged(self) -> None:
        for number in ["45675002", "45995033", "902080", "15000", "45679999"]:
            self.assertEqual(self.resolve("45675412", number), number)

    def test_short_numbers(self) -> None:
        self.assertEqual(self.resolve("45675412", "5002"), "45675002")
        self.assertEqual(self.resolve("45995005", "5002"), "45995002")
        self.assertEqual(self.resolve("45675412", "6000"), "45676000")
        self.assertEqual(self.resolve("45675412", "5999"), "45675999")

    def test_short_numbers_without_a_group(self) -> None:
        self.assertEqual(self.resolve("902080", "5002"), "5002")
        self.assertEqual(self.resolve("15000", "6000"), "6000")

    def test_other_lengths_are_not_short(self) -> None:
        self.assertEqual(self.resolve("45675412", "500"), "500")
        self.assertEqual(self.resolve("45675412", "15000"), "15000")

    def test_configured_length(self) -> None:
        self.policy = NumberPlanPolicy(shortDigits=3)
        self.assertEqual(self.resolve("45675412", "002"), "4567002")
        self.assertEqual(self.resolve("45675412", "5002"), "5002")

    def test_normalise(self) -> None:
        self.assertEqual(normalise("45-67.50(02)"), "45675002")
        self.assertEqual(normalise("4567 5002"), "45675002")
        self.assertEqual(normalise("50-02"), "5002")
        self.assertEqual(normalise("alice"), "alice")
        self.assertEqual(normalise("+45675002"), "+45675002")
        self.assertEqual(normalise("--"), "--")
        self.assertEqual(self.resolve("45675412", "50-02"), "45675002")

    def test_refuses_nothing(self) -> None:
        self.assertEqual(self.resolve("45675412", "nobody"), "nobody")


class ExistsTests(SynchronousTestCase):
    """
    The C{exists} policy alone.
    """

    def setUp(self) -> None:
        self.directory = guideDirectory()
        self.policy = ExistsPolicy()

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IRoutingPolicy, self.policy))
        self.assertEqual(self.policy.name, "exists")

    def test_known_and_unknown(self) -> None:
        caller = self.directory.accounts["45675412"]
        self.assertIsNone(self.policy.apply(Call(caller, "5002", "45675002"), self.directory))
        self.assertEqual(self.policy.apply(Call(caller, "5002", "5002"), self.directory), NOT_FOUND)
        self.assertEqual(self.policy.apply(Call(caller, "x", "45679999"), self.directory), NOT_FOUND)

    def test_hunting_series(self) -> None:
        caller = self.directory.accounts["45675412"]
        self.assertIsNone(self.policy.apply(Call(caller, "6000", "45676000", SERIES), self.directory))
        self.assertEqual(self.policy.apply(Call(caller, "6000", "45676000", []), self.directory), NOT_FOUND)


class HuntingTests(SynchronousTestCase):
    """
    The C{hunting} policy alone.
    """

    def setUp(self) -> None:
        self.directory = guideDirectory(hunting=True)
        self.policy = HuntingPolicy()

    def apply(self, caller: str, callee: str) -> tuple[Refusal | None, Call]:
        call = newCall(self.directory, caller, callee)
        return self.policy.apply(call, self.directory), call

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IRoutingPolicy, self.policy))
        self.assertEqual((self.policy.name, self.policy.huntingNumber, self.policy.ringTime), ("hunting", "6000", 20))

    def test_expansion(self) -> None:
        refusal, call = self.apply("45995005", "45676000")
        self.assertIsNone(refusal)
        self.assertEqual((call.callee, call.series), ("45676000", SERIES))

    def test_series_in_order(self) -> None:
        self.directory.add("45676010", "hunting", "4567")
        self.directory.add("45676004", "hunting", "4567")
        self.assertEqual(self.apply("45995005", "45676000")[1].series, [*SERIES, "45676004", "45676010"])

    def test_short_number_is_the_number_plan_s_business(self) -> None:
        self.assertEqual(
            self.apply("45675412", "6000"), (None, Call(self.directory.accounts["45675412"], "6000", "6000"))
        )

    def test_hunting_off(self) -> None:
        self.directory.addGroup("4567")
        refusal, call = self.apply("45995005", "45676000")
        self.assertIsNone(refusal)
        self.assertIsNone(call.series)

    def test_unknown_group_or_other_numbers(self) -> None:
        for number in ["12346000", "45676001", "45675002", "6000", "15000"]:
            refusal, call = self.apply("45995005", number)
            self.assertIsNone(refusal)
            self.assertIsNone(call.series)

    def test_hunting_callers_refused(self) -> None:
        for callee in ["45675002", "45676000", "15000"]:
            refusal, call = self.apply("45676003", callee)
            self.assertEqual(refusal, HUNTING_CALLER)
            self.assertIsNone(call.series)

    def test_configured_number(self) -> None:
        self.policy = HuntingPolicy(huntingNumber="9000", ringTime=5)
        self.assertIsNone(self.apply("45995005", "45676000")[1].series)
        self.assertEqual(self.apply("45995005", "45679000")[1].series, SERIES)


class BlockingTests(SynchronousTestCase):
    """
    The C{blocking} policy alone: it looks at the resolved callee.
    """

    def setUp(self) -> None:
        self.directory = guideDirectory()
        self.policy = BlockingPolicy()

    def apply(self, caller: str, callee: str) -> Refusal | None:
        return self.policy.apply(newCall(self.directory, caller, callee), self.directory)

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IRoutingPolicy, self.policy))
        self.assertEqual(self.policy.name, "blocking")

    def test_reasons_a_codec_can_show(self) -> None:
        self.assertEqual(INCOMING_BLOCKED, Refusal(403, "Incoming calls blocked for this group"))
        self.assertEqual(OUTGOING_BLOCKED, Refusal(403, "Outgoing calls blocked for this group"))

    def test_no_options_no_blocking(self) -> None:
        for caller, callee in [("45675412", "45995033"), ("45995005", "45675002"), ("902080", "45675002")]:
            self.assertIsNone(self.apply(caller, callee))
        self.assertIsNone(self.apply("45675412", "902080"))

    def test_incoming(self) -> None:
        self.directory.addGroup("4567", incomingBlock=True)
        self.assertIsNone(self.apply("45675412", "45675002"))
        self.assertEqual(self.apply("45995005", "45675002"), INCOMING_BLOCKED)
        self.assertEqual(self.apply("902080", "45675002"), INCOMING_BLOCKED)
        self.assertEqual(self.apply("15000", "45675002"), INCOMING_BLOCKED)
        # Out of the group, nothing is blocked.
        self.assertIsNone(self.apply("45675412", "45995033"))
        self.assertIsNone(self.apply("45675412", "902080"))

    def test_incoming_factory_caller_always_refused(self) -> None:
        """Even a factory account that a directory files under the group."""
        self.directory.addGroup("4567", incomingBlock=True)
        self.directory.add("902081", "factory", "4567")
        self.assertEqual(self.apply("902081", "45675002"), INCOMING_BLOCKED)

    def test_outgoing(self) -> None:
        self.directory.addGroup("4567", outgoingBlock=True)
        self.assertIsNone(self.apply("45675412", "45675002"))
        self.assertEqual(self.apply("45675412", "45995033"), OUTGOING_BLOCKED)
        self.assertEqual(self.apply("45675412", "902080"), OUTGOING_BLOCKED)
        self.assertEqual(self.apply("45675412", "15001"), OUTGOING_BLOCKED)
        self.assertIsNone(self.apply("45675412", "15000"))
        # Into the group, nothing is blocked.
        self.assertIsNone(self.apply("45995005", "45675002"))
        self.assertIsNone(self.apply("902080", "45675002"))

    def test_outgoing_factory_callee_always_refused(self) -> None:
        self.directory.addGroup("4567", outgoingBlock=True)
        self.directory.add("902081", "factory", "4567")
        self.assertEqual(self.apply("45675412", "902081"), OUTGOING_BLOCKED)

    def test_configured_test_number(self) -> None:
        self.directory.addGroup("4567", outgoingBlock=True)
        self.policy = BlockingPolicy(testNumber="15001")
        self.assertIsNone(self.apply("45675412", "15001"))
        self.assertEqual(self.apply("45675412", "15000"), OUTGOING_BLOCKED)

    def test_the_service_test_lines_are_open_like_the_test_number(self) -> None:
        """
        The echo line (testline.echo_number) is one of the service's test
        lines: a group with outgoing blocking reaches it as it reaches
        15000; a store account of kind test stays blocked.
        """
        from aetasip.testline.service import LinesDirectory

        self.directory.addGroup("4567", outgoingBlock=True)
        lines = LinesDirectory(self.directory, ["15000", "16001"])
        for number in ("15000", "16001"):
            self.assertIsNone(self.policy.apply(newCall(self.directory, "45675412", number), lines), number)
        self.assertEqual(self.policy.apply(newCall(self.directory, "45675412", "15001"), lines), OUTGOING_BLOCKED)
        self.assertEqual(self.policy.apply(newCall(self.directory, "45675412", "16002"), lines), OUTGOING_BLOCKED)
        # An echo line on the number of a store account: the number is the service's line, open too.
        lines = LinesDirectory(self.directory, ["15000", "15001"])
        self.assertIsNone(self.policy.apply(newCall(self.directory, "45675412", "15001"), lines))
        self.assertEqual(lines.account("15001"), Account("15001", "test", testLine=True))
        # Through the whole chain, as the proxy routes.
        chain = RoutingChain([NumberPlanPolicy(), HuntingPolicy(), self.policy])
        self.assertIsNone(chain.route(newCall(self.directory, "45675412", "15001"), lines))

    def test_hunting_group_number(self) -> None:
        self.directory.addGroup("4567", incomingBlock=True, hunting=True)
        self.assertEqual(self.apply("45995005", "45676000"), INCOMING_BLOCKED)
        self.assertIsNone(self.apply("45675412", "45676000"))
        # Without the hunting option, 45676000 is no number of the group.
        self.directory.addGroup("4567", incomingBlock=True)
        self.assertIsNone(self.apply("45995005", "45676000"))


class ChainTests(PluginPathMixin):
    """
    L{RoutingChain} and its construction from the configuration.
    """

    def test_shipped_factories(self) -> None:
        factories = policyFactories()
        for name in SHIPPED:
            self.assertTrue(verifyObject(IRoutingPolicyFactory, factories[name]))
            self.assertEqual(factories[name].name, name)

    def test_options_reach_the_policies(self) -> None:
        chain = self.chain(test_number="15009", short_number_digits=3, hunting_number="9000", hunting_ring_time=7)
        numberplan, hunting, blocking, _ = chain.policies
        assert isinstance(numberplan, NumberPlanPolicy)
        assert isinstance(hunting, HuntingPolicy)
        assert isinstance(blocking, BlockingPolicy)
        self.assertEqual(numberplan.shortDigits, 3)
        self.assertEqual((hunting.huntingNumber, hunting.ringTime), ("9000", 7))
        self.assertEqual((blocking.testNumber, blocking.huntingNumber), ("15009", "9000"))

    def test_order_is_the_configured_one(self) -> None:
        chain = self.chain(policies=["exists", "numberplan"])
        self.assertEqual(chain.names, ["exists", "numberplan"])
        directory = guideDirectory()
        # exists first: the short number is unknown.
        self.assertEqual(chain.route(newCall(directory, "45675412", "5002"), directory), NOT_FOUND)
        self.assertIsNone(
            self.chain(policies=["numberplan", "exists"]).route(newCall(directory, "45675412", "5002"), directory)
        )

    def test_first_refusal_wins(self) -> None:
        seen: list[str] = []

        class Step:
            def __init__(self, name: str, refusal: Refusal | None) -> None:
                self.name = name
                self.refusal = refusal

            def apply(self, call: Call, directory: Any) -> Refusal | None:
                seen.append(self.name)
                return self.refusal

        chain = RoutingChain([Step("a", None), Step("b", Refusal(403, "No")), Step("c", Refusal(404, "Not Found"))])  # type: ignore[list-item]
        directory = guideDirectory()
        self.assertEqual(chain.route(newCall(directory, "45675412", "5002"), directory), Refusal(403, "No"))
        self.assertEqual(seen, ["a", "b"])

    def test_empty_chain_is_a_configuration_error(self) -> None:
        self.assertRaises(ConfigError, self.chain, policies=[])

    def test_unknown_policy(self) -> None:
        error = self.assertRaises(ConfigError, self.chain, policies=["numberplan", "nightly"])
        self.assertEqual(error.key, "routing.policies")
        self.assertEqual(error.value, "nightly")
        self.assertIn("blocking, exists, hunting, numberplan", str(error))

    def test_repeated_policy(self) -> None:
        error = self.assertRaises(ConfigError, self.chain, policies=["numberplan", "exists", "numberplan"])
        self.assertIn("naming 'numberplan' once", str(error))

    def test_numbers_must_be_digits(self) -> None:
        for key in ["test_number", "hunting_number"]:
            error = self.assertRaises(ConfigError, self.chain, **{key: "15OOO"})
            self.assertEqual(str(error), f"configuration key routing.{key} = '15OOO': expected a number of digits")

    def test_defaults(self) -> None:
        settings = config.build({})
        self.assertEqual(settings["routing.policies"], SHIPPED)
        self.assertEqual(settings["routing.test_number"], "15000")
        self.assertEqual(settings["routing.short_number_digits"], 4)
        self.assertEqual(settings["routing.hunting_number"], "6000")
        self.assertEqual(settings["routing.hunting_ring_time"], 20)
        self.assertEqual(settings["routing.options"], {})
