"""
The web service (aetasip.web) in the real service tree, over real HTTP on
loopback: /health, /metrics (scraped and parsed with the Prometheus text
parser, after sipp registered), the admin API (bearer tokens, accounts
through the provisioning layer, JSON errors, the OpenAPI description
checked against the routes), and HTTPS when a certificate is configured.
"""

from __future__ import annotations

import json
import os
from typing import Any

import treq
from prometheus_client.parser import text_string_to_metric_families
from treq.client import HTTPClient
from twisted.internet import reactor, ssl
from twisted.internet.defer import maybeDeferred
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

from aetasip import admin, config
from aetasip.web.openapi import openAPIDocument
from aetasip.web.settings import ListenAddress, parseListen
from tests.certificates import TestCA
from tests.servers import RunningService, requireTool
from tests.sipp import Sipp

TOKEN = "t0ken-for-the-admin-api-tests-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"Content-Type": "application/json"}


class ListenSettingTests(SynchronousTestCase):
    def test_addresses(self) -> None:
        self.assertEqual(parseListen("127.0.0.1:8080"), ListenAddress("127.0.0.1", 8080))
        self.assertEqual(parseListen("[::1]:0"), ListenAddress("::1", 0))
        self.assertEqual(str(parseListen("[::1]:8080")), "[::1]:8080")

    def test_bad_values_are_one_line_errors(self) -> None:
        for bad in ["8080", "::1:8080", "[127.0.0.1]:80", "localhost:8080", "127.0.0.1:70000", "127.0.0.1:", 8080]:
            with self.assertRaises(config.ConfigError) as raised:
                config.build({"web.listen": bad})
            self.assertIn("expected None or ADDRESS:PORT", str(raised.exception))

    def test_short_tokens_are_refused_and_never_shown(self) -> None:
        with self.assertRaises(config.ConfigError) as raised:
            config.build({"web.admin_tokens": ["too-short"]})
        self.assertNotIn("too-short", str(raised.exception))

    def test_default_is_loopback_8080(self) -> None:
        self.assertEqual(config.build({})["web.listen"], "127.0.0.1:8080")


class WebTestCase(TestCase):
    """The service tree running with its web service on a free loopback port."""

    timeout = 60
    settings: dict[str, Any] = {}

    def setUp(self):  # type: ignore[no-untyped-def]
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.server = RunningService(self.directory, **{"web.admin_tokens": [TOKEN], **self.settings})
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(self.stopServer)
        return self.server.start()

    def stopServer(self):  # type: ignore[no-untyped-def]
        if self.server.service is not None:
            return self.server.stop()
        return None

    @property
    def web(self) -> Any:
        return self.server.service.getServiceNamed("web")

    async def request(
        self, method: str, path: str, body: object = None, headers: dict[str, str] | None = None, base: str = ""
    ) -> Any:
        """C{method} C{path} on the web service (or on the service at URL C{base}), with a JSON C{body}."""
        sent = dict(headers or {})
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        return await treq.request(method, (base or self.web.url) + path, data=data, headers=sent, pool=self.pool)

    async def json(
        self, method: str, path: str, body: object = None, headers: dict[str, str] | None = None, base: str = ""
    ) -> Any:
        """The status code and the JSON of the answer to L{request}, which must say it is JSON."""
        response = await self.request(method, path, body, headers, base)
        content = await response.content()
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"], content)
        return response.code, json.loads(content)

    def serveHTTPS(self) -> None:
        """
        Serve HTTPS with a certificate for localhost from a test CA
        (C{self.ca}); call it in C{setUp} before L{WebTestCase.setUp}.
        """
        self.ca = TestCA(os.path.join(self.mktemp(), "ca"))
        cert, key = self.ca.issue("localhost")
        self.settings = {**self.settings, "web.tls_certificate": cert, "web.tls_key": key}

    def verifyingClient(self) -> HTTPClient:
        """An HTTP client that trusts the test CA of L{serveHTTPS} alone."""
        policy = BrowserLikePolicyForHTTPS(trustRoot=ssl.Certificate.loadPEM(self.ca.caPEM))
        return HTTPClient(Agent(reactor, contextFactory=policy, pool=self.pool))

    def assertDescribesExactly(self, document: Any, routes: list[tuple[str, str]]) -> None:
        """C{document} is the API's OpenAPI description, and it describes C{routes}, no more, no fewer."""
        self.assertEqual(document, json.loads(json.dumps(openAPIDocument())))
        described = sorted(
            (method.upper(), path)
            for path, item in document["paths"].items()
            for method in item
            if method in ("get", "post", "put", "patch", "delete")
        )
        self.assertEqual(described, routes)


