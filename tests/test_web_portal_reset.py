"""
A forgotten portal password reset by e-mail, against the real SMTP
server fixture (STARTTLS, AUTH): the "forgot" form takes the number and
answers the same whether it exists or not; the mailed link (signed,
single-use, expiring) opens a form that sets a new portal password; the
requests are throttled; without mail there is no reset.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from aetasip.store import Store
from aetasip.store.outbox import QUEUED
from aetasip.web.reset import ResetTokens
from tests.certificates import TestCA
from tests.servers import deferLater, freePort
from tests.smtpserver import SMTPServer
from tests.test_web_portal import Browser, PortalTestCase

USER, PASSWORD = "aetasip", "smtp-secret"


class TokenTests(SynchronousTestCase):
    def test_signed_expiring_single_use(self) -> None:
        now = [1000.0]
        tokens = ResetTokens(b"k" * 32, 3600, lambda: now[0])
        token = tokens.make("45675001", "hash-1")
        number, remembered = tokens.number(token) or ("", "")
        self.assertEqual(number, "45675001")
        self.assertTrue(ResetTokens.stillValid(remembered, "hash-1"))
        self.assertFalse(ResetTokens.stillValid(remembered, "hash-2"))  # used: the password changed
        self.assertIsNone(ResetTokens(b"x" * 32, 3600, lambda: now[0]).number(token))  # another key
        self.assertIsNone(tokens.number(token[:-2] + ("AA" if not token.endswith("AA") else "BB")))
        self.assertIsNone(tokens.number(""))
        self.assertIsNone(tokens.number("a" * 5000))
        now[0] += 3601
        self.assertIsNone(tokens.number(token))


class ResetTests(PortalTestCase):
    timeout = 60

    def serviceSettings(self) -> dict[str, Any]:
        self.ca = TestCA(os.path.abspath(self.mktemp()))
        cert, key = self.ca.issue("localhost")
        self.smtp = SMTPServer(self, freePort(), cert, key, USER, PASSWORD)
        return {
            "mail.smtp_host": "localhost",
            "mail.smtp_port": self.smtp.port,
            "mail.ca_certificate": self.ca.caPath,
            "mail.username": USER,
            "mail.password": PASSWORD,
            "mail.from_address": "noreply@sip.example.net",
        }

    def setUp(self):  # type: ignore[no-untyped-def]
        started = PortalTestCase.setUp(self)  # also PublicURLTests' setUp
        store = Store(self.server.storeURL)
        store.open()
        store.updateAccount("45675001", email="studio@example.net")
        store.updateAccount("45685001", email="nocare@example.net")  # its group has self-care off
        store.close()
        return started.addCallback(lambda _: self.smtp.start())

    async def mails(self, count: int) -> list[tuple[dict[str, Any], bytes]]:
        for _ in range(100):
            found = self.smtp.messages()
            if len(found) >= count:
                return found
            await deferLater(0.1)
        self.fail(f"expected {count} messages, got {len(self.smtp.messages())}")

    async def ask(self, browser: Browser, number: str) -> tuple[int, Any, str]:
        _, _, page = await browser.request("GET", "/portal/forgot")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        return await browser.request("POST", "/portal/forgot", {"csrf": csrf, "number": number})

    async def test_the_mailed_link_sets_a_new_portal_password_once(self) -> None:
        browser = self.browser()
        _, _, page = await browser.request("GET", "/portal/login")
        self.assertIn('href="/portal/forgot"', page)
        code, _, answer = await self.ask(browser, "45675001")
        self.assertEqual(code, 200)
        self.assertIn('id="sent"', answer)
        ((envelope, raw),) = await self.mails(1)
        self.assertEqual(envelope["to"], ["studio@example.net"])
        self.assertTrue(envelope["tls"])
        message = email.message_from_bytes(raw, policy=email.policy.default)
        self.assertEqual(message["Subject"], "Your portal password / Votre mot de passe du portail")
        body = message.get_body().get_content()  # type: ignore[union-attr]
        self.assertIn("45675001", body)
        self.assertIn("Quelqu'un, probablement vous", body)
        base = self.server.service.getServiceNamed("web").url
        links = re.findall(re.escape(base) + r"/portal/reset\?token=[A-Za-z0-9_.\-]+", body)
        self.assertEqual(len(set(links)), 1, body)
        path = links[0][len(base) :]
        # Other numbers get the same answer, and no mail.
        for other in ("45675002", "99999999", "45685001", "not-a-number"):
            code, _, page = await self.ask(self.browser(), other)
            self.assertEqual(code, 200)
            self.assertEqual(re.sub(r'value="[^"]+"', "", page), re.sub(r'value="[^"]+"', "", answer))
        # The link opens the form; the rules apply; the new password is set.
        reader = self.browser()
        code, _, page = await reader.request("GET", path)
        self.assertEqual(code, 200)
        self.assertIn('id="set-password"', page)
        token = path.partition("token=")[2]
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        form = {"csrf": csrf, "token": token, "password": "reset-portal-secret", "confirm": "other"}
        code, _, page = await reader.request("POST", "/portal/reset", form)
        self.assertEqual(code, 400)
        self.assertIn("The two passwords differ.", page)
        form["confirm"] = "reset-portal-secret"
        code, _, page = await reader.request("POST", "/portal/reset", {**form, "csrf": "forged"})
        self.assertEqual(code, 403)
        # Each form page has a token of its own.
        form["csrf"] = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        code, headers, _ = await reader.request("POST", "/portal/reset", form)
        self.assertEqual((code, headers.getRawHeaders("location")), (303, ["/portal/login?done=reset"]))
        _, _, page = await reader.request("GET", "/portal/login?done=reset")
        self.assertIn("Your portal password is changed: log in with it.", page)
        code, _, _ = await self.browser().login("45675001", "portal-secret-1")
        self.assertEqual(code, 403)
        code, _, _ = await self.browser().login("45675001", "reset-portal-secret")
        self.assertEqual(code, 303)
        # Used: the link is dead.
        code, _, page = await self.browser().request("GET", path)
        self.assertEqual(code, 400)
        self.assertIn("This link is not valid", page)
        await deferLater(0.5)
        self.assertEqual(len(self.smtp.messages()), 1)

    async def test_requests_are_throttled_per_number(self) -> None:
        for _ in range(3):
            code, _, _ = await self.ask(self.browser(), "45675002")
            self.assertEqual(code, 200)
        code, headers, page = await self.ask(self.browser(), "45675002")
        self.assertEqual(code, 429)
        self.assertIn("Too many requests", page)
        self.assertGreater(int(headers.getRawHeaders("retry-after")[0]), 3000)
        code, _, _ = await self.ask(self.browser(), "45675001")
        self.assertEqual(code, 200)
        code, _, _ = await self.browser().request("GET", "/portal/reset?token=forged.token.value")
        self.assertEqual(code, 400)

    async def test_a_reset_asked_as_the_service_stops_is_queued(self) -> None:
        """The web service stops listening while the link is being made: the mail waits in the outbox, with its link."""
        web = self.server.service.getServiceNamed("web")
        base = web.url
        portal = web.app.portal
        gate: defer.Deferred[None] = defer.Deferred()
        getAccount = portal.store.getAccount

        async def slowGetAccount(number: str) -> Any:
            await gate
            return await getAccount(number)

        self.patch(portal.store, "getAccount", slowGetAccount)
        code, _, _ = await self.ask(self.browser(), "45675001")
        self.assertEqual(code, 200)
        stopped = web.stopService()
        self.assertFalse(stopped.called)  # it waits for the link being made
        gate.callback(None)
        await stopped
        self.assertEqual(self.flushLoggedErrors(), [])
        store = Store(self.server.storeURL)
        store.open()
        self.addCleanup(store.close)
        (queued,) = [mail for mail in store.outbox() if mail.purpose == "portal reset 45675001"]
        self.assertEqual(queued.state, QUEUED)
        body = email.message_from_bytes(queued.message, policy=email.policy.default).get_body().get_content()  # type: ignore[union-attr]
        self.assertIn(base + "/portal/reset?token=", body)


class NoMailTests(PortalTestCase):
    async def test_no_reset_without_mail(self) -> None:
        browser = self.browser()
        _, _, page = await browser.request("GET", "/portal/login")
        self.assertNotIn("/portal/forgot", page)
        code, _, page = await browser.request("GET", "/portal/forgot")
        self.assertEqual(code, 404)
        self.assertIn('id="unavailable"', page)
        code, _, _ = await browser.request("POST", "/portal/forgot", {"number": "45675001"})
        self.assertEqual(code, 404)


class PublicURLTests(PortalTestCase):
    """With portal.url set, the mailed link points there, whatever Host the request named."""

    timeout = 60
    setUp = ResetTests.setUp
    mails = ResetTests.mails
    ask = ResetTests.ask

    def serviceSettings(self) -> dict[str, Any]:
        return {**ResetTests.serviceSettings(self), "portal.url": "https://sip.example.net/portal"}  # type: ignore[arg-type]

    async def test_the_link_is_on_the_public_url(self) -> None:
        browser = self.browser()
        _, _, page = await browser.request("GET", "/portal/forgot", headers={"Host": "evil.example"})
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        code, headers, _ = await browser.request(
            "POST", "/portal/forgot", {"csrf": csrf, "number": "45675001"}, headers={"Host": "evil.example"}
        )
        self.assertEqual(code, 200)
        self.assertEqual(headers.getRawHeaders("content-language"), ["en"])
        ((_, raw),) = await self.mails(1)
        body = email.message_from_bytes(raw, policy=email.policy.default).get_body().get_content()  # type: ignore[union-attr]
        self.assertRegex(body, r"https://sip\.example\.net/portal/reset\?token=[A-Za-z0-9_.\-]+\r?\n")
        self.assertNotIn("evil.example", body)
