"""
The self-care portal (C{/portal/}): a subscriber logs in with the number
and the portal password (not the SIP password), and on the "Subscriber
data" page changes the SIP password (the running service uses it at
once), the e-mail address and the portal password; the "Location records"
page lists the number's current bindings, live from the running
service's location service; the "Call records" page the calls it made
and missed, newest first, paged, with a CSV download. A forgotten portal
password is reset by a link mailed to the account's e-mail address, when
mail is configured. Every page is in English or French
(L{aetasip.web.i18n}).

Security rules: sessions in HttpOnly, Secure, SameSite=Strict cookies; a
CSRF token on every form (the login and reset forms' in a cookie of
their own, the others the session's); failed logins throttled per
account and per source address (L{LoginThrottle}), reset requests too;
a subscriber reaches only the account logged in (no number is ever
taken from the URL); who may log in follows C{portal.self_care}, checked
at every request.
"""

from __future__ import annotations

import datetime
import re
import secrets
from collections.abc import Callable
from typing import Any

from klein import Klein
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from aetasip.records.csvfiles import portalCSV
from aetasip.records.mailmessages import bilingual, compose
from aetasip.store import AsyncStore, InvalidValue, Provisioning, StoreError
from aetasip.store.callrecords import RecordQuery
from aetasip.store.models import Account
from aetasip.web.i18n import LANGUAGES, N_, Language, language, negotiate, translations
from aetasip.web.portalcalls import callRow
from aetasip.web.portalsettings import EVERY_ACCOUNT, PortalSettings
from aetasip.web.reset import ResetTokens
from aetasip.web.sessions import LoginThrottle, Session, Sessions, sameToken
from aetasip.web.templates import render

log = Logger()

SESSION_COOKIE = b"aetasip_session"
LOGIN_COOKIE = b"aetasip_login"
LANGUAGE_COOKIE = b"aetasip_lang"

MIN_SIP_PASSWORD = 12
"""The shortest SIP password a subscriber may choose (and portal password)."""

CALLS_PER_PAGE = 25
"""Call records on one page."""

MAX_CSV_RECORDS = 100_000
"""Call records in one CSV download at most (the newest)."""

_NUMBER = re.compile(r"[0-9]{1,32}")
_NEXT = re.compile(r"/portal/[A-Za-z0-9._\-/]*(\?[A-Za-z0-9._~=&%\-]*)?")

_DONE = {
    b"sip-password": N_("The SIP password is changed."),
    b"email": N_("The e-mail address is changed."),
    b"portal-password": N_("The portal password is changed."),
}

RESET_SUBJECT = N_("Your portal password")
RESET_BODY = N_(
    "Hello,\n\n"
    "Someone, probably you, asked to choose a new self-care portal password for the number %(number)s. "
    "Open this link to choose it (it works once, for %(minutes)s minutes):\n\n"
    "%(link)s\n\n"
    "If you did not ask for it, ignore this message: your password stays as it is.\n"
    "This is not the SIP password of your codec, which does not change.\n"
)


def sipPasswordProblem(
    number: str, password: str, confirm: str, gettext: Callable[..., str] = lambda m, **v: m % v if v else m
) -> str | None:
    """
    What is wrong with a SIP password a subscriber chose, or C{None}: the
    two entries differ, it is too short, lacks letters or digits, or
    contains the number.

    @param gettext: translates the message (L{Language.gettext}).
    """
    _ = gettext
    if password != confirm:
        return _("The two passwords differ.")
    if len(password) < MIN_SIP_PASSWORD:
        return _("The SIP password must have at least %(length)s characters.", length=MIN_SIP_PASSWORD)
    if not any(c.isalpha() for c in password) or not any(c.isdigit() for c in password):
        return _("The SIP password must contain letters and digits.")
    if number in password:
        return _("The SIP password must not contain your number.")
    if any(not c.isprintable() for c in password):
        return _("The SIP password must not contain control characters.")
    return None


def portalPasswordProblem(password: str, confirm: str, gettext: Callable[..., str]) -> str | None:
    """What is wrong with a new portal password, or C{None}."""
    _ = gettext
    if password != confirm:
        return _("The two passwords differ.")
    if len(password) < MIN_SIP_PASSWORD:
        return _("The portal password must have at least %(length)s characters.", length=MIN_SIP_PASSWORD)
    return None


