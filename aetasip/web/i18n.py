"""
The portal's languages: English (the messages as written) and French
(the gettext catalog C{locale/fr/LC_MESSAGES/aetasip.po}, compiled when
first used). The language of a request is the one its C{aetasip_lang}
cookie names (set by the switch on every page), else the best match of
its C{Accept-Language}, else English. Dates and numbers are formatted by
Babel in the language's conventions.

The catalog is kept up to date with Babel's C{pybabel} and C{babel.cfg}
(see README.rst); C{tests.test_web_i18n} checks that every message of the
code and templates has a French translation.
"""

from __future__ import annotations

import datetime
import gettext
import io
import os
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal, format_percent
from babel.support import Translations
from werkzeug.datastructures import LanguageAccept
from werkzeug.http import parse_accept_header

LANGUAGES = ("en", "fr")
"""The languages of the portal; the first is the default."""

NAMES = {"en": "English", "fr": "Français"}
"""Each language in itself, for the switch."""

LOCALE_DIRECTORY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "locale")
DOMAIN = "aetasip"


def N_(message: str) -> str:
    """Mark C{message} for the catalog; it is translated where it is shown."""
    return message


def catalogPath(language: str) -> str:
    return os.path.join(LOCALE_DIRECTORY, language, "LC_MESSAGES", f"{DOMAIN}.po")


@cache
def translations(language: str) -> gettext.NullTranslations:
    """The compiled catalog of C{language} (English: the messages themselves)."""
    if language == LANGUAGES[0]:
        return gettext.NullTranslations()
    with open(catalogPath(language), "rb") as f:
        catalog = read_po(f, locale=language, domain=DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


def negotiate(cookie: str | None, acceptLanguage: str | None) -> str:
    """The language of a request: its cookie's, else its C{Accept-Language}'s best match, else English."""
    if cookie in LANGUAGES:
        assert cookie is not None
        return cookie
    if acceptLanguage:
        accepted = parse_accept_header(acceptLanguage[:1000], LanguageAccept)
        best = accepted.best_match(LANGUAGES)
        if best is not None:
            return best.split("-")[0]
    return LANGUAGES[0]


class Language:
    """
    One request's language: its messages and its formats.

    @ivar code: C{en} or C{fr}.
    @ivar zone: the time zone times are shown in.
    """

    def __init__(self, code: str, zone: str = "UTC") -> None:
        self.code = code
        self.locale = Locale.parse(code)
        self.zone = ZoneInfo(zone)
        self._translations = translations(code)

    def gettext(self, message: str, **values: Any) -> str:
        """C{message} translated, its C{%(name)s} filled with C{values}."""
        translated = self._translations.gettext(message)
        return translated % values if values else translated

    def ngettext(self, singular: str, plural: str, n: int, **values: Any) -> str:
        translated = self._translations.ngettext(singular, plural, n)
        return translated % {"num": n, **values}

    def dateTime(self, seconds: float | None) -> str:
        """A POSIX time as a date and time of the language, in the portal's time zone (named)."""
        if seconds is None:
            return ""
        moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
        return format_datetime(moment, "medium", tzinfo=self.zone, locale=self.locale) + " " + self.zoneName(moment)

    def zoneName(self, moment: datetime.datetime) -> str:
        return moment.astimezone(self.zone).tzname() or str(self.zone)

    def decimal(self, value: float, digits: int = 1) -> str:
        pattern = f"#,##0.{'0' * digits}" if digits else "#,##0"
        return format_decimal(value, format=pattern, locale=self.locale)

    def percent(self, ratio: float) -> str:
        pattern = self.locale.percent_formats[None].pattern.replace("#,##0", "#,##0.0", 1)
        return format_percent(ratio, format=pattern, locale=self.locale)

    @staticmethod
    def duration(seconds: float) -> str:
        """A duration as H:MM:SS (the same in both languages)."""
        whole = int(seconds + 0.5)
        return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


@cache
def language(code: str, zone: str = "UTC") -> Language:
    """The L{Language} C{code} in C{zone}, made once."""
    return Language(code, zone)
