"""
The self-care portal over real HTTP against the running service tree:
login with the portal password (CSRF, throttling, the group's self-care
option), sessions and their cookies, the Subscriber data page (escaped
output) and its forms (CSRF, strength rules); then, in headless Chromium
(Debian chromium and chromium-driver, through Selenium), a subscriber logs
in and changes the SIP password, and sipp registers with the new one and
not with the old one.
"""

from __future__ import annotations

import html
import os
import re
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import urlencode

import treq
from twisted.internet import reactor, threads
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import HTTPConnectionPool

from aetasip.store import Provisioning, Store
from aetasip.web.portal import sipPasswordProblem
from aetasip.web.sessions import LoginThrottle, Sessions
from tests.browser import Pages, chromium
from tests.servers import CI, RunningService, requireTool
from tests.sipp import Sipp

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


class RulesTests(SynchronousTestCase):
    def test_sip_password_rules(self) -> None:
        self.assertEqual(sipPasswordProblem("45675001", "abc", "abd"), "The two passwords differ.")
        self.assertIn("at least 12", sipPasswordProblem("45675001", "abc123", "abc123") or "")
        self.assertIn("letters and digits", sipPasswordProblem("45675001", "abcdefghijklm", "abcdefghijklm") or "")
        self.assertIn("your number", sipPasswordProblem("45675001", "x45675001abc", "x45675001abc") or "")
        self.assertIsNone(sipPasswordProblem("45675001", "Studio-Codec-2026", "Studio-Codec-2026"))

    def test_throttle_per_key_and_window(self) -> None:
        now = [1000.0]
        throttle = LoginThrottle(lambda: now[0], limit=3, window=60)
        for _ in range(3):
            self.assertEqual(throttle.retryAfter("a"), 0)
            throttle.failed("a")
        self.assertEqual(throttle.retryAfter("a"), 60)
        self.assertEqual(throttle.retryAfter("b"), 0)
        now[0] += 60
        self.assertEqual(throttle.retryAfter("a"), 0)

    def test_sessions_expire_when_idle_and_are_bounded(self) -> None:
        now = [0.0]
        sessions = Sessions(lambda: now[0], idle=10, maxSessions=2)
        first = sessions.open("1")
        now[0] = 9
        self.assertIs(sessions.find(first.token), first)
        now[0] = 20
        self.assertIsNone(sessions.find(first.token))
        a, b, c = sessions.open("1"), sessions.open("2"), sessions.open("3")
        self.assertIsNone(sessions.find(a.token))
        self.assertIs(sessions.find(b.token), b)
        self.assertIs(sessions.find(c.token), c)
        self.assertNotEqual(b.csrf, c.csrf)


class Browser:
    """A minimal cookie-keeping HTTP client over treq, for the portal's forms."""

    def __init__(self, base: str, pool: HTTPConnectionPool) -> None:
        self.base = base
        self.pool = pool
        self.cookies: dict[str, str] = {}
        self.setCookies: list[str] = []

    async def request(
        self, method: str, path: str, form: dict[str, str] | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, str]:
        headers = {**(FORM if form is not None else {}), **(headers or {})}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        response = await treq.request(
            method, self.base + path, headers=headers, data=None if form is None else urlencode(form).encode(),
            pool=self.pool, allow_redirects=False,
        )  # fmt: skip
        self.setCookies = response.headers.getRawHeaders("set-cookie", [])
        for header in self.setCookies:
            for name, morsel in SimpleCookie(header).items():
                if morsel["max-age"] == "0":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return response.code, response.headers, (await response.content()).decode()

    async def loginForm(self) -> str:
        code, _, page = await self.request("GET", "/portal/login")
        match = re.search(r'name="csrf" value="([^"]+)"', page)
        assert code == 200 and match is not None, (code, page)
        return match.group(1)

    async def login(self, number: str, password: str) -> tuple[int, Any, str]:
        csrf = await self.loginForm()
        return await self.request("POST", "/portal/login", {"csrf": csrf, "number": number, "password": password})

    async def csrf(self) -> str:
        _, _, page = await self.request("GET", "/portal/")
        match = re.search(r'name="csrf" value="([^"]+)"', page)
        assert match is not None, page
        return match.group(1)


