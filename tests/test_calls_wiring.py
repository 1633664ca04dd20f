"""
How C{twistd aetasip} builds the calls' part of the tree: the observers and
media handler the configuration names, the CallService, and the dialog key
every server on one store shares.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from aetasip import config, tap
from aetasip.calls.log import CallLog
from aetasip.calls.service import CallService
from aetasip.records.cdr import CDRService
from aetasip.web.metrics import CallCounters


class CallWiringTests(SynchronousTestCase):
    def build(self, **settings: object) -> object:
        base = {
            "store.url": f"sqlite:///{os.path.abspath(self.mktemp())}.db",
            "sip.listen": ["127.0.0.1"],
            "sip.udp_ports": [0],
            "sip.tcp_ports": [0],
            "stun.enabled": False,
        }
        base.update(settings)
        top = tap.makeService({"config": config.build(base)})
        self.addCleanup(top.getServiceNamed("store").store.store.close)  # type: ignore[attr-defined]
        return top

    def test_the_tree_has_a_call_service_after_sip(self) -> None:
        top = self.build()
        names = [child.name for child in top]  # type: ignore[attr-defined]
        self.assertLess(names.index("sip"), names.index("calls"))
        calls = top.getServiceNamed("calls")  # type: ignore[attr-defined]
        self.assertIsInstance(calls, CallService)
        self.assertIs(calls.proxy, top.getServiceNamed("sip").proxy)  # type: ignore[attr-defined]

    def test_named_observers_are_plugins(self) -> None:
        top = self.build(**{"calls.observers": ["log"]})
        # The configured observers, then the metrics' counters.
        (observer, counters) = top.getServiceNamed("sip").proxy.observers.observers  # type: ignore[attr-defined]
        self.assertIsInstance(observer, CallLog)
        self.assertIsInstance(counters, CallCounters)

    def test_unknown_observer_stops_the_start_with_one_line(self) -> None:
        with self.assertRaises(SystemExit) as raised:
            self.build(**{"calls.observers": ["billing"]})
        self.assertEqual(
            str(raised.exception.code),
            "aetasip: configuration key calls.observers = 'billing': expected one of: log, records",
        )

    def test_call_records_are_on_by_default(self) -> None:
        """
        The default observers record every call: a L{CDRService} writing
        to the service's store, started and stopped with the calls.
        """
        top = self.build()
        (observer, _) = top.getServiceNamed("sip").proxy.observers.observers  # type: ignore[attr-defined]
        self.assertIsInstance(observer, CDRService)
        self.assertIs(observer.parent, top.getServiceNamed("calls"))  # type: ignore[attr-defined]
        self.assertIs(observer.sink.store, top.getServiceNamed("store").store)  # type: ignore[attr-defined]

    def test_unknown_media_handler_stops_the_start_with_one_line(self) -> None:
        with self.assertRaises(SystemExit) as raised:
            self.build(**{"calls.media_handler": "no-such-handler"})
        self.assertIn(
            "configuration key calls.media_handler = 'no-such-handler': expected one of:", str(raised.exception.code)
        )

    def test_servers_on_one_store_share_the_dialog_key(self) -> None:
        url = f"sqlite:///{os.path.abspath(self.mktemp())}.db"
        first = self.build(**{"store.url": url})
        second = self.build(**{"store.url": url})
        other = self.build()
        key = first.getServiceNamed("sip").proxy.signer._key  # type: ignore[attr-defined]
        self.assertEqual(key, second.getServiceNamed("sip").proxy.signer._key)  # type: ignore[attr-defined]
        self.assertNotEqual(key, other.getServiceNamed("sip").proxy.signer._key)  # type: ignore[attr-defined]

    def test_configured_dialog_key_wins(self) -> None:
        top = self.build(**{"calls.dialog_key": "a shared secret"})
        self.assertEqual(top.getServiceNamed("sip").proxy.signer._key, b"a shared secret")  # type: ignore[attr-defined]
