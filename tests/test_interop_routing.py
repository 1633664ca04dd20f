"""
Call routing with real agents (sipp) through the running service, as the
subscribers of the guide's section 5 see it; groups and accounts are
provisioned with aetasip-admin, as an operator does:

  - short numbering (5.3): inside a group, the last 4 digits reach the
    group's number (45675412 dials 5002 and reaches 45675002; 45995005
    dials 5002 and reaches 45995002);
  - hunting group (5.8): prefix + 6000 rings the series prefix + 6001,
    6002, … in turn, skipping the absent and the busy;
  - incoming-call and outgoing-call blocking (5.4, 5.5), with the test
    number 15000 left open.
"""

from __future__ import annotations

import io
import os
import re
import time
from typing import Any, ClassVar

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from aetasip import admin
from aetasip.calls.hunting import HuntingContext
from tests.interop import ExplainsFailures
from tests.servers import RunningService, requireTool
from tests.sipp import Callee, Sipp, SippRun


class RoutingTestCase(ExplainsFailures):
    """
    The service on loopback, provisioned by L{provision} before it starts,
    and sipp agents; every account's SIP password is in C{passwords}. A
    failure shows the service's log and why credentials were refused.
    """

    timeout = 120
    # Configuration of the service, as RunningService takes it.
    settings: ClassVar[dict[str, Any]] = {}

    async def setUp(self) -> None:  # type: ignore[override]
        directory = self.mktemp()
        os.makedirs(directory)
        self.sipp = Sipp(requireTool(self, "sipp", "sip-tester"), directory)
        self.server = RunningService(directory, **self.settings)
        self.addCleanup(self.server.stop)
        self.passwords: dict[str, str] = {}
        self.captureServiceLog()
        self.provision()
        # Once started, routing has read the accounts and groups provisioned before.
        await self.server.start()

    def provision(self) -> None:
        """Add the accounts and groups of the test case."""

    def admin(self, *argv: str) -> str:
        """Run aetasip-admin on the service's store; return what it printed."""
        out, err = io.StringIO(), io.StringIO()
        code = admin.main(["--store", self.server.storeURL, *argv], out, err)
        self.assertEqual(code, 0, f"aetasip-admin {' '.join(argv)}: {out.getvalue()}{err.getvalue()}")
        return out.getvalue()

    def account(self, number: str, kind: str = "premium", group: str | None = None) -> None:
        """Add the account C{number}, a member of C{group} when given."""
        password = f"secret-{number}"
        self.admin("account", "add", number, "--kind", kind, "--password", password)
        if group is not None:
            self.admin("group", "attach", group, number)
        self.passwords[number] = password

    def callee(self, number: str, scenario: str = "call_uas_answer.xml", messages: bool = False) -> Deferred[Callee]:
        """C{number} registers and answers one call with C{scenario}."""
        return Deferred.fromCoroutine(
            self.sipp.callee(
                number,
                self.passwords[number],
                scenario,
                self.server.ports[0],
                self.server.sip.location,
                messages=messages,
            )
        )

    async def registered(self, number: str) -> None:
        """C{number} registers, and nothing answers there."""
        result = await self.sipp.register(number, self.passwords[number], self.server.ports[0])
        self.assertEqual(result.code, 0, result.detail)

    def call(self, caller: str, dialled: str, scenario: str = "call_uac.xml") -> Deferred[SippRun]:
        """C{caller} dials C{dialled}; the messages are traced."""
        return self.sipp.call(caller, self.passwords[caller], dialled, scenario, self.server.ports[0], messages=True)

    async def assertAnswered(self, caller: SippRun, callee: Callee) -> SippRun:
        """The call was answered by C{callee}, and ended normally."""
        answered = await callee.done
        self.assertEqual(caller.code, 0, caller.detail + answered.detail)
        self.assertEqual(answered.code, 0, answered.detail)
        self.assertEqual(caller.finalResponse(), "SIP/2.0 200 OK")
        return answered

    async def assertRefused(self, caller: str, dialled: str, status: str) -> None:
        """C{caller} dials C{dialled} and gets the final response C{status} (code and reason)."""
        result = await self.call(caller, dialled, "call_uac_refused.xml")
        self.assertEqual(result.code, 0, result.detail)
        self.assertEqual(result.finalResponse(), status)


