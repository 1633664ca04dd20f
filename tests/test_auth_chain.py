"""
Tests for L{aetasip.auth.chain}: backends asked in order, built from plugins.
"""

from __future__ import annotations

import os

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

import twisted.plugins
from aetasip import config
from aetasip.auth import BackendUnavailable, Credentials, credentialsFromPassword
from aetasip.auth.chain import AuthChain, backendFactories, makeAuthBackend
from aetasip.auth.file import FileAuthBackend
from aetasip.auth.sql import SQLAuthBackend
from aetasip.config import ConfigError
from aetasip.interfaces import IAuthBackend, IAuthBackendFactory
from aetasip.store import AsyncStore, Store

REALM = "aetasip"
STUDIO = credentialsFromPassword("45675001", "premium", REALM, "secret")
OTHER = credentialsFromPassword("45675001", "test", REALM, "other")

# The checkout's plugins, whether or not aetasip is installed.
CHECKOUT_PLUGINS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "twisted", "plugins")


@implementer(IAuthBackend)
class StubBackend:
    """
    Answers every lookup with C{answer}: credentials, C{None}, or an exception to fail with.
    """

    def __init__(self, name: str, answer: Credentials | Exception | None) -> None:
        self.name = name
        self.answer = answer
        self.asked: list[str] = []

    def credentials(self, number: str) -> defer.Deferred[Credentials | None]:
        self.asked.append(number)
        if isinstance(self.answer, Exception):
            return defer.fail(self.answer)
        return defer.succeed(self.answer)


@implementer(IAuthBackend)
class RaisingBackend:
    """
    Raises instead of returning a failed L{Deferred}, as a buggy plugin might.
    """

    name = "raising"

    def credentials(self, number: str) -> defer.Deferred[Credentials | None]:
        raise KeyError(number)


class AuthChainTests(SynchronousTestCase):
    """
    L{AuthChain} asks its backends in order.
    """

    def test_provides_auth_backend(self) -> None:
        self.assertTrue(verifyObject(IAuthBackend, AuthChain([])))

    def test_first_backend_that_knows_the_number_answers(self) -> None:
        first, second, third = StubBackend("a", None), StubBackend("b", STUDIO), StubBackend("c", OTHER)
        d = AuthChain([first, second, third]).credentials("45675001")
        self.assertEqual(self.successResultOf(d), STUDIO)
        self.assertEqual((first.asked, second.asked, third.asked), (["45675001"], ["45675001"], []))

    def test_number_no_backend_knows_is_none(self) -> None:
        chain = AuthChain([StubBackend("a", None), StubBackend("b", None)])
        self.assertIsNone(self.successResultOf(chain.credentials("45675001")))

    def test_unavailable_backend_is_passed_over_when_a_later_one_knows(self) -> None:
        chain = AuthChain([StubBackend("ldap", BackendUnavailable("down")), StubBackend("sql", STUDIO)])
        self.assertEqual(self.successResultOf(chain.credentials("45675001")), STUDIO)

    def test_unavailable_backend_and_no_later_answer_is_unavailable(self) -> None:
        chain = AuthChain(
            [StubBackend("sql", None), StubBackend("ldap", BackendUnavailable("down")), StubBackend("file", None)]
        )
        failure = self.failureResultOf(chain.credentials("45675001"), BackendUnavailable)
        self.assertIn("ldap", failure.getErrorMessage())

    def test_unavailable_after_an_answer_is_never_asked(self) -> None:
        late = StubBackend("ldap", BackendUnavailable("down"))
        chain = AuthChain([StubBackend("sql", STUDIO), late])
        self.assertEqual(self.successResultOf(chain.credentials("45675001")), STUDIO)
        self.assertEqual(late.asked, [])

    def test_broken_backend_counts_as_unavailable(self) -> None:
        chain = AuthChain([StubBackend("bug", ZeroDivisionError()), RaisingBackend()])
        self.failureResultOf(chain.credentials("45675001"), BackendUnavailable)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_waits_for_slow_backends(self) -> None:
        slow: defer.Deferred[Credentials | None] = defer.Deferred()

        @implementer(IAuthBackend)
        class Slow:
            name = "slow"

            def credentials(self, number: str) -> defer.Deferred[Credentials | None]:
                return slow

        d = AuthChain([Slow(), StubBackend("sql", STUDIO)]).credentials("45675001")
        self.assertNoResult(d)
        slow.callback(None)
        self.assertEqual(self.successResultOf(d), STUDIO)


class PluginTests(SynchronousTestCase):
    """
    Backends are Twisted plugins, named in C{auth.backends}.
    """

    def setUp(self) -> None:
        if CHECKOUT_PLUGINS not in twisted.plugins.__path__:
            self.patch(twisted.plugins, "__path__", [*twisted.plugins.__path__, CHECKOUT_PLUGINS])
        self.accounts = os.path.abspath(self.mktemp())
        with open(self.accounts, "w") as f:
            f.write("45675001 premium plain:secret\n")
        self.store = AsyncStore(Store("sqlite://"))

    def test_discovery_finds_sql_and_file(self) -> None:
        factories = backendFactories()
        self.assertIn("sql", factories)
        self.assertIn("file", factories)
        for name in ["sql", "file"]:
            self.assertTrue(verifyObject(IAuthBackendFactory, factories[name]))
            self.assertEqual(factories[name].name, name)

    def test_chain_follows_the_configured_order(self) -> None:
        settings = config.build({"auth.backends": ["file", "sql"], "auth.file": self.accounts, "sip.realm": "studio"})
        chain = makeAuthBackend(settings, self.store)
        assert isinstance(chain, AuthChain)
        [fileBackend, sqlBackend] = chain.backends
        assert isinstance(fileBackend, FileAuthBackend)
        self.assertIsInstance(sqlBackend, SQLAuthBackend)
        self.assertEqual((fileBackend.path, fileBackend.realm), (self.accounts, "studio"))
        credentials = self.successResultOf(chain.credentials("45675001"))
        self.assertEqual(credentials, credentialsFromPassword("45675001", "premium", "studio", "secret"))

    def test_unknown_backend_name_is_a_configuration_error(self) -> None:
        settings = config.build({"auth.backends": ["sql", "radius"]})
        error = self.assertRaises(ConfigError, makeAuthBackend, settings, self.store)
        self.assertEqual((error.key, error.value), ("auth.backends", "radius"))
        self.assertIn("one of: ", error.expected)
        self.assertIn("file", error.expected)
        self.assertIn("sql", error.expected)

    def test_repeated_backend_name_is_a_configuration_error(self) -> None:
        settings = config.build({"auth.backends": ["sql", "sql"]})
        error = self.assertRaises(ConfigError, makeAuthBackend, settings, self.store)
        self.assertEqual(error.key, "auth.backends")

    def test_file_backend_without_accounts_file_is_a_configuration_error(self) -> None:
        settings = config.build({"auth.backends": ["file"]})
        error = self.assertRaises(ConfigError, makeAuthBackend, settings, self.store)
        self.assertEqual(error.key, "auth.file")
