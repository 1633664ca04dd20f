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
from collections.abc import Callable

from twisted.web.iweb import IRequest

from aetasip.records.csvfiles import portalCSV
from aetasip.store import InvalidValue, StoreError
from aetasip.store.callrecords import RecordQuery
from aetasip.store.models import Account
from aetasip.web.i18n import N_
from aetasip.web.portalcalls import callRow
from aetasip.web.portalframe import app, log
from aetasip.web.portallogin import MIN_SIP_PASSWORD, LoginRoutes, portalPasswordProblem
from aetasip.web.sessions import Session, sameToken

CALLS_PER_PAGE = 25
"""Call records on one page."""

MAX_CSV_RECORDS = 100_000
"""Call records in one CSV download at most (the newest)."""

_DONE = {
    b"sip-password": N_("The SIP password is changed."),
    b"email": N_("The e-mail address is changed."),
    b"portal-password": N_("The portal password is changed."),
}


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


class Portal(LoginRoutes):
    """
    The portal's routes, relative to C{/portal/}: the subscriber's pages
    and forms here; logging in and out and a password reset in
    L{LoginRoutes}; what they share in L{PortalFrame
    <aetasip.web.portalframe.PortalFrame>}.
    """

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
