"""
Logging in to the self-care portal and out, and a forgotten portal
password reset by a link mailed to the account's e-mail address (when
mail is configured). Failed logins are throttled per account and per
source address, reset requests per number and per address; the login and
reset forms carry a CSRF token in a cookie of their own.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable

from twisted.internet import defer
from twisted.web.iweb import IRequest

from aetasip.records.mailmessages import bilingual, compose
from aetasip.store.models import Account
from aetasip.web.i18n import N_, translations
from aetasip.web.portalframe import LOGIN_COOKIE, SESSION_COOKIE, PortalFrame, app, log
from aetasip.web.reset import ResetTokens
from aetasip.web.sessions import sameToken

MIN_SIP_PASSWORD = 12
"""The shortest SIP password a subscriber may choose (and portal password)."""

_NUMBER = re.compile(r"[0-9]{1,32}")

RESET_SUBJECT = N_("Your portal password")
RESET_BODY = N_(
    "Hello,\n\n"
    "Someone, probably you, asked to choose a new self-care portal password for the number %(number)s. "
    "Open this link to choose it (it works once, for %(minutes)s minutes):\n\n"
    "%(link)s\n\n"
    "If you did not ask for it, ignore this message: your password stays as it is.\n"
    "This is not the SIP password of your codec, which does not change.\n"
)


def portalPasswordProblem(password: str, confirm: str, gettext: Callable[..., str]) -> str | None:
    """What is wrong with a new portal password, or C{None}."""
    _ = gettext
    if password != confirm:
        return _("The two passwords differ.")
    if len(password) < MIN_SIP_PASSWORD:
        return _("The portal password must have at least %(length)s characters.", length=MIN_SIP_PASSWORD)
    return None


class LoginRoutes(PortalFrame):
    """The portal's login, logout and password reset routes."""

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
            # The link's base is taken now: the service may stop listening before the mail is queued.
            base = self.settings.url or self.defaultURL()
            mailing = defer.Deferred.fromCoroutine(self._mailResetLink(number, base)).addErrback(
                lambda failure: log.failure("Portal: cannot mail a reset link to {number}", failure, number=number)
            )
            if not mailing.called:
                self._mailing.add(mailing)
                mailing.addBoth(lambda _: self._mailing.discard(mailing))
        return self._forgotPage(request, 200, sent=True)

    async def _mailResetLink(self, number: str, base: str) -> None:
        account = await self.store.getAccount(number)
        if account is None or not account.email or not await self._mayUse(account):
            return
        tokens = await self._resetTokens()
        token = tokens.make(number, account.portalPasswordHash)
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
