"""
The portal in English and French: the French catalog holds every message
of the code and templates (extracted as C{pybabel extract -F babel.cfg
-k N_} does) with matching placeholders, and ships with the package; the
language comes from Accept-Language, a cookie set by the switch on every
page overrides it; pages, messages, dates and numbers in French.
"""

from __future__ import annotations

import configparser
import fnmatch
import os
import re

from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po
from twisted.trial.unittest import SynchronousTestCase

from aetasip.web.i18n import LANGUAGES, Language, catalogPath, negotiate
from aetasip.web.portal import sipPasswordProblem
from aetasip.web.templates import TEMPLATES
from tests.test_web_portal import PortalTestCase
from tests.test_web_portal_calls import T0, record

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sourceMessages() -> set[str]:
    with open(os.path.join(TOP, "babel.cfg")) as f:
        methods, options = parse_mapping_cfg(f)
    keywords = {"_": None, "gettext": None, "ngettext": (1, 2), "N_": None}
    found = set()
    for _filename, _lineno, message, _comments, _context in extract_from_dir(TOP, methods, options, keywords=keywords):
        found.add(message if isinstance(message, str) else message[0])
    return found


class CatalogTests(SynchronousTestCase):
    def test_every_message_has_a_french_translation(self) -> None:
        messages = sourceMessages()
        self.assertGreater(len(messages), 100)
        with open(catalogPath("fr"), "rb") as f:
            catalog = read_po(f)
        translated = {m.id: m for m in catalog if m.id}
        missing = sorted(messages - set(translated))
        self.assertEqual(missing, [], "run pybabel extract and update (README.rst)")
        self.assertEqual(sorted(set(translated) - messages), [], "messages no longer used")
        for message in translated.values():
            self.assertTrue(message.string, message.id)
            self.assertNotIn("fuzzy", message.flags, message.id)
            self.assertEqual(
                sorted(re.findall(r"%\((\w+)\)s", message.id)), sorted(re.findall(r"%\((\w+)\)s", message.string)),
                message.id,
            )  # fmt: skip

    def test_the_package_ships_templates_and_catalogs(self) -> None:
        parser = configparser.ConfigParser()
        parser.read(os.path.join(TOP, "setup.cfg"))
        patterns = [p for p in parser["options.package_data"]["aetasip.web"].split() if p]
        web = os.path.join(TOP, "aetasip", "web")
        needed = [os.path.relpath(os.path.join(TEMPLATES, name), web) for name in os.listdir(TEMPLATES)]
        needed += [os.path.relpath(catalogPath(code), web) for code in LANGUAGES[1:]]
        for path in needed:
            self.assertTrue(any(fnmatch.fnmatch(path, p) for p in patterns), path)


class NegotiationTests(SynchronousTestCase):
    def test_cookie_then_browser_then_english(self) -> None:
        self.assertEqual(negotiate(None, "fr-CA,fr;q=0.9,en;q=0.5"), "fr")
        self.assertEqual(negotiate(None, "de-DE,de;q=0.9,fr;q=0.4,en;q=0.3"), "fr")
        self.assertEqual(negotiate(None, "de-DE"), "en")
        self.assertEqual(negotiate(None, None), "en")
        self.assertEqual(negotiate("en", "fr"), "en")
        self.assertEqual(negotiate("xx", "fr"), "fr")
        self.assertEqual(negotiate(None, "\x00;;q=é," * 500), "en")

    def test_french_messages_dates_and_numbers(self) -> None:
        fr = Language("fr", "Europe/Paris")
        self.assertEqual(
            sipPasswordProblem("1", "abc", "abc", fr.gettext),
            "Le mot de passe SIP doit compter au moins 12 caractères.",
        )
        self.assertEqual(fr.dateTime(T0), "28 mai 2026, 22:26:40 CEST")
        self.assertEqual(Language("en").dateTime(T0), "May 28, 2026, 8:26:40\u202fPM UTC")
        self.assertEqual(fr.percent(0.0099), "1,0\u00a0%")
        self.assertEqual(fr.decimal(4.4, 2), "4,40")


class LanguageTests(PortalTestCase):
    async def test_browser_language_and_switch(self) -> None:
        browser = self.browser()
        code, _, page = await browser.request("GET", "/portal/login", headers={"Accept-Language": "fr-FR,fr;q=0.9"})
        self.assertEqual(code, 200)
        self.assertIn('<html lang="fr">', page)
        self.assertIn("Mot de passe du portail", page)
        self.assertIn('href="/portal/language?to=en&amp;next=/portal/login"', page)
        # The switch: a cookie, then back where it was.
        code, headers, _ = await browser.request("GET", "/portal/language?to=en&next=/portal/login")
        self.assertEqual((code, headers.getRawHeaders("location")), (303, ["/portal/login"]))
        self.assertIn("aetasip_lang=en; Path=/portal/; HttpOnly; Secure; SameSite=Lax; Max-Age=", browser.setCookies[0])
        _, _, page = await browser.request("GET", "/portal/login", headers={"Accept-Language": "fr"})
        self.assertIn('<html lang="en">', page)
        # Never a redirection elsewhere.
        for bad in ("https://evil.example/", "//evil.example/portal/", "/portal//evil", "/other", "/portal/\r\nX: y",
                    "/portal/../api/v1/accounts"):  # fmt: skip
            code, headers, _ = await browser.request("GET", "/portal/language?" + f"to=fr&next={bad}")
            self.assertEqual(headers.getRawHeaders("location"), ["/portal/"], bad)

    async def test_french_pages_and_errors(self) -> None:
        store = self.server.service.getServiceNamed("store").store
        await store.writeCallRecords([record(1, relayNode="fr", media={"caller": {"received": {"packets": 0}}})],
                                     "main", T0)  # fmt: skip
        browser = self.browser()
        await browser.request("GET", "/portal/language?to=fr&next=/portal/login")
        code, _, page = await browser.login("45675001", "wrong")
        self.assertEqual(code, 403)
        self.assertIn("Numéro ou mot de passe du portail incorrect.", page)
        await browser.login("45675001", "portal-secret-1")
        _, _, page = await browser.request("GET", "/portal/")
        self.assertIn("Données de l'abonné", page)
        self.assertIn("Modifier le mot de passe SIP", page)
        _, _, page = await browser.request("GET", "/portal/calls")
        self.assertIn("28 mai 2026", page)
        self.assertIn("Vous avez raccroché", page)
        self.assertIn("Émis par vous\u00a0: pas d&#39;audio", page)
        csrf = await browser.csrf()
        code, _, page = await browser.request(
            "POST", "/portal/sip-password", {"csrf": csrf, "password": "abcdefghijklm", "confirm": "abcdefghijklm"}
        )
        self.assertEqual(code, 400)
        self.assertIn("Le mot de passe SIP doit contenir des lettres et des chiffres.", page)
        code, _, page = await browser.request("GET", "/portal/nowhere")
        self.assertEqual(code, 404)
        self.assertIn("Cette page n&#39;existe pas.", page)