class ShortNumberTests(RoutingTestCase):
    """
    Guide 5.3: groups 4567 (45675412, 45675002) and 4599 (45995005,
    45995002); 15000 belongs to no group. Both 45675002 and 45995002 are
    registered in each test, only the expected one answers.
    """

    def provision(self) -> None:
        for prefix in ("4567", "4599"):
            self.admin("group", "add", prefix, "--contact", f"tech-{prefix}@studio.example")
        for number in ("45675412", "45675002"):
            self.account(number, group="4567")
        for number in ("45995005", "45995002"):
            self.account(number, group="4599")
        self.account("15000", kind="test")

    async def test_short_number_inside_the_group(self) -> None:
        await self.registered("45995002")
        callee = await self.callee("45675002", messages=True)
        caller = await self.call("45675412", "5002")
        answered = await self.assertAnswered(caller, callee)
        (invite,) = answered.received("INVITE")
        self.assertEqual(invite.headers("To"), ["<sip:5002@127.0.0.1>"])

    async def test_same_short_number_in_another_group(self) -> None:
        await self.registered("45675002")
        callee = await self.callee("45995002")
        await self.assertAnswered(await self.call("45995005", "5002"), callee)

    async def test_full_number_inside_the_group(self) -> None:
        await self.registered("45995002")
        callee = await self.callee("45675002")
        await self.assertAnswered(await self.call("45675412", "45675002"), callee)

    async def test_short_number_outside_any_group(self) -> None:
        """A short number from an account without a group is dialled as is: no such number."""
        await self.registered("45675002")
        await self.assertRefused("15000", "5002", "SIP/2.0 404 Not Found")


class HuntingGroup(RoutingTestCase):
    """
    Guide 5.8: group 4567 with the hunting option and three numbers
    allocated (45675001-5003), hence the series 45676001-6003; the hunting
    group number is 45676000 (6000 from inside the group). The passwords
    are those C{group allocate} printed.
    """

    def provision(self) -> None:
        self.admin("group", "add", "4567", "--contact", "tech@studio.example", "--hunting")
        printed = self.admin("group", "allocate", "4567", "--count", "3")
        self.passwords.update(re.findall(r"^(\d{8})\s+(\S+)$", printed, re.MULTILINE))
        self.assertEqual(
            sorted(self.passwords),
            ["45675001", "45675002", "45675003", "45676001", "45676002", "45676003"],
        )

    @staticmethod
    def ringTimers() -> list[IDelayedCall]:
        """The proxy's pending hunting ring timers."""
        clock: IReactorTime = reactor  # type: ignore[assignment]
        return [
            call
            for call in clock.getDelayedCalls()
            if getattr(getattr(call, "func", None), "__func__", None) is HuntingContext.ringTimeout
        ]


class HuntingTests(HuntingGroup):
    """
    Calls to the hunting group of L{HuntingGroup}; each member rings at
    most C{routing.hunting_ring_time} (20 s, the default).
    """

    async def test_hunting_skips_the_busy_and_the_absent(self) -> None:
        """
        45676001 is busy (486), 45676002 is not registered, 45676003
        answers: the caller sees one call, answered, and no 486; nobody
        waited the ring time for the absent member.
        """
        busy = await self.callee("45676001", "call_uas_busy.xml")
        answering = await self.callee("45676003", messages=True)
        started = time.monotonic()
        caller = await self.call("45675001", "45676000")
        elapsed = time.monotonic() - started
        await self.assertAnswered(caller, answering)
        # 45676001 got the INVITE, answered 486 and got its ACK (its scenario).
        busyRun = await busy.done
        self.assertEqual(busyRun.code, 0, busyRun.detail)
        finals = {line for line in caller.responses("INVITE") if not line.startswith("SIP/2.0 1")}
        self.assertEqual(finals, {"SIP/2.0 407 Proxy Authentication Required", "SIP/2.0 200 OK"})
        self.assertLess(elapsed, 15)

    async def test_short_hunting_number_from_the_group(self) -> None:
        await self.registered("45676003")
        callee = await self.callee("45676001")
        await self.assertAnswered(await self.call("45675002", "6000"), callee)

    async def test_nobody_in_the_series_registered(self) -> None:
        await self.assertRefused("45675001", "45676000", "SIP/2.0 480 Temporarily Unavailable")

    async def test_series_accounts_cannot_call(self) -> None:
        await self.registered("45675002")
        await self.assertRefused("45676001", "45675002", "SIP/2.0 403 Hunting accounts cannot place calls")

    async def test_answered_call_stops_the_ring_timer(self) -> None:
        """
        Once a member answers, the hunt is over: its ring timer must not
        stay pending (it would fire C{routing.hunting_ring_time} seconds
        into the call, and outlives the service's stop).
        """
        callee = await self.callee("45676001")
        await self.assertAnswered(await self.call("45675001", "45676000"), callee)
        self.assertEqual(self.ringTimers(), [])


