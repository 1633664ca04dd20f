"""
The self-care portal's pages: the Jinja2 templates of
C{aetasip/web/templates/}, with autoescape on (a display name or an
e-mail address is never taken for HTML) and gettext (C{{{ _("...") }}},
translated by L{aetasip.web.i18n}): one environment per language.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

import jinja2

from aetasip.web.i18n import LANGUAGES, NAMES, Language, translations

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")


@cache
def environment(language: str) -> jinja2.Environment:
    """The templates in C{language}."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        extensions=["jinja2.ext.i18n"],
    )
    env.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]
    return env


def render(name: str, lang: Language, **values: Any) -> bytes:
    """The page C{name} in C{lang}, filled with C{values} (escaped)."""
    values.setdefault("session", None)
    values.setdefault("error", None)
    values.setdefault("done", None)
    values.setdefault("page", None)
    values.setdefault("here", "/portal/")
    values["languages"] = [(code, NAMES[code]) for code in LANGUAGES]
    return environment(lang.code).get_template(name).render(lang=lang, **values).encode()