class PortalTestCase(TestCase):
    """The service tree running with three accounts that have portal passwords."""

    timeout = 120

    def setUp(self):  # type: ignore[no-untyped-def]
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.server = RunningService(self.directory, **self.serviceSettings())
        store = Store(self.server.storeURL)
        store.open()
        provisioning = Provisioning(store, "aetasip")
        provisioning.addAccount(
            "45675001", password="Old-SIP-passw0rd", displayName="<script>alert(1)</script> Studio",
            portalPassword="portal-secret-1",
        )  # fmt: skip
        provisioning.addAccount("45675002", password="Other-passw0rd", portalPassword="portal-secret-2")
        provisioning.addGroup("4568", "tech@example.net", selfCare=False)
        provisioning.allocate("4568", 1)
        provisioning.setPortalPassword("45685001", "portal-secret-3")
        store.close()
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(self.stopServer)
        return self.server.start()

    def serviceSettings(self) -> dict[str, Any]:
        """Configuration of the service beyond the tests' usual one."""
        return {}

    def stopServer(self):  # type: ignore[no-untyped-def]
        if self.server.service is not None:
            return self.server.stop()
        return None

    def browser(self) -> Browser:
        return Browser(self.server.service.getServiceNamed("web").url, self.pool)


class PortalTests(PortalTestCase):
    async def test_pages_need_a_session(self) -> None:
        browser = self.browser()
        for method, path in [("GET", "/portal/"), ("POST", "/portal/sip-password"), ("POST", "/portal/email")]:
            code, headers, _ = await browser.request(method, path, {} if method == "POST" else None)
            self.assertEqual((code, headers.getRawHeaders("location")), (303, ["/portal/login"]), path)
        code, headers, _ = await browser.request("GET", "/")
        self.assertEqual((code, headers.getRawHeaders("location")), (303, ["/portal/"]))

    async def test_login_cookies_and_escaped_page(self) -> None:
        browser = self.browser()
        await browser.loginForm()
        self.assertIn("HttpOnly; Secure; SameSite=Strict", browser.setCookies[0])
        code, headers, _ = await browser.login("45675001", "portal-secret-1")
        self.assertEqual((code, headers.getRawHeaders("location")), (303, ["/portal/"]))
        session = [c for c in browser.setCookies if c.startswith("aetasip_session=")]
        self.assertEqual(len(session), 1)
        self.assertIn("; Path=/portal/; HttpOnly; Secure; SameSite=Strict", session[0])
        code, headers, page = await browser.request("GET", "/portal/")
        self.assertEqual(code, 200)
        self.assertIn("&lt;script&gt;alert(1)&lt;/script&gt; Studio", page)
        self.assertNotIn("<script>", page)
        self.assertIn('<dd id="number">45675001</dd>', page)
        self.assertNotIn("45675002", page)
        self.assertEqual(headers.getRawHeaders("x-frame-options"), ["DENY"])

    async def test_wrong_password_missing_csrf_and_no_self_care(self) -> None:
        browser = self.browser()
        code, _, page = await browser.login("45675001", "portal-secret-2")
        self.assertEqual(code, 403)
        self.assertIn("Wrong number or portal password.", page)
        code, _, page = await browser.login("45675001", "Old-SIP-passw0rd")  # the SIP password is not the portal's
        self.assertEqual(code, 403)
        code, _, page = await browser.login("45685001", "portal-secret-3")  # its group has self-care off
        self.assertEqual(code, 403)
        other = self.browser()
        code, _, page = await other.request(
            "POST", "/portal/login", {"csrf": "forged", "number": "45675002", "password": "portal-secret-2"}
        )
        self.assertEqual(code, 403)
        self.assertIn("The form expired", page)
        self.assertNotIn("aetasip_session", other.cookies)

    async def test_failed_logins_are_throttled_per_account_and_per_address(self) -> None:
        browser = self.browser()
        for _ in range(5):
            code, _, _ = await browser.login("45675001", "wrong-password")
            self.assertEqual(code, 403)
        code, headers, page = await browser.login("45675001", "portal-secret-1")
        self.assertEqual(code, 429)
        self.assertIn("Too many failed attempts", page)
        self.assertGreater(int(headers.getRawHeaders("retry-after")[0]), 800)
        # The same address is refused for another account too.
        code, _, _ = await browser.login("45675002", "portal-secret-2")
        self.assertEqual(code, 429)

    async def test_sip_password_change_rules_and_csrf(self) -> None:
        browser = self.browser()
        await browser.login("45675001", "portal-secret-1")
        csrf = await browser.csrf()
        good = {"password": "New-Codec-passw0rd", "confirm": "New-Codec-passw0rd"}
        code, _, page = await browser.request("POST", "/portal/sip-password", {**good, "csrf": "forged"})
        self.assertEqual(code, 403)
        code, _, page = await browser.request(
            "POST", "/portal/sip-password", {"csrf": csrf, "password": "short1", "confirm": "short1"}
        )
        self.assertEqual(code, 400)
        self.assertIn("at least 12 characters", page)
        store = self.server.service.getServiceNamed("store").store
        before = await store.credentials("45675001")
        code, headers, _ = await browser.request("POST", "/portal/sip-password", {**good, "csrf": csrf})
        self.assertEqual((code, headers.getRawHeaders("location")), (303, ["/portal/?done=sip-password"]))
        after = await store.credentials("45675001")
        self.assertNotEqual(before, after)
        _, _, page = await browser.request("GET", "/portal/?done=sip-password")
        self.assertIn("The SIP password is changed.", page)
        # Logged out, the session is gone.
        code, _, _ = await browser.request("POST", "/portal/logout", {"csrf": csrf})
        self.assertEqual(code, 303)
        code, _, _ = await browser.request("GET", "/portal/")
        self.assertEqual(code, 303)

    async def test_email_and_portal_password(self) -> None:
        browser = self.browser()
        await browser.login("45675001", "portal-secret-1")
        csrf = await browser.csrf()
        code, _, page = await browser.request("POST", "/portal/email", {"csrf": csrf, "email": "not an address"})
        self.assertEqual(code, 400)
        code, _, _ = await browser.request("POST", "/portal/email", {"csrf": csrf, "email": "studio@example.net"})
        self.assertEqual(code, 303)
        _, _, page = await browser.request("GET", "/portal/")
        self.assertIn('<dd id="email">studio@example.net</dd>', page)
        change = {"csrf": csrf, "current": "wrong", "password": "new-portal-secret", "confirm": "new-portal-secret"}
        code, _, _ = await browser.request("POST", "/portal/portal-password", change)
        self.assertEqual(code, 403)
        code, _, _ = await browser.request("POST", "/portal/portal-password", {**change, "current": "portal-secret-1"})
        self.assertEqual(code, 303)
        code, _, _ = await self.browser().login("45675001", "portal-secret-1")
        self.assertEqual(code, 403)
        code, _, _ = await self.browser().login("45675001", "new-portal-secret")
        self.assertEqual(code, 303)


