"""
C{aetasip-admin node status}, C{node drain}, C{node resume} and C{node
forget}, against servers of a cluster running on a real PostgreSQL: the
drain flag is in the store (the CLI needs no channel to the service) and
PostgreSQL tells the server at once.
"""

from __future__ import annotations

import io
from typing import Any

import attrs
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from aetasip import admin
from tests.postgres import postgresqlURL
from tests.test_cluster_location import waitFor
from tests.test_cluster_roles import Server
from tests.test_quarterly import JUST_AFTER_Q1
from tests.test_store import FakeClock


@attrs.define
class FakeCall:
    callID: str
    callerTag: str
    recovered: bool = False
    endCause: str | None = None
    ended: bool = False


def run(*args: str, out: io.StringIO | None = None) -> tuple[int, str, str]:
    out, err = out or io.StringIO(), io.StringIO()
    code = admin.main(list(args), out, err)
    return code, out.getvalue(), err.getvalue()


class NodeCommandTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def setUp(self) -> Any:
        self.url = postgresqlURL(self)
        self.a = Server(self, self.url, "sip1", FakeClock(JUST_AFTER_Q1))
        self.b = Server(self, self.url, "sip2", FakeClock(JUST_AFTER_Q1))
        self.a.address[0] = True
        yield self.a.start()
        yield self.b.start()
        self.addCleanup(self.a.stop)
        self.addCleanup(self.b.stop)
        yield waitFor(lambda: self.a.cluster.role.active and self.a.cluster.holdsWork())
        yield self.a.cluster.announcer.announce()
        yield self.b.cluster.announcer.announce()

    @inlineCallbacks
    def test_status_shows_each_server_its_role_and_last_announcement(self) -> Any:
        self.a.calls.calls.append(object())
        yield self.a.cluster.announcer.announce()
        code, out, err = run("--store", self.url, "node", "status")
        self.assertEqual((code, err), (0, ""))
        lines = out.splitlines()
        self.assertEqual(
            lines[0].split(),
            ["SERVER", "ROLE", "ADDRESS", "CALLS", "SHARED", "WORK", "STATE", "LAST", "ANNOUNCED", "VERSION"],
        )
        self.assertEqual(lines[1].split()[:6], ["sip1", "active", "192.0.2.80", "1", "yes", "serving"])
        self.assertEqual(lines[2].split()[:6], ["sip2", "standby", "192.0.2.80", "0", "no", "serving"])
        self.assertRegex(lines[1], r" \d+ s ago ")

    @inlineCallbacks
    def test_drain_moves_the_address_and_says_when_idle(self) -> Any:
        self.a.calls.calls.append(object())
        progress = io.StringIO()
        waiting = deferToThread(run, "--store", self.url, "node", "drain", "sip1", "--timeout", "20", out=progress)
        # The server hears it at once (NOTIFY) and reports not-ready...
        took = yield waitFor(lambda: self.a.cluster.draining)
        self.assertLess(took, 2.0)
        yield waitFor(lambda: "sip1: draining, active, 1 calls in progress" in progress.getvalue())
        # ...keepalived moves the address; the call in progress goes on, then ends.
        self.a.address[0] = False
        self.b.address[0] = True
        yield waitFor(lambda: self.b.cluster.holdsWork())
        self.assertFalse(waiting.called)
        self.a.calls.calls.clear()
        yield self.a.cluster.announcer.announce()
        code, out, err = yield waiting
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(out.splitlines()[0], "Asked sip1 to drain.")
        self.assertIn("sip1: draining, active, 1 calls in progress", out)
        self.assertEqual(out.splitlines()[-1], "sip1 is idle: standby, no call in progress.")
        code, out, _ = yield deferToThread(run, "--store", self.url, "node", "resume", "sip1")
        self.assertEqual((code, out), (0, "Asked sip1 to serve again.\n"))
        yield waitFor(lambda: not self.a.cluster.draining)

    @inlineCallbacks
    def test_drain_without_waiting_and_a_timeout(self) -> Any:
        code, out, _ = yield deferToThread(run, "--store", self.url, "node", "drain", "sip2", "--no-wait")
        self.assertEqual((code, out), (0, "Asked sip2 to drain.\n"))
        yield waitFor(lambda: self.b.cluster.draining)
        self.a.calls.calls.append(object())
        yield self.a.cluster.announcer.announce()
        code, out, _ = yield deferToThread(run, "--store", self.url, "node", "drain", "sip1", "--timeout", "1")
        self.assertEqual(code, 1)
        self.assertIn("sip1 is not idle after 1 s; it keeps draining.", out)

    @inlineCallbacks
    def test_a_server_without_floating_address_is_idle_once_its_calls_end(self) -> Any:
        lone = Server(self, self.url, "sip3", FakeClock(JUST_AFTER_Q1), floating=None)
        yield lone.start()
        self.addCleanup(lone.stop)
        lone.calls.calls.append(object())
        waiting = deferToThread(run, "--store", self.url, "node", "drain", "sip3", "--timeout", "20")
        yield waitFor(lambda: lone.cluster.draining)
        lone.calls.calls.clear()
        yield lone.cluster.announcer.announce()
        code, out, _ = yield waiting
        self.assertEqual((code, out.splitlines()[-1]), (0, "sip3 is idle: active, no call in progress."))

    @inlineCallbacks
    def test_a_drained_server_without_records_is_idle_once_its_calls_end_elsewhere(self) -> Any:
        """
        Its call's BYE went to the server that took the address, which
        rebuilt and ended the call there and says so (NOTIFY): the drained
        server ends its copy (its live call table, no call records needed)
        and the drain says idle.
        """
        self.a.calls.calls.append(FakeCall("talking@codec", "a-tag"))
        self.a.calls.calls.append(FakeCall("other@codec", "a-tag"))
        waiting = deferToThread(run, "--store", self.url, "node", "drain", "sip1", "--timeout", "20")
        yield waitFor(lambda: self.a.cluster.draining)
        self.a.address[0] = False
        self.b.address[0] = True
        yield waitFor(lambda: self.b.cluster.role.active and not self.a.cluster.role.active)
        # Another tag of the same Call-ID, a call that ended with the server's stop, and one of sip1's own: ignored.
        for tag, cause, recovered in (("b-tag", "caller BYE", True), ("a-tag", "server shutdown", True)):
            self.b.cluster.callEnded(FakeCall("talking@codec", tag, recovered=recovered, endCause=cause))
        self.a.cluster.callEnded(FakeCall("other@codec", "a-tag", recovered=True, endCause="callee BYE"))
        self.b.cluster.callEnded(FakeCall("talking@codec", "a-tag", recovered=True, endCause="callee BYE"))
        yield waitFor(lambda: len(self.a.calls.calls) == 1)
        ((call, cause, detail),) = self.a.calls.ended
        self.assertEqual((call.callID, cause, detail), ("talking@codec", "callee BYE", "ended at sip2 after a switch"))
        self.assertEqual(self.a.cluster.callsInProgress(), 1)
        self.b.cluster.callEnded(FakeCall("other@codec", "a-tag", recovered=True, endCause="caller BYE"))
        yield waitFor(lambda: self.a.calls.calls == [])
        code, out, _ = yield waiting
        self.assertEqual((code, out.splitlines()[-1]), (0, "sip1 is idle: standby, no call in progress."))

    def test_unknown_servers_are_refused(self) -> None:
        for command in ("drain", "resume", "forget"):
            code, out, err = run("--store", self.url, "node", command, "sip9")
            self.assertEqual((code, out), (1, ""))
            self.assertEqual(err, "aetasip-admin: no server sip9 has announced itself in this store\n")

    @inlineCallbacks
    def test_a_stopped_server_says_so_and_may_be_forgotten(self) -> Any:
        yield self.b.stop()
        code, out, _ = run("--store", self.url, "node", "status")
        self.assertEqual(code, 0)
        self.assertEqual(out.splitlines()[2].split()[:2], ["sip2", "stopped"])
        self.assertEqual(run("--store", self.url, "node", "forget", "sip2")[:2], (0, "Forgot server sip2.\n"))
        self.assertNotIn("sip2", run("--store", self.url, "node", "status")[1])