class HealthTests(WebTestCase):
    async def test_healthy_service(self) -> None:
        code, body = await self.json("GET", "/health")
        self.assertEqual(code, 200)
        self.assertEqual(body["status"], "ok")
        self.assertEqual(body["store"], "ok")
        self.assertTrue(body["sip"]["listening"])
        self.assertIn(f"udp:127.0.0.1:{self.server.ports[0]}", body["sip"]["ports"])
        self.assertEqual(body["down"], [])
        self.assertTrue(all(body["services"].values()), body["services"])

    async def test_store_that_fails_is_named(self) -> None:
        store = self.server.service.getServiceNamed("store").store.store

        def broken() -> int:
            raise OSError("database unreachable")

        store.schemaVersion = broken
        code, body = await self.json("GET", "/health")
        self.assertEqual(code, 503)
        self.assertEqual(body["status"], "degraded")
        self.assertEqual(body["store"], "down")
        self.assertEqual(body["down"], ["the store does not answer: OSError"])

    async def test_stopped_sip_service_is_named(self) -> None:
        sip = self.server.sip
        # Taken out of the tree (and stopped once): the tree's stop does not stop it again.
        await maybeDeferred(sip.disownServiceParent)
        code, body = await self.json("GET", "/health")
        self.assertEqual(code, 503)
        self.assertIn("SIP is not listening", body["down"])
        self.assertFalse(body["sip"]["listening"])


class MetricsTests(WebTestCase):
    timeout = 120

    async def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        response = await self.request("GET", "/metrics")
        self.assertEqual(response.code, 200)
        self.assertTrue(response.headers.getRawHeaders("content-type")[0].startswith("text/plain; version="))
        text = (await response.content()).decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    async def test_a_real_registration_is_counted(self) -> None:
        sipp = requireTool(self, "sipp", "sip-tester")
        before = await self.scrape()
        self.assertEqual(before[("aetasip_registered_users", ())], 0)
        self.assertEqual(before[("aetasip_active_dialogs", ())], 0)
        self.assertEqual(before[("aetasip_info", (("version", __import__("aetasip").__version__),))], 1)
        code = admin.main(
            ["--store", self.server.storeURL, "account", "add", "45675001", "--password", "secret-one"],
            _Discard(), _Discard(),
        )  # fmt: skip
        self.assertEqual(code, 0)
        result = await Sipp(sipp, self.directory).register("45675001", "secret-one", self.server.ports[0], "u1")
        self.assertEqual(result.code, 0, result.detail)
        failed = await Sipp(sipp, self.directory).register("45675001", "wrong", self.server.ports[0], "u1")
        self.assertNotEqual(failed.code, 0)
        after = await self.scrape()
        self.assertEqual(after[("aetasip_registered_users", ())], 1)
        self.assertEqual(after[("aetasip_registered_contacts", (("transport", "udp"),))], 1)
        self.assertEqual(after[("aetasip_registered_contacts", (("transport", "tcp"),))], 0)
        # REGISTER, 401, REGISTER with credentials: at least 2 requests each run.
        self.assertGreaterEqual(after[("aetasip_sip_received_requests_total", ())], 4)
        self.assertGreaterEqual(after[("aetasip_auth_failures_total", ())], 1)
        self.assertEqual(after[("aetasip_active_calls", (("state", "answered"),))], 0)


class _Discard:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