class Portal:
    """
    The portal's routes, relative to C{/portal/}.

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

    app = Klein()

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

    # -- login and logout

    def _loginPage(self, request: IRequest, status: int = 200, error: str | None = None, number: str = "") -> bytes:
        csrf = secrets.token_urlsafe(32)
        self._cookie(request, LOGIN_COOKIE, csrf)
        done = None
        if request.args.get(b"done", [b""])[0] == b"reset":
            done = self._language(request).gettext("Your portal password is changed: log in with it.")
        return self._render(
            request, status, "login.html", csrf=csrf, error=error, done=done, number=number,
            resetAvailable=self.resetAvailable, here="/portal/login",
        )  # fmt: skip

    @app.route("/", methods=["GET"])
    async def subscriberData(self, request: IRequest) -> bytes:
        current = await self._current(request)
        if current is None:
            return self._redirect(request, b"/portal/login")
        return self._subscriberPage(request, *current)

    def _subscriberPage(
        self, request: IRequest, session: Session, account: Account, status: int = 200, error: str | None = None
    ) -> bytes:
        lang = self._language(request)
        done = _DONE.get(request.args.get(b"done", [b""])[0])
        return self._render(
            request, status, "subscriber.html", session=session, account=account, minLength=MIN_SIP_PASSWORD,
            error=error, done=None if done is None else lang.gettext(done), page="subscriber",
        )  # fmt: skip

    @app.route("/locations", methods=["GET"])
    async def locations(self, request: IRequest) -> bytes:
        current = await self._current(request)
        if current is None:
            return self._redirect(request, b"/portal/login")
        session = current[0]
        lang = self._language(request)
        now = self.clock()
        bindings = [
            {
                "contact": b.contact,
                "source": f"[{b.source[0]}]:{b.source[1]}" if ":" in b.source[0] else f"{b.source[0]}:{b.source[1]}",
                "transport": b.transport.upper(),
                "userAgent": b.userAgent,
                "since": lang.dateTime(b.registeredAt),
                "expiresIn": max(0, round(b.expiresAt - now)),
            }
            for b in (self.location.lookup(session.number) if self.location is not None else [])
        ]
        return self._render(
            request, 200, "locations.html", session=session, number=session.number, bindings=bindings,
            page="locations", here="/portal/locations",
        )  # fmt: skip

    @app.route("/calls", methods=["GET"])
    async def calls(self, request: IRequest) -> bytes:
        current = await self._current(request)
        if current is None:
            return self._redirect(request, b"/portal/login")
        session = current[0]
        lang = self._language(request)
        pageText = self._arg(request, "page")
        page = int(pageText) if pageText.isdigit() and 0 < len(pageText) < 7 and int(pageText) > 0 else 1
        # One more than a page: whether there is an older one.
        found = await self.store.callRecords(
            RecordQuery(
                madeOrMissed=session.number,
                newestFirst=True,
                offset=(page - 1) * CALLS_PER_PAGE,
                limit=CALLS_PER_PAGE + 1,
            )
        )
        rows = [callRow(record, session.number, lang) for record in found[:CALLS_PER_PAGE]]
        return self._render(
            request, 200, "calls.html", session=session, number=session.number, calls=rows, page="calls",
            pageNumber=page, previous=page - 1 if page > 1 else None,
            next=page + 1 if len(found) > CALLS_PER_PAGE else None,
            zone=lang.zoneName(datetime.datetime.fromtimestamp(self.clock(), datetime.UTC)),
            here=f"/portal/calls?page={page}",
        )  # fmt: skip

    @app.route("/calls.csv", methods=["GET"])
    async def callsCSV(self, request: IRequest) -> bytes:
        current = await self._current(request)
        if current is None:
            return self._redirect(request, b"/portal/login")
        number = current[0].number
        found = await self.store.callRecords(RecordQuery(madeOrMissed=number, newestFirst=True, limit=MAX_CSV_RECORDS))
        day = datetime.datetime.fromtimestamp(self.clock(), datetime.UTC).strftime("%Y-%m-%d")
        request.setHeader(b"Content-Type", b"text/csv; charset=utf-8")
        request.setHeader(b"Content-Disposition", f'attachment; filename="calls-{number}-{day}.csv"'.encode())
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        return portalCSV(found, number).encode()

    @app.route("/login", methods=["GET"])
    def loginForm(self, request: IRequest) -> bytes:
        if self._session(request) is not None:
            return self._redirect(request, b"/portal/")
        return self._loginPage(request)

    def _formExpired(self, request: IRequest) -> bool:
        """Whether the login cookie's CSRF token is missing or not the form's."""
        cookie = request.getCookie(LOGIN_COOKIE)
        return cookie is None or not sameToken(self._arg(request, "csrf"), cookie.decode("ascii", "replace"))

    @app.route("/login", methods=["POST"])
    async def login(self, request: IRequest) -> bytes:
        _ = self._language(request).gettext
        number, password = self._arg(request, "number").strip(), self._arg(request, "password")
        if self._formExpired(request):
            return self._loginPage(request, 403, _("The form expired: please log in again."), number)
        source = self._source(request)
        keys = (f"number:{number}", f"address:{source}")
        wait = self.throttle.retryAfter(*keys)
        if wait > 0:
            request.setHeader(b"Retry-After", str(int(wait) + 1).encode())
            return self._loginPage(request, 429, _("Too many failed attempts: try again later."), number)
        allowed = _NUMBER.fullmatch(number) is not None and await self._mayLogIn(number, password)
        if not allowed:
            self.throttle.failed(*keys)
            log.info("Portal: failed login for {number} from {source}", number=number[:32], source=source)
            return self._loginPage(request, 403, _("Wrong number or portal password."), number)
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
        return await self._mayUse(await self.store.getAccount(number))

    @app.route("/logout", methods=["POST"])
    def logout(self, request: IRequest) -> bytes:
        session = self._session(request)
        if session is not None and sameToken(self._arg(request, "csrf"), session.csrf):
            self.sessions.close(session)
            self._cookie(request, SESSION_COOKIE, "", maxAge=0)
        return self._redirect(request, b"/portal/login")

    # -- the subscriber's changes

    async def _form(self, request: IRequest) -> tuple[Session, Account] | bytes:
        """The session and account of a form's POST, or the page to answer when there is none or its CSRF token is wrong."""
        current = await self._current(request)
        if current is None:
            return self._redirect(request, b"/portal/login")
        if not sameToken(self._arg(request, "csrf"), current[0].csrf):
            _ = self._language(request).gettext
            return self._subscriberPage(request, *current, 403, _("The form expired: please try again."))
        return current

    @app.route("/sip-password", methods=["POST"])
    async def changeSIPPassword(self, request: IRequest) -> bytes:
        current = await self._form(request)
        if isinstance(current, bytes):
            return current
        session, account = current
        password, confirm = self._arg(request, "password"), self._arg(request, "confirm")
        problem = sipPasswordProblem(session.number, password, confirm, self._language(request).gettext)
        if problem is not None:
            return self._subscriberPage(request, session, account, 400, problem)
        try:
            await self.store.run(self.provisioning.setPassword, session.number, password)
        except StoreError as e:
            return self._subscriberPage(request, session, account, 400, str(e))
        self.forget(session.number)
        log.info("Portal: {number} changed the SIP password", number=session.number)
        return self._redirect(request, b"/portal/?done=sip-password")

    @app.route("/email", methods=["POST"])
    async def changeEmail(self, request: IRequest) -> bytes:
        current = await self._form(request)
        if isinstance(current, bytes):
            return current
        session, account = current
        email = self._arg(request, "email").strip()
        try:
            await self.store.run(self.provisioning.updateAccount, session.number, email=email)
        except InvalidValue:
            _ = self._language(request).gettext
            return self._subscriberPage(request, session, account, 400, _("This is not a valid e-mail address."))
        return self._redirect(request, b"/portal/?done=email")

    @app.route("/portal-password", methods=["POST"])
    async def changePortalPassword(self, request: IRequest) -> bytes:
        current = await self._form(request)
        if isinstance(current, bytes):
            return current
        session, account = current
        _ = self._language(request).gettext
        password, confirm = self._arg(request, "password"), self._arg(request, "confirm")
        if not await self.store.checkPortalPassword(session.number, self._arg(request, "current")):
            return self._subscriberPage(request, session, account, 403, _("The current portal password is wrong."))
        problem = portalPasswordProblem(password, confirm, _)
        if problem is not None:
            return self._subscriberPage(request, session, account, 400, problem)
        try:
            await self.store.run(self.provisioning.setPortalPassword, session.number, password)
        except InvalidValue as e:
            return self._subscriberPage(request, session, account, 400, str(e))
        # Other sessions of the number (another browser, someone else) end.
        self.sessions.closeAll(session.number, keep=session)
        return self._redirect(request, b"/portal/?done=portal-password")

    # -- a forgotten portal password

    async def _resetTokens(self) -> ResetTokens:
        if self._tokens is None:
            secret = await self.store.secret("portal-reset")
            self._tokens = ResetTokens(secret, self.settings.resetLifetime, self.clock)
        return self._tokens

    def _forgotPage(self, request: IRequest, status: int = 200, error: str | None = None, sent: bool = False) -> bytes:
        csrf = secrets.token_urlsafe(32)
        self._cookie(request, LOGIN_COOKIE, csrf)
        return self._render(
            request, status, "forgot.html", csrf=csrf, error=error, sent=sent, available=self.resetAvailable,
            here="/portal/forgot",
        )  # fmt: skip

    @app.route("/forgot", methods=["GET"])
    def forgotForm(self, request: IRequest) -> bytes:
        return self._forgotPage(request, 200 if self.resetAvailable else 404)

    @app.route("/forgot", methods=["POST"])
    def forgot(self, request: IRequest) -> bytes:
        _ = self._language(request).gettext
        if not self.resetAvailable:
            return self._forgotPage(request, 404)
        if self._formExpired(request):
            return self._forgotPage(request, 403, _("The form expired: please try again."))
        number = self._arg(request, "number").strip()
        source = self._source(request)
        wait = max(self.resetsByNumber.retryAfter(number[:32]), self.resetsByAddress.retryAfter(source))
        if wait > 0:
            request.setHeader(b"Retry-After", str(int(wait) + 1).encode())
            return self._forgotPage(request, 429, _("Too many requests: try again later."))
        self.resetsByNumber.failed(number[:32])
        self.resetsByAddress.failed(source)
        log.info("Portal: password reset asked for {number} from {source}", number=number[:32], source=source)
        if _NUMBER.fullmatch(number) is not None:
            # In the background: the answer is the same, and as quick, whether the number exists or not.
            mailing = defer.Deferred.fromCoroutine(self._mailResetLink(number)).addErrback(
                lambda failure: log.failure("Portal: cannot mail a reset link to {number}", failure, number=number)
            )
            if not mailing.called:
                self._mailing.add(mailing)
                mailing.addBoth(lambda _: self._mailing.discard(mailing))
        return self._forgotPage(request, 200, sent=True)

    async def _mailResetLink(self, number: str) -> None:
        account = await self.store.getAccount(number)
        if account is None or not account.email or not await self._mayUse(account):
            return
        tokens = await self._resetTokens()
        token = tokens.make(number, account.portalPasswordHash)
        base = self.settings.url or self.defaultURL()
        link = f"{base}reset?token={token}"
        values = {"number": number, "minutes": int(self.settings.resetLifetime // 60), "link": link}
        english, french = translations("en"), translations("fr")
        subject = english.gettext(RESET_SUBJECT) + " / " + french.gettext(RESET_SUBJECT)
        body = bilingual(english.gettext(RESET_BODY) % values, french.gettext(RESET_BODY) % values)
        settings = self.outbox.settings
        message = compose(settings.fromAddress, account.email, subject, body, self.clock())
        await self.store.queueMail(account.email, subject, message, f"portal reset {number}", self.clock())
        if not self._stopping:
            # Sent now; when the service is stopping, it waits in the outbox for the next start.
            self.outbox.sendDue()

    async def _resetAccount(self, token: str) -> Account | None:
        """The account a valid, unused reset token is for, or C{None}."""
        found = (await self._resetTokens()).number(token)
        if found is None:
            return None
        number, remembered = found
        account = await self.store.getAccount(number)
        if account is None or not ResetTokens.stillValid(remembered, account.portalPasswordHash):
            return None
        if not await self._mayUse(account):
            return None
        return account

    def _resetPage(self, request: IRequest, status: int, token: str, number: str, error: str | None = None) -> bytes:
        csrf = secrets.token_urlsafe(32)
        self._cookie(request, LOGIN_COOKIE, csrf)
        return self._render(
            request, status, "reset.html", csrf=csrf, token=token, number=number, error=error,
            minLength=MIN_SIP_PASSWORD,
            here="/portal/reset?token=" + token,
        )  # fmt: skip

    def _badLink(self, request: IRequest) -> bytes:
        _ = self._language(request).gettext
        return self._forgotPage(
            request, 400, _("This link is not valid: it expired, was used already, or is damaged. Ask for a new one.")
        )

    @app.route("/reset", methods=["GET"])
    async def resetForm(self, request: IRequest) -> bytes:
        token = self._arg(request, "token")
        account = await self._resetAccount(token) if self.resetAvailable else None
        if account is None:
            return self._badLink(request)
        return self._resetPage(request, 200, token, account.number)

    @app.route("/reset", methods=["POST"])
    async def reset(self, request: IRequest) -> bytes:
        _ = self._language(request).gettext
        token = self._arg(request, "token")
        account = await self._resetAccount(token) if self.resetAvailable else None
        if account is None:
            return self._badLink(request)
        if self._formExpired(request):
            return self._resetPage(request, 403, token, account.number, _("The form expired: please try again."))
        problem = portalPasswordProblem(self._arg(request, "password"), self._arg(request, "confirm"), _)
        if problem is not None:
            return self._resetPage(request, 400, token, account.number, problem)
        await self.store.run(self.provisioning.setPortalPassword, account.number, self._arg(request, "password"))
        # Whoever was logged in with the old password is logged out.
        self.sessions.closeAll(account.number)
        self.throttle.succeeded(f"number:{account.number}")
        self._cookie(request, LOGIN_COOKIE, "", maxAge=0)
        log.info("Portal: {number} set a new portal password by a reset link", number=account.number)
        return self._redirect(request, b"/portal/login?done=reset")

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
