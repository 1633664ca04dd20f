"""
Tests for L{aetasip.auth.ldap}: the LDAP authentication backend, against a
real slapd (L{tests.slapd}) on loopback, and driven through the real SIP
core (L{tests.sipagent.Harness}) where the registrar's answer matters.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, cast

from twisted.internet import defer, reactor
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IReactorTCP
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from aetasip import config
from aetasip.auth import BackendUnavailable, credentialsFromPassword
from aetasip.auth.chain import backendFactories, makeAuthBackend
from aetasip.auth.ldap import LDAPAuthBackend, makeLDAPBackend, settingsFromSection
from aetasip.config import ConfigError
from aetasip.interfaces import IAuthBackend
from tests.certificates import TestCA
from tests.servers import deferLater, freePort
from tests.sipagent import Agent, Harness, Reply
from tests.slapd import (
    ACCOUNTS,
    PEOPLE,
    REALM,
    SERVICE_DN,
    SERVICE_PASSWORD,
    Slapd,
    privateSlapd,
    sharedSlapd,
    useCheckoutPlugins,
)


def section(directory: Slapd, **overrides: Any) -> dict[str, Any]:
    """The C{ldap} section for C{directory}: the service account, every attribute of the test schema."""
    settings: dict[str, Any] = {
        "urls": [directory.url],
        "bind_dn": SERVICE_DN,
        "bind_password": SERVICE_PASSWORD,
        "base": PEOPLE,
        "password_attribute": "userPassword",
        "ha1_md5_attribute": "sipHA1MD5",
        "ha1_sha256_attribute": "sipHA1SHA256",
        "kind_attribute": "sipAccountKind",
        "timeout": 2,
        "pool_size": 2,
    }
    settings.update(overrides)
    return settings


def captureLog(testCase: SynchronousTestCase) -> list[str]:
    """The messages logged from now to the end of C{testCase}."""
    messages: list[str] = []

    def observer(event: dict[str, Any]) -> None:
        messages.append(formatEvent(event) or "")

    logObserver = cast(ILogObserver, observer)
    globalLogPublisher.addObserver(logObserver)
    testCase.addCleanup(globalLogPublisher.removeObserver, logObserver)
    return messages


class DirectoryTestCase(TestCase):
    """
    Makes backends on a directory and stops their threads at the end.
    """

    timeout = 60

    def backend(
        self, directory: Slapd, clock: Clock | None = None, maxPending: int = 1000, **overrides: Any
    ) -> LDAPAuthBackend:
        settings = settingsFromSection(section(directory, **overrides))
        backend = LDAPAuthBackend(settings, REALM, clock=clock, maxPending=maxPending)
        self.addCleanup(backend.stop)
        return backend

    def captureLog(self) -> list[str]:
        return captureLog(self)


class LookupTests(DirectoryTestCase):
    """
    Accounts are read from the directory however it keeps their secret.
    """

    def setUp(self) -> None:
        self.directory = sharedSlapd(self)

    def test_provides_auth_backend(self) -> None:
        backend = self.backend(self.directory)
        self.assertTrue(verifyObject(IAuthBackend, backend))
        self.assertEqual(backend.name, "ldap")

    async def test_clear_text_user_password(self) -> None:
        answer = await self.backend(self.directory).credentials("45675001")
        self.assertEqual(answer, credentialsFromPassword("45675001", "premium", REALM, "secret-one"))

    async def test_dedicated_password_attribute(self) -> None:
        backend = self.backend(self.directory, password_attribute="sipPassword")
        answer = await backend.credentials("45675002")
        self.assertEqual(answer, credentialsFromPassword("45675002", "test", REALM, "secret-two"))
        # userPassword is not that backend's attribute.
        self.assertIsNone(await backend.credentials("45675001"))

    async def test_ha1_attributes_only(self) -> None:
        backend = self.backend(self.directory, password_attribute=None)
        answer = await backend.credentials("45675003")
        self.assertEqual(answer, credentialsFromPassword("45675003", "escoopfone", REALM, "secret-three"))

    async def test_one_ha1_attribute(self) -> None:
        backend = self.backend(self.directory, password_attribute=None, ha1_sha256_attribute=None)
        answer = await backend.credentials("45675003")
        assert answer is not None
        self.assertEqual(set(answer.ha1), {"MD5"})

    async def test_default_kind(self) -> None:
        backend = self.backend(self.directory, kind_attribute=None, default_kind="factory")
        answer = await backend.credentials("45675001")
        assert answer is not None
        self.assertEqual(answer.kind, "factory")

    async def test_unknown_kind_takes_the_default(self) -> None:
        messages = self.captureLog()
        backend = self.backend(self.directory, kind_attribute="sn", default_kind="test")
        answer = await backend.credentials("45675001")
        assert answer is not None
        self.assertEqual(answer.kind, "test")
        self.assertTrue(any("unknown kind '45675001'" in m for m in messages), messages)

    async def test_unknown_number_is_none(self) -> None:
        self.assertIsNone(await self.backend(self.directory).credentials("45679999"))

    async def test_hashed_password_is_refused_with_a_warning(self) -> None:
        messages = self.captureLog()
        self.assertIsNone(await self.backend(self.directory).credentials("45675004"))
        self.assertTrue(any("uid=45675004" in m and "hashed password" in m for m in messages), messages)

    async def test_filter_injection_is_escaped(self) -> None:
        backend = self.backend(self.directory, cache_ttl=0)
        # Unescaped, "(uid=45675001*)" would find 45675001's entry and let
        # "45675001*" log in with its password.
        for number in ["45675001*", "*)(uid=*", "*", "45675001)(uid=45675002", "\\2a", "4567500\x00"]:
            self.assertIsNone(await backend.credentials(number), number)
        self.assertIsNotNone(await backend.credentials("45675001"))

    async def test_filter_matching_several_entries_is_refused(self) -> None:
        messages = self.captureLog()
        backend = self.backend(self.directory, filter="(|(uid={number})(objectClass=aetasipAccount))")
        self.assertIsNone(await backend.credentials("45675001"))
        self.assertTrue(any("matches several entries" in m for m in messages), messages)

    async def test_one_level_scope(self) -> None:
        backend = self.backend(self.directory, base="dc=aetasip,dc=test", scope="one")
        self.assertIsNone(await backend.credentials("45675001"))
        backend = self.backend(self.directory, base="dc=aetasip,dc=test", scope="subtree")
        self.assertIsNotNone(await backend.credentials("45675001"))

    async def test_anonymous_bind_cannot_read_secrets(self) -> None:
        # The directory's ACL shows passwords to the service account only.
        backend = self.backend(self.directory, bind_dn=None, bind_password=None)
        self.assertIsNone(await backend.credentials("45675001"))

    async def test_missing_base_is_unavailable(self) -> None:
        backend = self.backend(self.directory, base="ou=nowhere,dc=aetasip,dc=test")
        failure = await self.assertFailure(backend.credentials("45675001"), BackendUnavailable)
        self.assertIn("noSuchObject", str(failure))

    async def test_searches_run_in_the_backend_threads(self) -> None:
        backend = self.backend(self.directory, pool_size=2, cache_ttl=0)
        threads: list[threading.Thread] = []
        search = backend.directory.search

        def recordingSearch(number: str) -> Any:
            threads.append(threading.current_thread())
            time.sleep(0.05)
            return search(number)

        backend.directory.search = recordingSearch  # type: ignore[method-assign]
        numbers = [a.number for a in ACCOUNTS] + ["45679998", "45679999"]
        pending = [backend.credentials(number) for number in numbers]
        for d in pending:
            self.assertNoResult(d)
        await defer.gatherResults(pending)
        self.assertEqual(len(threads), len(numbers))
        self.assertNotIn(threading.main_thread(), threads)
        assert backend.threadPool is not None
        self.assertLessEqual(len(set(threads)), 2)
        self.assertLessEqual(len(backend.threadPool.threads), 2)
        self.assertLessEqual(backend.directory.idleConnections, 2)


class CacheTests(DirectoryTestCase):
    """
    A REGISTER storm does not become an LDAP storm.
    """

    def setUp(self) -> None:
        self.directory = sharedSlapd(self)
        self.clock = Clock()
        self.clock.advance(1000)

    async def test_cache_hit_costs_no_query(self) -> None:
        backend = self.backend(self.directory, self.clock, cache_ttl=60)
        first = await backend.credentials("45675001")
        self.assertEqual(backend.directory.searches, 1)
        self.clock.advance(59)
        d = backend.credentials("45675001")
        self.assertEqual(self.successResultOf(d), first)
        self.assertEqual(backend.directory.searches, 1)

    async def test_cached_answer_expires(self) -> None:
        backend = self.backend(self.directory, self.clock, cache_ttl=60)
        await backend.credentials("45675001")
        self.directory.modify("45675001", {"userPassword": "changed"})
        self.addCleanup(self.directory.modify, "45675001", {"userPassword": "secret-one"})
        self.clock.advance(60)
        answer = await backend.credentials("45675001")
        self.assertEqual(answer, credentialsFromPassword("45675001", "premium", REALM, "changed"))
        self.assertEqual(backend.directory.searches, 2)

    async def test_unknown_number_is_cached_briefly(self) -> None:
        backend = self.backend(self.directory, self.clock, cache_ttl=60)
        self.assertIsNone(await backend.credentials("45679999"))
        self.assertIsNone(self.successResultOf(backend.credentials("45679999")))
        self.assertEqual(backend.directory.searches, 1)
        self.clock.advance(5)
        self.assertIsNone(await backend.credentials("45679999"))
        self.assertEqual(backend.directory.searches, 2)

    async def test_concurrent_lookups_share_one_search(self) -> None:
        backend = self.backend(self.directory, self.clock, cache_ttl=60)
        storm = [backend.credentials("45675001") for _ in range(50)]
        answers = await defer.gatherResults(storm)
        self.assertEqual(len({id(a) for a in answers}), 1)
        self.assertEqual(backend.directory.searches, 1)

    async def test_zero_ttl_asks_every_time(self) -> None:
        backend = self.backend(self.directory, self.clock, cache_ttl=0)
        await backend.credentials("45675001")
        await backend.credentials("45675001")
        self.assertEqual(backend.directory.searches, 2)

    async def test_forget(self) -> None:
        backend = self.backend(self.directory, self.clock, cache_ttl=60)
        await backend.credentials("45675001")
        backend.forget("45675001")
        await backend.credentials("45675001")
        backend.forget()
        await backend.credentials("45675001")
        self.assertEqual(backend.directory.searches, 3)

    async def test_connections_are_reused(self) -> None:
        backend = self.backend(self.directory, self.clock, cache_ttl=0, pool_size=1)
        for _ in range(3):
            await backend.credentials("45675001")
        self.assertEqual(backend.directory.connections, 1)


class TLSTests(DirectoryTestCase):
    """
    StartTLS and LDAPS verify the directory's certificate, chain and name,
    before the bind password is sent.
    """

    def setUp(self) -> None:
        self.directory = sharedSlapd(self)
        self.otherCA = TestCA(os.path.abspath(self.mktemp()))

    async def test_starttls_with_the_test_ca(self) -> None:
        backend = self.backend(self.directory, starttls=True, ca_certificate=self.directory.ca.caPath)
        self.assertIsNotNone(await backend.credentials("45675001"))

    async def test_starttls_with_another_ca_is_refused(self) -> None:
        backend = self.backend(self.directory, starttls=True, ca_certificate=self.otherCA.caPath)
        failure = await self.assertFailure(backend.credentials("45675001"), BackendUnavailable)
        self.assertIn("certificate verify failed", str(failure))
        self.assertEqual(backend.directory.searches, 0)

    async def test_starttls_with_the_system_trust_store_is_refused(self) -> None:
        backend = self.backend(self.directory, starttls=True, ca_certificate=None)
        await self.assertFailure(backend.credentials("45675001"), BackendUnavailable)

    async def test_starttls_to_a_name_not_in_the_certificate_is_refused(self) -> None:
        # The certificate names ldap.aetasip.test and 127.0.0.1, not localhost.
        url = self.directory.url.replace("127.0.0.1", "localhost")
        backend = self.backend(self.directory, urls=[url], starttls=True, ca_certificate=self.directory.ca.caPath)
        failure = await self.assertFailure(backend.credentials("45675001"), BackendUnavailable)
        self.assertIn("does not name localhost", str(failure))
        self.assertEqual(backend.directory.searches, 0)

    async def test_ldaps_with_the_test_ca(self) -> None:
        backend = self.backend(self.directory, urls=[self.directory.ldapsURL], ca_certificate=self.directory.ca.caPath)
        self.assertIsNotNone(await backend.credentials("45675001"))

    async def test_ldaps_with_another_ca_is_refused(self) -> None:
        backend = self.backend(self.directory, urls=[self.directory.ldapsURL], ca_certificate=self.otherCA.caPath)
        await self.assertFailure(backend.credentials("45675001"), BackendUnavailable)

    async def test_ldaps_to_a_name_not_in_the_certificate_is_refused(self) -> None:
        url = self.directory.ldapsURL.replace("127.0.0.1", "localhost")
        backend = self.backend(self.directory, urls=[url], ca_certificate=self.directory.ca.caPath)
        failure = await self.assertFailure(backend.credentials("45675001"), BackendUnavailable)
        self.assertIn("does not name localhost", str(failure))


class Silent(Protocol):
    """Accepts a connection and never says anything: a hung directory."""


class FailureTests(DirectoryTestCase):
    """
    A directory that cannot answer makes lookups fail with
    L{BackendUnavailable}; service resumes when it is back.
    """

    async def test_refused_connection(self) -> None:
        backend = self.backend(sharedSlapd(self), urls=[f"ldap://127.0.0.1:{freePort()}"])
        failure = await self.assertFailure(backend.credentials("45675001"), BackendUnavailable)
        self.assertIn("no LDAP server available", str(failure))

    async def test_wrong_bind_password(self) -> None:
        backend = self.backend(sharedSlapd(self), bind_password="not-the-password")
        failure = await self.assertFailure(backend.credentials("45675001"), BackendUnavailable)
        self.assertIn("invalidCredentials", str(failure))

    async def test_hung_directory_times_out(self) -> None:
        factory = ServerFactory()
        factory.protocol = Silent
        port = cast(IReactorTCP, reactor).listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        url = f"ldap://127.0.0.1:{cast(IPv4Address, port.getHost()).port}"
        backend = self.backend(sharedSlapd(self), urls=[url], timeout=1)
        started = time.monotonic()
        failure = await self.assertFailure(backend.credentials("45675001"), BackendUnavailable)
        self.assertLess(time.monotonic() - started, 10)
        self.assertIn("timed out", str(failure))

    async def test_failover_to_the_next_server(self) -> None:
        directory = sharedSlapd(self)
        dead = f"ldap://127.0.0.1:{freePort()}"
        backend = self.backend(directory, urls=[dead, directory.url])
        self.assertIsNotNone(await backend.credentials("45675001"))

    async def test_failover_when_tls_fails_on_the_first_server(self) -> None:
        directory = sharedSlapd(self)
        misnamed = directory.url.replace("127.0.0.1", "localhost")
        backend = self.backend(
            directory, urls=[misnamed, directory.url], starttls=True, ca_certificate=directory.ca.caPath
        )
        self.assertIsNotNone(await backend.credentials("45675001"))

    async def test_stopped_directory_then_recovery(self) -> None:
        directory = privateSlapd(self)
        backend = self.backend(directory, cache_ttl=0)
        self.assertIsNotNone(await backend.credentials("45675001"))
        directory.stop()
        await self.assertFailure(backend.credentials("45675001"), BackendUnavailable)
        await self.assertFailure(backend.credentials("45675002"), BackendUnavailable)
        directory.start()
        self.assertIsNotNone(await backend.credentials("45675001"))

    async def test_pooled_connection_survives_a_directory_restart(self) -> None:
        directory = privateSlapd(self)
        backend = self.backend(directory, cache_ttl=0, pool_size=1)
        self.assertIsNotNone(await backend.credentials("45675001"))
        directory.stop()
        directory.start()
        # The pooled connection is dead: the lookup opens a new one.
        self.assertIsNotNone(await backend.credentials("45675001"))
        self.assertEqual(backend.directory.connections, 2)

    async def test_cached_answers_survive_an_outage(self) -> None:
        directory = privateSlapd(self)
        backend = self.backend(directory, cache_ttl=60)
        expected = await backend.credentials("45675001")
        directory.stop()
        self.assertEqual(self.successResultOf(backend.credentials("45675001")), expected)

    async def test_failures_are_not_cached(self) -> None:
        directory = privateSlapd(self)
        directory.stop()
        backend = self.backend(directory, cache_ttl=60)
        await self.assertFailure(backend.credentials("45675001"), BackendUnavailable)
        directory.start()
        self.assertIsNotNone(await backend.credentials("45675001"))

    async def test_too_many_waiting_lookups_fail_at_once(self) -> None:
        directory = sharedSlapd(self)
        backend = self.backend(directory, maxPending=2, cache_ttl=0)
        first, second = backend.credentials("45675001"), backend.credentials("45675002")
        self.failureResultOf(backend.credentials("45675003"), BackendUnavailable)
        await defer.gatherResults([first, second])


class RegistrarTests(DirectoryTestCase):
    """
    The registrar, fed with SIP by L{Harness}, on an LDAP backend.
    """

    def setUp(self) -> None:
        self.directory = privateSlapd(self)

    async def exchange(self, harness: Harness, data: bytes, agent: Agent) -> Reply:
        """Send C{data}; wait for the (asynchronous) reply."""
        before = len(harness.sent)
        harness.send(data, agent.source, agent.transport)
        for _ in range(500):
            if len(harness.sent) > before:
                break
            await deferLater(0.01)
        [(_, reply)] = harness.sent[before:]
        return Reply(reply)

    async def register(self, harness: Harness, agent: Agent, password: str | None = None) -> Reply:
        challenge = await self.exchange(harness, agent.register(), agent)
        self.assertEqual(challenge.code, 401)
        return await self.exchange(harness, agent.register(auth=challenge.challenge(), password=password), agent)

    async def test_right_and_wrong_passwords(self) -> None:
        harness = Harness(auth=self.backend(self.directory))
        self.assertEqual((await self.register(harness, Agent("45675001", "secret-one"))).code, 200)
        reply = await self.register(harness, Agent("45675002", "wrong", source=("127.0.0.1", 40002)))
        self.assertEqual(reply.code, 403)
        self.assertEqual(harness.location.lookup("45675002"), [])

    async def test_unknown_number_is_refused(self) -> None:
        harness = Harness(auth=self.backend(self.directory))
        self.assertEqual((await self.register(harness, Agent("45679999", "anything"))).code, 403)

    async def test_stopped_directory_gives_503_then_recovers(self) -> None:
        harness = Harness(auth=self.backend(self.directory, cache_ttl=0))
        agent = Agent("45675003", "secret-three")
        self.assertEqual((await self.register(harness, agent)).code, 200)
        self.directory.stop()
        reply = await self.register(harness, agent)
        self.assertEqual(reply.code, 503)
        retryAfter = reply.get("retry-after")
        assert retryAfter is not None
        self.assertGreater(int(retryAfter), 0)
        self.directory.start()
        self.assertEqual((await self.register(harness, agent)).code, 200)


class ConfigurationTests(SynchronousTestCase):
    """
    The C{ldap} section: checked at start, one line naming the key.
    """

    def make(self, **ldap: Any) -> LDAPAuthBackend:
        base = {"urls": ["ldap://ldap.example.net"], "base": "ou=people,dc=example,dc=net"}
        backend = makeLDAPBackend({"realm": REALM, "ldap": {**base, **ldap}}, None)
        self.addCleanup(backend.stop)
        return backend

    def assertRejected(self, key: str, **ldap: Any) -> ConfigError:
        error = self.assertRaises(ConfigError, self.make, **ldap)
        self.assertEqual(error.key, key)
        self.assertNotIn("\n", str(error))
        return error

    def test_defaults(self) -> None:
        settings = self.make().settings
        self.assertEqual(settings.servers, ((False, "ldap.example.net", 389),))
        self.assertEqual(settings.filter, "(uid={number})")
        self.assertEqual(settings.passwordAttribute, "userPassword")
        self.assertEqual((settings.ha1Attributes, settings.kindAttribute), ({}, None))
        self.assertEqual((settings.defaultKind, settings.startTLS, settings.timeout), ("premium", False, 5))
        self.assertEqual((settings.poolSize, settings.cacheTTL), (4, 60))

    def test_urls(self) -> None:
        settings = self.make(urls=["ldaps://LDAP1.example.net", "ldap://[::1]:1389/", "ldaps://10.0.0.2:6360"]).settings
        self.assertEqual(
            settings.servers, ((True, "ldap1.example.net", 636), (False, "::1", 1389), (True, "10.0.0.2", 6360))
        )
        for urls in [[], ["http://x"], ["ldap://"], ["ldap://h:99999"], ["ldap://h/dc=x"], ["ldap://u:p@h"], ["h:389"]]:
            error = self.assertRejected("ldap.urls", urls=urls)
            self.assertIn("ldap://HOST[:PORT]", str(error))

    def test_base_is_required(self) -> None:
        self.assertRejected("ldap.base", base=None)

    def test_bind_dn_needs_a_password(self) -> None:
        self.assertRejected("ldap.bind_password", bind_dn="cn=aetasip,dc=example,dc=net")

    def test_filter(self) -> None:
        for template in ["(uid=45675001)", "uid={number}", "(uid={number}", "(&(uid={number})"]:
            self.assertRejected("ldap.filter", filter=template)
        self.make(filter="(&(objectClass=inetOrgPerson)(telephoneNumber={number}))")

    def test_attribute_names(self) -> None:
        self.assertRejected("ldap.password_attribute", password_attribute="user password")
        self.assertRejected("ldap.kind_attribute", kind_attribute="(kind)")
        self.assertRejected("ldap.ha1_md5_attribute", ha1_md5_attribute="")
        self.make(password_attribute="2.5.4.35", kind_attribute="sip-kind;lang-en")

    def test_something_to_check_passwords_with(self) -> None:
        self.assertRejected("ldap.password_attribute", password_attribute=None)
        settings = self.make(password_attribute=None, ha1_sha256_attribute="sipHA1SHA256").settings
        self.assertEqual(settings.ha1Attributes, {"SHA-256": "sipHA1SHA256"})

    def test_config_keys_are_checked(self) -> None:
        for key, value in [
            ("ldap.urls", "ldap://x"),
            ("ldap.default_kind", "vip"),
            ("ldap.scope", "base"),
            ("ldap.starttls", "yes"),
            ("ldap.ca_certificate", "/nonexistent.pem"),
            ("ldap.timeout", 0),
            ("ldap.pool_size", 0),
            ("ldap.cache_ttl", -1),
        ]:
            with self.assertRaises(ConfigError) as raised:
                config.build({key: value})
            self.assertEqual(raised.exception.key, key)

    def test_clear_text_bind_password_is_warned_about(self) -> None:
        messages = captureLog(self)
        self.make(bind_dn="cn=a,dc=example,dc=net", bind_password="x", starttls=True)
        self.assertEqual([m for m in messages if "clear text" in m], [])
        self.make(bind_dn="cn=a,dc=example,dc=net", bind_password="x")
        self.assertEqual(len([m for m in messages if "clear text" in m]), 1)


class PluginTests(SynchronousTestCase):
    """
    C{auth.backends = ["ldap"]} finds the backend through the plugin and
    gives it the C{ldap} section.
    """

    def setUp(self) -> None:
        useCheckoutPlugins(self)

    def test_plugin_is_discovered(self) -> None:
        self.assertEqual(backendFactories()["ldap"].name, "ldap")

    def test_made_from_the_configuration(self) -> None:
        settings = config.build(
            {
                "auth.backends": ["ldap"],
                "sip.realm": "studio",
                "ldap.urls": ["ldaps://ldap.example.net"],
                "ldap.base": "ou=people,dc=example,dc=net",
                "ldap.filter": "(telephoneNumber={number})",
                "ldap.cache_ttl": 30,
            }
        )
        backend = makeAuthBackend(settings)
        assert isinstance(backend, LDAPAuthBackend)
        self.addCleanup(backend.stop)
        self.assertEqual(backend.realm, "studio")
        self.assertEqual(backend.settings.servers, ((True, "ldap.example.net", 636),))
        self.assertEqual((backend.settings.filter, backend.settings.cacheTTL), ("(telephoneNumber={number})", 30))

    def test_unconfigured_ldap_is_a_configuration_error(self) -> None:
        error = self.assertRaises(ConfigError, makeAuthBackend, config.build({"auth.backends": ["ldap"]}))
        self.assertEqual(error.key, "ldap.urls")
