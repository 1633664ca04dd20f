"""
The portal in headless Chromium (Debian chromium and chromium-driver,
through Selenium) after real traffic: a relayed call with RTP through the
built-in relay and a missed call (sipp), then a sipp registration; a
subscriber reads every page in English and in French, switching with the
links at the top, on a narrow (phone) and a wide window, and resets a
forgotten portal password with the link the real SMTP server received.
A full-page screenshot of each page is saved in C{screenshots/} (under
trial's temporary directory): C{PAGE-LANGUAGE-WIDTH.png}.
"""

from __future__ import annotations

import email
import email.policy
import os
import re

from twisted.internet import threads

from aetasip.store import Store
from aetasip.store.callrecords import RecordQuery
from tests import test_interop_relay as relay
from tests.browser import Pages, chromium
from tests.certificates import TestCA
from tests.interop import InteropTestCase
from tests.servers import CI, deferLater, freePort, requireTool
from tests.smtpserver import SMTPServer

CALLER, CALLEE = relay.CALLER, relay.CALLEE
SIZES = {"narrow": (390, 844), "wide": (1280, 900)}
"""CSS pixels of the windows: a phone's (emulated: a desktop window is at least 500 wide) and a desktop's."""


class PortalInChromiumTests(relay.RelayFixture, InteropTestCase):
    timeout = 300

    node = relay.RelayInteropTests.node
    assertRelayPort = relay.RelayInteropTests.assertRelayPort

    async def traffic(self) -> None:
        """A relayed call with media from CALLER to CALLEE, a call CALLER missed, then CALLER registers."""
        assert self.server is not None
        callerSocket, _ = self.socket()
        calleeSocket, calleePort = self.socket()
        _, advertisedPort = self.socket("127.0.0.5")
        callee = await self.callee("relay_uas.xml", calleePort)
        caller = self.caller("relay_uac.xml", ("127.0.0.5", advertisedPort), "-d", "2500")
        calleeSendsTo, callerSendsTo = await self.mediaOf("callee"), await self.mediaOf("caller")
        for seq in range(100):
            if seq % 25 != 7:  # 4 of 100 lost on the caller's way
                callerSocket.transport.write(relay.rtp(seq, b"A"), callerSendsTo)  # type: ignore[union-attr]
            calleeSocket.transport.write(relay.rtp(seq, b"B"), calleeSendsTo)  # type: ignore[union-attr]
            await deferLater(0.01)
        self.assertEqual((await caller.done).code, 0)
        self.assertEqual((await callee.done).code, 0)
        port = self.server.ports[0]
        missed = await self.sipp.call(CALLEE, relay.CALLEE_PASSWORD, CALLER, "call_uac_refused.xml", port)
        self.assertEqual(missed.code, 0, missed.detail)
        registered = await self.sipp.register(CALLER, relay.CALLER_PASSWORD, port, "u1")
        self.assertEqual(registered.code, 0, registered.detail)
        store = Store(self.server.storeURL)
        store.open()
        self.addCleanup(store.close)
        for _ in range(100):
            found = store.callRecords(RecordQuery(madeOrMissed=CALLER))
            if len(found) == 2 and not any(r.open for r in found):
                return
            await deferLater(0.1)
        self.fail(f"the call records are not written: {found}")

    async def test_every_page_in_both_languages_and_widths(self) -> None:
        requireTool(self, "chromedriver", "chromium-driver")
        try:
            import selenium  # noqa: F401
        except ImportError:
            if CI:
                raise
            self.skipTest("selenium is not installed")
        ca = TestCA(os.path.abspath(self.mktemp()))
        cert, key = ca.issue("localhost")
        smtp = SMTPServer(self, freePort(), cert, key, "aetasip", "smtp-secret")
        await smtp.start()
        server = await self.serve(
            **{
                "mail.smtp_host": "localhost", "mail.smtp_port": smtp.port, "mail.ca_certificate": ca.caPath,
                "mail.username": "aetasip", "mail.password": "smtp-secret",
                "mail.from_address": "noreply@sip.example.net", "portal.time_zone": "Europe/Paris",
            }
        )  # fmt: skip
        store = Store(server.storeURL)
        store.open()
        store.updateAccount(CALLER, displayName="Studio 2 <Paris>", email="studio2@example.net")
        store.setPortalPassword(CALLER, "portal-secret-1")
        store.close()
        await self.traffic()
        base = server.service.getServiceNamed("web").url
        screenshots = os.path.abspath("screenshots")
        os.makedirs(screenshots, exist_ok=True)
        password = "portal-secret-1"
        for width, (w, h) in SIZES.items():
            driver = await threads.deferToThread(chromium, w, h)
            self.addCleanup(driver.quit)
            pages = Pages(driver, base, screenshots, width)
            password = await self.browse(pages, smtp, password, len(smtp.messages()))

    async def browse(self, pages: Pages, smtp: SMTPServer, password: str, mailsBefore: int) -> str:
        """Every page in both languages; then a reset of the portal password, whose new value is returned."""

        def loggedIn() -> None:
            pages.driver.get(pages.base + "/portal/login")
            assert 'lang="en"' in pages.page, pages.page  # Chromium asks for en-US
            pages.shot("login")
            pages.click("language-fr")
            assert "Mot de passe du portail" in pages.page
            pages.shot("login")
            pages.type("number", CALLER)
            pages.type("password", password)
            pages.click("login")
            assert pages.text("number") == CALLER, pages.page
            assert "Studio 2 &lt;Paris&gt;" in pages.page
            pages.shot("subscriber-data")
            for language in ("fr", "en"):
                if language == "en":
                    pages.click("language-en")
                    pages.shot("call-records")
                pages.click("locations-link")
                assert "UDP" in pages.text("bindings"), pages.page
                pages.shot("location-records")
                pages.click("calls-link")
                rows = pages.driver.find_elements("css selector", "#calls tbody tr")
                assert len(rows) == 2, pages.page
                assert "MOS" in pages.page and ("4,0" in pages.page or "4.0" in pages.page), pages.page
                if language == "fr":
                    assert "Manqué" in rows[0].text and "Non enregistré (code 480)" in rows[0].text, rows[0].text
                    assert "Émis" in rows[1].text and "Vous avez raccroché" in rows[1].text, rows[1].text
                    assert "CEST" in rows[1].text or "CET" in rows[1].text, rows[1].text
                    pages.shot("call-records")
                else:
                    pages.click("subscriber-link")
                    pages.shot("subscriber-data")
            pages.click("logout")
            pages.click("forgot")
            pages.shot("forgot")
            pages.click("language-fr")
            pages.shot("forgot")
            pages.type("number", CALLER)
            pages.click("send-link")
            assert pages.driver.find_element("id", "sent"), pages.page
            pages.shot("forgot-sent")

        await threads.deferToThread(loggedIn)
        for _ in range(100):
            if len(smtp.messages()) > mailsBefore:
                break
            await deferLater(0.1)
        (_, raw) = smtp.messages()[-1]
        body = email.message_from_bytes(raw, policy=email.policy.default).get_body().get_content()  # type: ignore[union-attr]
        (link,) = set(re.findall(r"http://\S+/portal/reset\?token=\S+", body))
        newPassword = password + "-new"

        def reset() -> None:
            pages.driver.get(link)
            assert 'lang="fr"' in pages.page  # the cookie of the switch
            pages.shot("reset")
            pages.click("language-en")
            assert 'id="set-password"' in pages.page, pages.page
            pages.shot("reset")
            pages.type("portal-password", newPassword)
            pages.type("portal-confirm", newPassword)
            assert CALLER in pages.text("reset-number"), pages.page
            pages.click("set-password")
            assert "Your portal password is changed" in pages.text("done"), pages.page
            pages.shot("login-after-reset")
            pages.type("number", CALLER)
            pages.type("password", newPassword)
            pages.click("login")
            assert pages.text("number") == CALLER, pages.page

        await threads.deferToThread(reset)
        return newPassword