class AdminAPITests(WebTestCase):
    timeout = 120

    async def test_every_route_needs_a_token(self) -> None:
        for method, path in self._routes():
            if path == "/openapi.json":
                continue
            url = "/api/v1" + path.replace("{number}", "45675001")
            for headers in ({}, {"Authorization": "Bearer " + "x" * 40}, {"Authorization": f"Basic {TOKEN}"}):
                response = await self.request(method, url, {} if method in ("POST", "PATCH") else None, headers)
                body = json.loads(await response.content())
                self.assertEqual(response.code, 401, (method, url, headers))
                self.assertIn("bearer token", body["error"])
                self.assertEqual(response.headers.getRawHeaders("www-authenticate"), ['Bearer realm="aetasip"'])

    def _routes(self) -> list[tuple[str, str]]:
        return self.apiObject().routes()  # type: ignore[no-any-return]

    def apiObject(self) -> Any:
        from aetasip.web.api import AdminAPI

        app = self.web.app
        self.assertIsInstance(app.api, AdminAPI)
        return app.api

    async def test_openapi_describes_exactly_the_routes(self) -> None:
        code, document = await self.json("GET", "/api/v1/openapi.json")
        self.assertEqual(code, 200)
        self.assertDescribesExactly(document, self._routes())
        from aetasip.web.api import AdminAPI

        for path in ("/records", "/records.csv"):
            documented = [parameter["name"] for parameter in document["paths"][path]["get"]["parameters"]]
            self.assertEqual(documented, list(AdminAPI.RECORD_PARAMETERS), path)

    async def test_account_life(self) -> None:
        code, created = await self.json(
            "POST", "/api/v1/accounts",
            {"number": "45675001", "displayName": "<b>Studio</b> A", "email": "studio@example.net"}, AUTH,
        )  # fmt: skip
        self.assertEqual(code, 201, created)
        self.assertEqual(created["account"]["number"], "45675001")
        self.assertEqual(created["account"]["displayName"], "<b>Studio</b> A")
        self.assertEqual(created["account"]["kind"], "premium")
        self.assertFalse(created["account"]["portalPassword"])
        self.assertGreaterEqual(len(created["password"]), 12)
        self.assertNotIn("ha1MD5", created["account"])

        code, listed = await self.json("GET", "/api/v1/accounts", headers=AUTH)
        self.assertEqual((code, [a["number"] for a in listed["accounts"]]), (200, ["45675001"]))
        code, one = await self.json("GET", "/api/v1/accounts/45675001", headers=AUTH)
        self.assertEqual((code, one), (200, created["account"]))

        code, changed = await self.json("PATCH", "/api/v1/accounts/45675001", {"displayName": "Studio B"}, AUTH)
        self.assertEqual((code, changed["displayName"], changed["email"]), (200, "Studio B", "studio@example.net"))

        code, deleted = await self.json("DELETE", "/api/v1/accounts/45675001", headers=AUTH)
        self.assertEqual((code, deleted), (200, {"number": "45675001", "deletedRegistrations": 0}))
        code, gone = await self.json("GET", "/api/v1/accounts/45675001", headers=AUTH)
        self.assertEqual((code, gone), (404, {"error": "no account 45675001"}))
        code, gone = await self.json("DELETE", "/api/v1/accounts/45675001", headers=AUTH)
        self.assertEqual(code, 404)

    async def test_errors_are_json_with_their_status(self) -> None:
        await self.json("POST", "/api/v1/accounts", {"number": "45675001"}, AUTH)
        cases: list[tuple[str, str, object, dict[str, str], int, str]] = [
            ("POST", "/api/v1/accounts", {"number": "45675001"}, {}, 409, "45675001"),
            ("POST", "/api/v1/accounts", {"number": "12ab"}, {}, 400, "number"),
            ("POST", "/api/v1/accounts", {"number": "45675002", "email": "not-an-address"}, {}, 400, "e-mail"),
            ("POST", "/api/v1/accounts", {"number": "45675002", "colour": "red"}, {}, 400, "unknown member 'colour'"),
            ("POST", "/api/v1/accounts", {"number": 45675002}, {}, 400, "member 'number': wrong type int"),
            ("POST", "/api/v1/accounts", {}, {}, 400, "member 'number' is required"),
            ("POST", "/api/v1/accounts", [1, 2], {}, 400, "must be a JSON object"),
            ("POST", "/api/v1/accounts", b"{not json", {}, 400, "not valid JSON"),
            ("POST", "/api/v1/accounts", b"number=1", {"Content-Type": "application/x-www-form-urlencoded"}, 415,
             "must be JSON"),
            ("POST", "/api/v1/accounts", b" " * (64 * 1024 + 1), {}, 413, "larger than"),
            ("PATCH", "/api/v1/accounts/45675001", {}, {}, 400, "nothing to change"),
            ("PATCH", "/api/v1/accounts/45675009", {"displayName": "x"}, {}, 404, "45675009"),
            ("PATCH", "/api/v1/accounts/45675001", {"relay": "sometimes"}, {}, 400, "relay"),
            ("POST", "/api/v1/accounts/45675001/password", {"password": ""}, {}, 400, "must not be empty"),
            ("POST", "/api/v1/accounts/45675001/password", {"password": "a\u0000b"}, {}, 400, "control characters"),
            ("GET", "/api/v1/nothing-here", None, {}, 404, "no such resource"),
            ("GET", "/no-such-page", None, {}, 404, "no such resource"),
            ("PUT", "/api/v1/accounts", {}, {}, 405, "method PUT not allowed"),
        ]  # fmt: skip
        for method, path, body, headers, status, message in cases:
            code, answer = await self.json(method, path, body, {**AUTH, **headers})
            self.assertEqual(code, status, (method, path, body, answer))
            self.assertIn(message, answer["error"], (method, path, body))

    async def test_new_password_is_used_at_once_by_the_running_service(self) -> None:
        sipp = requireTool(self, "sipp", "sip-tester")
        code, created = await self.json("POST", "/api/v1/accounts", {"number": "45675001"}, AUTH)
        self.assertEqual(code, 201)
        old = created["password"]
        # A failed attempt makes the SQL backend read and cache (60 s) the credentials.
        wrong = await Sipp(sipp, self.directory).register("45675001", "not-the-password", self.server.ports[0], "u1")
        self.assertNotEqual(wrong.code, 0)
        # The API must make the running service forget them at once.
        code, changed = await self.json("POST", "/api/v1/accounts/45675001/password", {}, AUTH)
        self.assertEqual(code, 200)
        self.assertNotEqual(changed["password"], old)
        again = await Sipp(sipp, self.directory).register("45675001", changed["password"], self.server.ports[0], "u1")
        self.assertEqual(again.code, 0, again.detail)
        stale = await Sipp(sipp, self.directory).register("45675001", old, self.server.ports[0], "u1")
        self.assertNotEqual(stale.code, 0)
        self.assertNotIn("already registered", stale.detail)
        code, chosen = await self.json(
            "POST", "/api/v1/accounts/45675001/password", {"password": "Chosen-Passw0rd-1"}, AUTH
        )
        self.assertEqual((code, chosen), (200, {"number": "45675001", "password": "Chosen-Passw0rd-1"}))


