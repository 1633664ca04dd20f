"""
The self-care portal (C{/portal/}): a subscriber logs in with the number
and the portal password (not the SIP password), and on the "Subscriber
data" page changes the SIP password (the running service uses it at
once), the e-mail address and the portal password; the "Location records"
page lists the number's current bindings, live from the running
service's location service.

Security rules: sessions in HttpOnly, Secure, SameSite=Strict cookies; a
CSRF token on every form (the login form's in a cookie of its own, the
others the session's); failed logins throttled per account and per
source address (L{LoginThrottle}); a subscriber reaches only the account
logged in (no number is ever taken from the URL); members of a group
whose self-care option is off cannot log in.
"""

from __future__ import annotations

import datetime
import re
import secrets
from collections.abc import Callable
from typing import Any

from klein import Klein
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from aetasip.store import AsyncStore, InvalidValue, Provisioning, StoreError
from aetasip.web.sessions import LoginThrottle, Session, Sessions, sameToken
from aetasip.web.templates import render

log = Logger()

SESSION_COOKIE = b"aetasip_session"
LOGIN_COOKIE = b"aetasip_login"

MIN_SIP_PASSWORD = 12
"""The shortest SIP password a subscriber may choose."""

_NUMBER = re.compile(r"[0-9]{1,32}")


def sipPasswordProblem(number: str, password: str, confirm: str) -> str | None:
    """
    What is wrong with a SIP password a subscriber chose, or C{None}: the
    two entries differ, it is too short, lacks letters or digits, or
    contains the number.
    """
    if password != confirm:
        return "The two passwords differ."
    if len(password) < MIN_SIP_PASSWORD:
        return f"The SIP password must have at least {MIN_SIP_PASSWORD} characters."
    if not any(c.isalpha() for c in password) or not any(c.isdigit() for c in password):
        return "The SIP password must contain letters and digits."
    if number in password:
        return "The SIP password must not contain your number."
    if any(not c.isprintable() for c in password):
        return "The SIP password must not contain control characters."
    return None