class UnansweredHuntingTests(HuntingGroup):
    """
    A member that rings and does not answer, with a ring time of 2 s.
    """

    settings: ClassVar[dict[str, Any]] = {"routing__hunting_ring_time": 2}

    async def test_unanswered_member_is_cancelled_after_the_ring_time(self) -> None:
        """
        45676001 rings (180) and does not answer: after the ring time the
        proxy CANCELs it (200, 487, ACK) and rings the next registered
        member, 45676003, which answers. The caller hears ringing once.
        """
        ringing = await self.callee("45676001", "call_uas_ring_cancelled.xml")
        answering = await self.callee("45676003")
        started = time.monotonic()
        caller = await self.call("45675001", "45676000")
        elapsed = time.monotonic() - started
        await self.assertAnswered(caller, answering)
        ringingRun = await ringing.done
        self.assertEqual(ringingRun.code, 0, ringingRun.detail)
        self.assertEqual(caller.responses("INVITE").count("SIP/2.0 180 Ringing"), 1)
        self.assertGreaterEqual(elapsed, 2)


class BlockingTests(RoutingTestCase):
    """
    Guide 5.4 and 5.5: group 4567 (45675412, 45675002) with incoming-call
    and outgoing-call blocking; group 4599 (45995005, 45995033) without;
    the test number 15000 and the factory account 902080. The callee of a
    blocked call is registered: only the blocking keeps the call from it.
    """

    def provision(self) -> None:
        self.admin("group", "add", "4567", "--contact", "tech@studio.example", "--incoming-block", "--outgoing-block")
        self.admin("group", "add", "4599", "--contact", "tech@other.example")
        for number in ("45675412", "45675002"):
            self.account(number, group="4567")
        for number in ("45995005", "45995033"):
            self.account(number, group="4599")
        self.account("15000", kind="test")
        self.account("902080", kind="factory")

    async def test_inside_the_group(self) -> None:
        callee = await self.callee("45675002")
        await self.assertAnswered(await self.call("45675412", "45675002"), callee)

    async def test_incoming_call_blocked(self) -> None:
        await self.registered("45675002")
        await self.assertRefused("45995005", "45675002", "SIP/2.0 403 Incoming calls blocked for this group")

    async def test_incoming_call_from_a_factory_account_blocked(self) -> None:
        await self.registered("45675002")
        await self.assertRefused("902080", "45675002", "SIP/2.0 403 Incoming calls blocked for this group")

    async def test_outgoing_call_blocked(self) -> None:
        await self.registered("45995033")
        await self.assertRefused("45675412", "45995033", "SIP/2.0 403 Outgoing calls blocked for this group")

    async def test_outgoing_call_to_a_factory_account_blocked(self) -> None:
        await self.registered("902080")
        await self.assertRefused("45675412", "902080", "SIP/2.0 403 Outgoing calls blocked for this group")

    async def test_test_number_stays_open(self) -> None:
        callee = await self.callee("15000")
        await self.assertAnswered(await self.call("45675412", "15000"), callee)

    async def test_other_groups_call_each_other(self) -> None:
        """4599 has no blocking: its members call each other as usual."""
        callee = await self.callee("45995033")
        await self.assertAnswered(await self.call("45995005", "45995033"), callee)
