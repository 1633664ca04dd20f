"""
What every page of the self-care portal shares (L{aetasip.web.portal}):
its state (sessions, login throttles, settings), the cookies, the
language of the page, rendering with the security headers, the session
of a request and whether its account may use the portal; the language
switch and the error pages.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from klein import Klein
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from aetasip.store import AsyncStore, Provisioning
from aetasip.store.models import Account
from aetasip.web.i18n import LANGUAGES, Language, language, negotiate
from aetasip.web.portalsettings import EVERY_ACCOUNT, PortalSettings
from aetasip.web.reset import ResetTokens
from aetasip.web.sessions import LoginThrottle, Session, Sessions
from aetasip.web.templates import render

log = Logger()

SESSION_COOKIE = b"aetasip_session"
LOGIN_COOKIE = b"aetasip_login"
LANGUAGE_COOKIE = b"aetasip_lang"

_NEXT = re.compile(r"/portal/[A-Za-z0-9._\-/]*(\?[A-Za-z0-9._~=&%\-]*)?")

app = Klein()
"""The portal's routes: those of L{PortalFrame} and of the classes that extend it."""


class PortalFrame:
    """
    The frame of the portal's routes (relative to C{/portal/}).

    @ivar store: the service's L{AsyncStore}.
    @ivar provisioning: the L{Provisioning} layer (the SIP realm's digests).
    @ivar sessions: the L{Sessions}.
    @ivar throttle: the L{LoginThrottle} of failed logins.
    @ivar resetsByNumber: the L{LoginThrottle} of reset requests per
        number (each counts: 3 an hour), C{resetsByAddress} per source
        address (10 an hour).
    @ivar forget: told a number whose SIP password changed.
    @ivar location: the location service (the live bindings).
    @ivar settings: the L{PortalSettings}.
    @ivar outbox: the L{aetasip.records.outbox.Outbox} that mails reset
        links, or C{None}: no reset by e-mail.
    @ivar defaultURL: the portal's own URL when C{portal.url} is not set.
    """

    # Klein binds its routes to each instance through this class attribute.
    app = app

    def __init__(
        self,
        store: AsyncStore,
        realm: str,
        clock: Callable[[], float],
        forget: Callable[[str], None] = lambda number: None,
        location: Any = None,
        settings: PortalSettings | None = None,
        outbox: Any = None,
    ) -> None:
        self.store = store
        self.location = location
        self.clock = clock
        self.settings = settings if settings is not None else PortalSettings()
        self.provisioning = Provisioning(store.store, realm)
        self.sessions = Sessions(clock)
        self.throttle = LoginThrottle(clock)
        self.resetsByNumber = LoginThrottle(clock, limit=3, window=3600.0)
        self.resetsByAddress = LoginThrottle(clock, limit=10, window=3600.0)
        self.forget = forget
        self.outbox = outbox
        self.defaultURL: Callable[[], str] = lambda: "http://127.0.0.1:8080/portal/"
        self._tokens: ResetTokens | None = None
        # Reset links being mailed in the background, waited for by stop().
        self._mailing: set[defer.Deferred[None]] = set()
        self._stopping = False

    def stop(self) -> defer.Deferred[None]:
        """Fires once the reset links being queued are in the outbox (the web service waits for it when it stops)."""
        self._stopping = True
        return defer.DeferredList(list(self._mailing)).addCallback(lambda _: None)

    # -- helpers

    @staticmethod
    def _arg(request: IRequest, name: str) -> str:
        value = request.args.get(name.encode(), [b""])[0]
        return value.decode("utf-8", "replace")

    def _language(self, request: IRequest) -> Language:
        cookie = request.getCookie(LANGUAGE_COOKIE)
        header = request.getHeader(b"accept-language")
        code = negotiate(
            None if cookie is None else cookie.decode("ascii", "replace"),
            None if header is None else header.decode("latin-1"),
        )
        return language(code, self.settings.timeZone)

    def _render(self, request: IRequest, status: int, name: str, **values: Any) -> bytes:
        lang = self._language(request)
        request.setHeader(b"Content-Language", lang.code.encode())
        return self._page(request, status, render(name, lang, **values))

    @staticmethod
    def _page(request: IRequest, status: int, body: bytes) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"X-Frame-Options", b"DENY")
        request.setHeader(
            b"Content-Security-Policy", b"default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"
        )
        request.setHeader(b"Referrer-Policy", b"no-referrer")
        request.setHeader(b"Vary", b"Accept-Language, Cookie")
        return body

    @staticmethod
    def _cookie(
        request: IRequest, name: bytes, value: str, maxAge: int | None = None, sameSite: bytes = b"Strict"
    ) -> None:
        attributes = b"; Path=/portal/; HttpOnly; Secure; SameSite=" + sameSite
        if maxAge is not None:
            attributes += b"; Max-Age=%d" % maxAge
        # Twisted's addCookie knows no SameSite: the header is written whole.
        request.cookies.append(name + b"=" + value.encode() + attributes)  # type: ignore[attr-defined]

    @staticmethod
    def _redirect(request: IRequest, to: bytes) -> bytes:
        request.setResponseCode(303)
        request.setHeader(b"Location", to)
        return b""

    def _session(self, request: IRequest) -> Session | None:
        token = request.getCookie(SESSION_COOKIE)
        return self.sessions.find(None if token is None else token.decode("ascii", "replace"))

    def _source(self, request: IRequest) -> str:
        return str(getattr(request.getClientAddress(), "host", "unknown"))

    async def _mayUse(self, account: Account | None) -> bool:
        """Whether C{account} may use the portal (C{portal.self_care})."""
        if account is None:
            return False
        if self.settings.selfCare == EVERY_ACCOUNT or account.group is None:
            return True
        group = await self.store.getGroup(account.group)
        return group is None or bool(group.selfCare)

    async def _current(self, request: IRequest) -> tuple[Session, Account] | None:
        """
        The session of the request and its account, or C{None}: no
        session, or the account is gone or may no longer use the portal
        (its session ends).
        """
        session = self._session(request)
        if session is None:
            return None
        account = await self.store.getAccount(session.number)
        if not await self._mayUse(account):
            self.sessions.close(session)
            return None
        assert account is not None
        return session, account

    @property
    def resetAvailable(self) -> bool:
        """Whether a forgotten portal password can be reset by e-mail (mail is configured)."""
        return self.outbox is not None and self.outbox.settings.missing() is None

    # -- language

    @app.route("/language", methods=["GET"])
    def language(self, request: IRequest) -> bytes:
        chosen = self._arg(request, "to")
        target = self._arg(request, "next")
        if _NEXT.fullmatch(target) is None or "//" in target or ".." in target:
            target = "/portal/"
        if chosen in LANGUAGES:
            # A year; Lax: it is no secret, and a link from a mail keeps the language.
            self._cookie(request, LANGUAGE_COOKIE, chosen, maxAge=365 * 86400, sameSite=b"Lax")
        return self._redirect(request, target.encode())

    @app.handle_errors(Exception)
    def error(self, request: IRequest, failure: Any) -> bytes:
        from werkzeug.exceptions import MethodNotAllowed, NotFound

        _ = self._language(request).gettext
        if failure.check(NotFound):
            status, text = 404, _("No such page.")
        elif failure.check(MethodNotAllowed):
            status, text = 405, _("Method not allowed.")
        else:
            log.failure("Portal: {method} {path} failed", failure, method=request.method, path=request.uri)
            status, text = 500, _("Internal error: please try again later.")
        return self._render(request, status, "error.html", message=text, here="/portal/")