def _utc(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class Portal:
    """
    The portal's routes, relative to C{/portal/}.

    @ivar store: the service's L{AsyncStore}.
    @ivar provisioning: the L{Provisioning} layer (the SIP realm's digests).
    @ivar sessions: the L{Sessions}.
    @ivar throttle: the L{LoginThrottle}.
    @ivar forget: told a number whose SIP password changed.
    """

    app = Klein()

    def __init__(
        self,
        store: AsyncStore,
        realm: str,
        clock: Callable[[], float],
        forget: Callable[[str], None] = lambda number: None,
        location: Any = None,
    ) -> None:
        self.store = store
        self.location = location
        self.clock = clock
        self.provisioning = Provisioning(store.store, realm)
        self.sessions = Sessions(clock)
        self.throttle = LoginThrottle(clock)
        self.forget = forget

    # -- helpers

    @staticmethod
    def _arg(request: IRequest, name: str) -> str:
        value = request.args.get(name.encode(), [b""])[0]
        return value.decode("utf-8", "replace")

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
        return body

    @staticmethod
    def _cookie(request: IRequest, name: bytes, value: str, maxAge: int | None = None) -> None:
        attributes = b"; Path=/portal/; HttpOnly; Secure; SameSite=Strict"
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

    # -- login and logout

    def _loginPage(self, request: IRequest, status: int = 200, error: str | None = None, number: str = "") -> bytes:
        csrf = secrets.token_urlsafe(32)
        self._cookie(request, LOGIN_COOKIE, csrf)
        return self._page(request, status, render("login.html", csrf=csrf, error=error, number=number))

    @app.route("/", methods=["GET"])
    async def subscriberData(self, request: IRequest) -> bytes:
        session = self._session(request)
        if session is None:
            return self._redirect(request, b"/portal/login")
        return await self._subscriberPage(request, session)

    async def _subscriberPage(
        self, request: IRequest, session: Session, status: int = 200, error: str | None = None
    ) -> bytes:
        account = await self.store.getAccount(session.number)
        if account is None:
            self.sessions.close(session)
            return self._redirect(request, b"/portal/login")
        done = {
            b"sip-password": "The SIP password is changed.",
            b"email": "The e-mail address is changed.",
            b"portal-password": "The portal password is changed.",
        }.get(request.args.get(b"done", [b""])[0])
        page = render(
            "subscriber.html", session=session, account=account, minLength=MIN_SIP_PASSWORD, error=error, done=done
        )
        return self._page(request, status, page)

    @app.route("/locations", methods=["GET"])
    def locations(self, request: IRequest) -> bytes:
        session = self._session(request)
        if session is None:
            return self._redirect(request, b"/portal/login")
        now = self.clock()
        bindings = [
            {
                "contact": b.contact,
                "source": f"[{b.source[0]}]:{b.source[1]}" if ":" in b.source[0] else f"{b.source[0]}:{b.source[1]}",
                "transport": b.transport.upper(),
                "userAgent": b.userAgent,
                "since": _utc(b.registeredAt),
                "expiresIn": max(0, round(b.expiresAt - now)),
            }
            for b in (self.location.lookup(session.number) if self.location is not None else [])
        ]
        return self._page(
            request, 200, render("locations.html", session=session, number=session.number, bindings=bindings)
        )

    @app.route("/login", methods=["GET"])
    def loginForm(self, request: IRequest) -> bytes:
        if self._session(request) is not None:
            return self._redirect(request, b"/portal/")
        return self._loginPage(request)

    @app.route("/login", methods=["POST"])
    async def login(self, request: IRequest) -> bytes:
        number, password = self._arg(request, "number").strip(), self._arg(request, "password")
        cookie = request.getCookie(LOGIN_COOKIE)
        if cookie is None or not sameToken(self._arg(request, "csrf"), cookie.decode("ascii", "replace")):
            return self._loginPage(request, 403, "The form expired: please log in again.", number)
        source = self._source(request)
        keys = (f"number:{number}", f"address:{source}")
        wait = self.throttle.retryAfter(*keys)
        if wait > 0:
            request.setHeader(b"Retry-After", str(int(wait) + 1).encode())
            return self._loginPage(request, 429, "Too many failed attempts: try again later.", number)
        allowed = _NUMBER.fullmatch(number) is not None and await self._mayLogIn(number, password)
        if not allowed:
            self.throttle.failed(*keys)
            log.info("Portal: failed login for {number} from {source}", number=number[:32], source=source)
            return self._loginPage(request, 403, "Wrong number or portal password.", number)
        self.throttle.succeeded(keys[0])
        session = self.sessions.open(number)
        self._cookie(request, SESSION_COOKIE, session.token)
        self._cookie(request, LOGIN_COOKIE, "", maxAge=0)
        log.info("Portal: {number} logged in from {source}", number=number, source=source)
        return self._redirect(request, b"/portal/")

    async def _mayLogIn(self, number: str, password: str) -> bool:
        # The password is checked first, as long whatever the account: no number is told apart.
        if not password or not await self.store.checkPortalPassword(number, password):
            return False
        account = await self.store.getAccount(number)
        if account is None:
            return False
        if account.group is not None:
            group = await self.store.getGroup(account.group)
            if group is not None and not group.selfCare:
                return False
        return True

    @app.route("/logout", methods=["POST"])
    def logout(self, request: IRequest) -> bytes:
        session = self._session(request)
        if session is not None and sameToken(self._arg(request, "csrf"), session.csrf):
            self.sessions.close(session)
            self._cookie(request, SESSION_COOKIE, "", maxAge=0)
        return self._redirect(request, b"/portal/login")

    # -- the subscriber's changes

    async def _form(self, request: IRequest) -> Session | bytes:
        """The session of a form's POST, or the page to answer when there is none or its CSRF token is wrong."""
        session = self._session(request)
        if session is None:
            return self._redirect(request, b"/portal/login")
        if not sameToken(self._arg(request, "csrf"), session.csrf):
            return await self._subscriberPage(request, session, 403, "The form expired: please try again.")
        return session

    @app.route("/sip-password", methods=["POST"])
    async def changeSIPPassword(self, request: IRequest) -> bytes:
        session = await self._form(request)
        if isinstance(session, bytes):
            return session
        password, confirm = self._arg(request, "password"), self._arg(request, "confirm")
        problem = sipPasswordProblem(session.number, password, confirm)
        if problem is not None:
            return await self._subscriberPage(request, session, 400, problem)
        try:
            await self.store.run(self.provisioning.setPassword, session.number, password)
        except StoreError as e:
            return await self._subscriberPage(request, session, 400, str(e))
        self.forget(session.number)
        log.info("Portal: {number} changed the SIP password", number=session.number)
        return self._redirect(request, b"/portal/?done=sip-password")

    @app.route("/email", methods=["POST"])
    async def changeEmail(self, request: IRequest) -> bytes:
        session = await self._form(request)
        if isinstance(session, bytes):
            return session
        email = self._arg(request, "email").strip()
        try:
            await self.store.run(self.provisioning.updateAccount, session.number, email=email)
        except InvalidValue:
            return await self._subscriberPage(request, session, 400, "This is not a valid e-mail address.")
        return self._redirect(request, b"/portal/?done=email")

    @app.route("/portal-password", methods=["POST"])
    async def changePortalPassword(self, request: IRequest) -> bytes:
        session = await self._form(request)
        if isinstance(session, bytes):
            return session
        current = self._arg(request, "current")
        password, confirm = self._arg(request, "password"), self._arg(request, "confirm")
        if not await self.store.checkPortalPassword(session.number, current):
            return await self._subscriberPage(request, session, 403, "The current portal password is wrong.")
        if password != confirm:
            return await self._subscriberPage(request, session, 400, "The two passwords differ.")
        if len(password) < MIN_SIP_PASSWORD:
            return await self._subscriberPage(
                request, session, 400, f"The portal password must have at least {MIN_SIP_PASSWORD} characters."
            )
        try:
            await self.store.run(self.provisioning.setPortalPassword, session.number, password)
        except InvalidValue as e:
            return await self._subscriberPage(request, session, 400, str(e))
        # Other sessions of the number (another browser, someone else) end.
        self.sessions.closeAll(session.number, keep=session)
        return self._redirect(request, b"/portal/?done=portal-password")

    @app.handle_errors(Exception)
    def error(self, request: IRequest, failure: Any) -> bytes:
        from werkzeug.exceptions import MethodNotAllowed, NotFound

        if failure.check(NotFound):
            return self._page(request, 404, b"<!doctype html><title>Not found</title><p>No such page.</p>")
        if failure.check(MethodNotAllowed):
            return self._page(request, 405, b"<!doctype html><title>Not allowed</title><p>Method not allowed.</p>")
        log.failure("Portal: {method} {path} failed", failure, method=request.method, path=request.uri)
        return self._page(request, 500, b"<!doctype html><title>Error</title><p>Internal error.</p>")
