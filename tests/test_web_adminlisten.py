"""
The admin API on a listen address of its own (C{web.admin_listen}), in the
real service tree over real HTTP on loopback: served there with the bearer
tokens, no longer on C{web.listen} (404), which keeps the portal, /health
and /metrics; HTTPS with the web certificate.
"""

from __future__ import annotations

import json
from typing import Any

import treq
from twisted.trial.unittest import SynchronousTestCase

from aetasip import config
from aetasip.web.settings import ListenAddress, WebSettings
from tests.test_web import AUTH, WebTestCase


class AdminListenSettingTests(SynchronousTestCase):
    def test_default_is_none(self) -> None:
        cfg = config.build({})
        self.assertIsNone(cfg["web.admin_listen"])
        self.assertIsNone(WebSettings.fromConfig(cfg).adminListen)

    def test_address(self) -> None:
        cfg = config.build({"web.admin_listen": "[::1]:8443"})
        self.assertEqual(WebSettings.fromConfig(cfg).adminListen, ListenAddress("::1", 8443))

    def test_bad_values_are_one_line_errors(self) -> None:
        for bad in ["8443", "localhost:8443", "127.0.0.1:99999", 8443]:
            with self.assertRaises(config.ConfigError) as raised:
                config.build({"web.admin_listen": bad})
            self.assertIn("web.admin_listen", str(raised.exception))
            self.assertIn("expected None or ADDRESS:PORT", str(raised.exception))


class AdminListenTests(WebTestCase):
    timeout = 120
    settings = {"web.admin_listen": "127.0.0.1:0"}

    @property
    def admin(self) -> Any:
        return self.server.service.getServiceNamed("admin")

    async def adminJSON(self, method: str, path: str, headers: dict[str, str] | None = None) -> Any:
        return await self.json(method, path, headers=headers, base=self.admin.url)

    async def test_api_on_its_own_address_with_a_token(self) -> None:
        self.assertTrue(self.admin.url.startswith("http://127.0.0.1:"))
        self.assertNotEqual(self.admin.url, self.web.url)
        self.assertEqual(await self.adminJSON("GET", "/api/v1/accounts", AUTH), (200, {"accounts": []}))
        code, body = await self.adminJSON("GET", "/api/v1/accounts")
        self.assertEqual(code, 401)
        self.assertIn("bearer token", body["error"])
        code, body = await self.adminJSON("GET", "/api/v1/accounts", {"Authorization": "Bearer " + "x" * 40})
        self.assertEqual(code, 401)

    async def test_every_route_needs_a_token_there(self) -> None:
        for method, path in self.admin.app.api.routes():
            if path == "/openapi.json":
                continue
            url = self.admin.url + "/api/v1" + path.replace("{number}", "45675001")
            response = await treq.request(method, url, pool=self.pool)
            await response.content()
            self.assertEqual(response.code, 401, (method, url))

    async def test_openapi_there_matches_the_routes(self) -> None:
        code, document = await self.adminJSON("GET", "/api/v1/openapi.json")
        self.assertEqual(code, 200)
        self.assertDescribesExactly(document, self.admin.app.api.routes())

    async def test_not_on_web_listen_any_more(self) -> None:
        for path in ("/api/v1/accounts", "/api/v1/openapi.json", "/api/v1/", "/api/v1/groups/4567"):
            code, body = await self.json("GET", path, headers=AUTH)
            self.assertEqual((code, body), (404, {"error": "no such resource"}), path)
        code, _ = await self.json("POST", "/api/v1/accounts", {"number": "45675001"}, AUTH)
        self.assertEqual(code, 404)

    async def test_portal_health_and_metrics_stay_on_web_listen(self) -> None:
        response = await self.request("GET", "/portal/login")
        self.assertEqual(response.code, 200)
        self.assertIn(b"<form", await response.content())
        response = await self.request("GET", "/metrics")
        self.assertEqual(response.code, 200)
        await response.content()
        code, body = await self.json("GET", "/health")
        self.assertEqual(code, 200)
        self.assertIs(body["services"]["admin"], True)
        # Nothing but the API on the admin address.
        for path in ("/health", "/metrics", "/portal/login", "/"):
            code, body = await self.adminJSON("GET", path)
            self.assertEqual((code, body), (404, {"error": "no such resource"}), path)

    async def test_started_last_and_stopped_first(self) -> None:
        names = [child.name for child in self.server.service]
        self.assertEqual(names[-1], "admin")
        port = self.admin.port
        self.assertIsNotNone(port)
        stopping = self.server.service.stopService()
        # The tree stops its children one after the other from the last: the admin API goes first.
        self.assertIsNone(self.admin.port)
        self.assertIsNotNone(self.web.port)
        self.server.service = None
        await stopping


class AdminListenOffTests(WebTestCase):
    async def test_api_on_web_listen_and_no_admin_service(self) -> None:
        self.assertEqual(await self.json("GET", "/api/v1/accounts", headers=AUTH), (200, {"accounts": []}))
        self.assertNotIn("admin", [child.name for child in self.server.service])


class AdminListenHTTPSTests(WebTestCase):
    settings = {"web.admin_listen": "127.0.0.1:0"}

    def setUp(self):  # type: ignore[no-untyped-def]
        self.serveHTTPS()
        return super().setUp()

    async def test_api_over_https_with_a_verified_certificate(self) -> None:
        admin = self.server.service.getServiceNamed("admin")
        self.assertTrue(admin.url.startswith("https://127.0.0.1:"))
        response = await self.verifyingClient().get(admin.url + "/api/v1/accounts", headers=AUTH)
        self.assertEqual(response.code, 200)
        self.assertEqual(json.loads(await response.content()), {"accounts": []})