class LocationRecordsTests(PortalTestCase):
    async def test_live_bindings_of_the_number_only(self) -> None:
        sipp = requireTool(self, "sipp", "sip-tester")
        browser = self.browser()
        await browser.login("45675001", "portal-secret-1")
        code, _, page = await browser.request("GET", "/portal/locations")
        self.assertEqual(code, 200)
        self.assertIn('id="none"', page)
        result = await Sipp(sipp, self.directory).register("45675001", "Old-SIP-passw0rd", self.server.ports[0], "u1")
        self.assertEqual(result.code, 0, result.detail)
        (binding,) = self.server.sip.location.lookup("45675001")
        code, _, page = await browser.request("GET", "/portal/locations")
        self.assertEqual(code, 200)
        # The contact as registered, HTML-escaped; where it came from; the time left.
        self.assertIn(html.escape(binding.contact), page)
        self.assertIn(f"127.0.0.1:{binding.source[1]} (UDP)", page)
        expiresIn = int(re.search(r'class="expires number" data-label="Expires in">(\d+) s<', page).group(1))  # type: ignore[union-attr]
        self.assertTrue(0 < expiresIn <= round(binding.expiresAt - binding.registeredAt), expiresIn)
        # Another subscriber sees none of it.
        other = self.browser()
        await other.login("45675002", "portal-secret-2")
        code, _, page = await other.request("GET", "/portal/locations")
        self.assertIn('id="none"', page)
        self.assertNotIn(binding.contact, page)
        # Without a session: the login page.
        code, headers, _ = await self.browser().request("GET", "/portal/locations")
        self.assertEqual((code, headers.getRawHeaders("location")), (303, ["/portal/login"]))