class PortalPasswordAPITests(WebTestCase):
    async def test_set_generate_and_remove(self) -> None:
        await self.json("POST", "/api/v1/accounts", {"number": "45675001"}, AUTH)
        path = "/api/v1/accounts/45675001/portal-password"
        code, given = await self.json("POST", path, {"password": "Portal-Secret-1"}, AUTH)
        self.assertEqual((code, given), (200, {"number": "45675001", "password": "Portal-Secret-1"}))
        store = self.server.service.getServiceNamed("store").store
        self.assertTrue(await store.checkPortalPassword("45675001", "Portal-Secret-1"))
        code, generated = await self.json("POST", path, {}, AUTH)
        self.assertEqual(code, 200)
        self.assertTrue(await store.checkPortalPassword("45675001", generated["password"]))
        code, account = await self.json("GET", "/api/v1/accounts/45675001", headers=AUTH)
        self.assertTrue(account["portalPassword"])
        code, account = await self.json("DELETE", path, headers=AUTH)
        self.assertEqual((code, account["portalPassword"]), (200, False))
        self.assertFalse(await store.checkPortalPassword("45675001", generated["password"]))
        code, error = await self.json("POST", "/api/v1/accounts/45675009/portal-password", {}, AUTH)
        self.assertEqual((code, error), (404, {"error": "no account 45675009"}))


class HTTPSTests(WebTestCase):
    def setUp(self):  # type: ignore[no-untyped-def]
        self.serveHTTPS()
        return super().setUp()

    async def test_health_over_https_with_a_verified_certificate(self) -> None:
        self.assertTrue(self.web.url.startswith("https://127.0.0.1:"))
        response = await self.verifyingClient().get(self.web.url + "/health")
        self.assertEqual(response.code, 200)
        self.assertEqual(json.loads(await response.content())["status"], "ok")

    async def test_plain_http_is_not_answered(self) -> None:
        url = self.web.url.replace("https://", "http://")
        with self.assertRaises(Exception):  # noqa: B017 - any failure: no HTTP answer on a TLS port
            response = await treq.get(url + "/health", pool=self.pool, timeout=5)
            await response.content()