class ChromiumTests(PortalTestCase):
    """The portal driven end to end in headless Chromium."""

    timeout = 180

    async def test_subscriber_changes_the_sip_password_in_a_browser(self) -> None:
        sipp = requireTool(self, "sipp", "sip-tester")
        requireTool(self, "chromedriver", "chromium-driver")
        try:
            import selenium  # noqa: F401
        except ImportError:
            if CI:
                raise
            self.skipTest("selenium is not installed")
        base = self.server.service.getServiceNamed("web").url
        screenshots = os.path.abspath("screenshots")
        os.makedirs(screenshots, exist_ok=True)
        driver = await threads.deferToThread(chromium, 800, 1000)
        self.addCleanup(driver.quit)
        pages = Pages(driver, base, screenshots, "sip-password")

        def browse() -> str:
            driver.get(base + "/portal/")
            pages.shot("login")
            pages.type("number", "45675001")
            pages.type("password", "portal-secret-1")
            pages.click("login")
            assert pages.text("number") == "45675001", pages.page
            pages.shot("subscriber-data")
            pages.type("sip-password", "Browser-chosen-2026")
            pages.type("sip-confirm", "Browser-chosen-2026")
            pages.click("change-sip-password")
            pages.shot("sip-password-changed")
            done = pages.text("done")
            pages.click("locations-link")
            pages.shot("location-records")
            assert 'id="none"' in pages.page, pages.page
            return done

        done = await threads.deferToThread(browse)
        self.assertEqual(done, "The SIP password is changed.")
        new = await Sipp(sipp, self.directory).register("45675001", "Browser-chosen-2026", self.server.ports[0], "u1")
        self.assertEqual(new.code, 0, new.detail)
        old = await Sipp(sipp, self.directory).register("45675001", "Old-SIP-passw0rd", self.server.ports[0], "u1")
        self.assertNotEqual(old.code, 0)
        self.assertNotIn("already registered", old.detail)


class SelfCareByGroupTests(PortalTestCase):
    async def test_a_session_ends_when_the_group_loses_self_care(self) -> None:
        store = self.server.service.getServiceNamed("store").store
        await store.updateGroup("4568", selfCare=True)
        browser = self.browser()
        code, _, _ = await browser.login("45685001", "portal-secret-3")
        self.assertEqual(code, 303)
        code, _, _ = await browser.request("GET", "/portal/calls")
        self.assertEqual(code, 200)
        await store.updateGroup("4568", selfCare=False)
        for path in ("/portal/calls", "/portal/"):
            code, headers, _ = await browser.request("GET", path)
            self.assertEqual((code, headers.getRawHeaders("location")), (303, ["/portal/login"]), path)


class SelfCareEveryAccountTests(PortalTestCase):
    def serviceSettings(self) -> dict[str, Any]:
        return {"portal.self_care": "every account"}

    async def test_the_groups_option_is_not_looked_at(self) -> None:
        code, _, _ = await self.browser().login("45685001", "portal-secret-3")  # its group has self-care off
        self.assertEqual(code, 303)

    def test_bad_values_are_refused(self) -> None:
        from aetasip import config

        for key, bad in [("portal.self_care", "everyone"), ("portal.time_zone", "Mars/Olympus"),
                         ("portal.url", "javascript:alert(1)"), ("portal.reset_lifetime", 10)]:  # fmt: skip
            with self.assertRaises(config.ConfigError, msg=key) as raised:
                config.build({key: bad})
            self.assertIn(key, str(raised.exception))
