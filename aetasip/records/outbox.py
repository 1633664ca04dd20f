"""
The persistent mail outbox: messages wait in the store (the C{mail_outbox}
table) until an L{Outbox} sends them through the configured SMTP server
(L{SMTPSender}, C{twisted.mail}: STARTTLS and AUTH); a failure is logged
and tried again later, waiting twice as long each time, until
C{mail.max_attempts}. L{OutboxService} looks at the outbox when the
service starts and every C{mail.poll_interval} seconds (messages queued
by C{aetasip-admin} or another server included); C{aetasip-admin} sends
what it queued at once through an L{Outbox} of its own. A message is
claimed by one sender at a time (see
L{aetasip.store.outbox.OutboxMethods.claimDueMail}), so two senders
never send it twice.
"""

from __future__ import annotations

import io
from typing import Any

import attrs
from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTCP, IReactorTime
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.mail.smtp import ESMTPSenderFactory

from aetasip.records.mailsettings import MailSettings
from aetasip.store.outbox import QUEUED, OutboxMail

log = Logger()


class SMTPSender:
    """Sends one message through the configured SMTP server."""

    def __init__(self, settings: MailSettings, reactor: Any) -> None:
        self.settings = settings
        self.reactor = reactor
        self._context: Any = None

    def _tls(self) -> Any:
        if self._context is None and self.settings.starttls:
            assert self.settings.host is not None
            trust = None
            if self.settings.caCertificate is not None:
                with open(self.settings.caCertificate, "rb") as f:
                    trust = Certificate.loadPEM(f.read())
            self._context = optionsForClientTLS(self.settings.host, trustRoot=trust)
        return self._context

    def send(self, mail: OutboxMail) -> defer.Deferred[Any]:
        """
        @return: a L{Deferred} firing when the server accepted the
            message, failing with the reason otherwise.
        """
        settings = self.settings
        assert settings.host is not None and settings.fromAddress is not None
        done: defer.Deferred[Any] = defer.Deferred()
        factory = ESMTPSenderFactory(
            None if settings.username is None else settings.username.encode("utf-8"),
            None if settings.password is None else settings.password.encode("utf-8"),
            settings.fromAddress,
            [mail.recipient],
            io.BytesIO(mail.message),
            done,
            retries=0,
            timeout=settings.timeout,
            contextFactory=self._tls(),
            heloFallback=False,
            requireAuthentication=settings.username is not None,
            requireTransportSecurity=settings.starttls,
        )
        factory.domain = settings.fromAddress.rpartition("@")[2].encode("ascii", "replace")
        factory.noisy = False  # the outbox logs each message sent or failed, not the factory's start and stop
        connector = self.reactor.connectTCP(settings.host, settings.port, factory, timeout=settings.timeout)

        def cancel(result: Any) -> Any:
            if not done.called:
                connector.disconnect()
            return result

        return done.addBoth(cancel)


@attrs.define
class SendResult:
    """What one pass over the outbox did."""

    sent: list[int] = attrs.Factory(list)
    failed: list[int] = attrs.Factory(list)
    givenUp: list[int] = attrs.Factory(list)


class Outbox:
    """
    Sends the messages of the outbox that are due.

    @param store: an L{aetasip.store.AsyncStore}.
    @param sender: what sends one message (an L{SMTPSender}).
    """

    LEASE = 600.0
    """Seconds a claimed message is kept from other senders (longer than an SMTP conversation)."""

    def __init__(self, store: Any, settings: MailSettings, sender: Any, clock: IReactorTime) -> None:
        self.store = store
        self.settings = settings
        self.sender = sender
        self.clock = clock
        self._running = False
        self._waiters: list[defer.Deferred[SendResult]] = []
        self._warned = False

    def sendDue(self) -> defer.Deferred[SendResult]:
        """
        Send every message due now, one after the other. While a pass is
        under way, another is not started: its result is given.
        """
        waiting: defer.Deferred[SendResult] = defer.Deferred()
        self._waiters.append(waiting)
        if self._running:
            return waiting
        missing = self.settings.missing()
        if missing is not None:
            self._running = True
            defer.Deferred.fromCoroutine(self._cannotSend(missing)).addErrback(self._crashed).addCallback(
                self._finished
            )
            return waiting
        self._running = True
        defer.Deferred.fromCoroutine(self._sendDue()).addErrback(self._crashed).addCallback(self._finished)
        return waiting

    @property
    def running(self) -> bool:
        return self._running

    def whenIdle(self) -> defer.Deferred[None]:
        """Fires once no pass is under way."""
        if not self._running:
            return defer.succeed(None)
        waiting = self.sendDue()
        return waiting.addCallback(lambda _: None)

    @staticmethod
    def _crashed(failure: Any) -> SendResult:
        log.failure("Mail: sending the outbox failed", failure)
        return SendResult()

    def _finished(self, result: SendResult) -> None:
        self._running = False
        waiters, self._waiters = self._waiters, []
        for waiting in waiters:
            waiting.callback(result)

    async def _cannotSend(self, reason: str) -> SendResult:
        """Mail is not configured: say so once, when something waits."""
        if not self._warned:
            waiting = await self.store.outbox(QUEUED)
            if waiting:
                self._warned = True
                log.warn(
                    "Mail: {count} messages wait in the outbox, not sent: {reason}", count=len(waiting), reason=reason
                )
        return SendResult()

    async def _sendDue(self) -> SendResult:
        result = SendResult()
        while True:
            try:
                due = await self.store.claimDueMail(self.clock.seconds(), self.LEASE)
            except Exception:
                log.failure("Mail: cannot read the outbox")
                return result
            if not due:
                return result
            for mail in due:
                await self._sendOne(mail, result)

    async def _sendOne(self, mail: OutboxMail, result: SendResult) -> None:
        try:
            await self.sender.send(mail)
        except Exception as e:
            reason = _describe(e)
            if mail.attempts >= self.settings.maxAttempts:
                log.error(
                    "Mail: giving up {purpose} to {recipient} after {attempts} attempts: {reason}",
                    purpose=mail.purpose,
                    recipient=mail.recipient,
                    attempts=mail.attempts,
                    reason=reason,
                )
                retryAt = None
                result.givenUp.append(mail.id)
            else:
                delay = min(self.settings.retryDelay * 2 ** (mail.attempts - 1), self.settings.retryMaxDelay)
                retryAt = self.clock.seconds() + delay
                log.warn(
                    "Mail: {purpose} to {recipient} not sent (attempt {attempts}): {reason}; next attempt in {delay:.0f} s",
                    purpose=mail.purpose,
                    recipient=mail.recipient,
                    attempts=mail.attempts,
                    reason=reason,
                    delay=delay,
                )
                result.failed.append(mail.id)
            await self._note(self.store.markMailFailed, mail.id, reason, retryAt)
            return
        result.sent.append(mail.id)
        log.info("Mail: {purpose} sent to {recipient}", purpose=mail.purpose, recipient=mail.recipient)
        await self._note(self.store.markMailSent, mail.id, self.clock.seconds())

    @staticmethod
    async def _note(f: Any, *args: Any) -> None:
        try:
            await f(*args)
        except Exception:
            # Still claimed: it comes due again after the lease (and may then be sent twice).
            log.failure("Mail: cannot note the outcome of message {id} in the outbox", id=args[0])


def _describe(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return " ".join(text.split())[:500]


class OutboxService(service.Service):
    """Sends the outbox's messages when the service starts and every C{mail.poll_interval} seconds."""

    name = "outbox"

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        # Whether this server sends now: in a cluster, the one holding the
        # work lock (see aetasip.cluster); set by aetasip.tap.
        self.mayRun: Any = lambda: True
        self._loop = LoopingCall(self.sendDue)
        self._loop.clock = outbox.clock

    def sendDue(self) -> defer.Deferred[Any]:
        """Send what is due, if this server may."""
        if not self.mayRun():
            return defer.succeed(None)
        return self.outbox.sendDue()

    def startService(self) -> None:
        super().startService()
        settings = self.outbox.settings
        missing = settings.missing()
        if missing is not None:
            log.info("Mail outbox: {missing}, mail waits in the store", missing=missing)
        else:
            log.info(
                "Mail outbox: sent through {host}:{port} every {interval:g} s",
                host=settings.host,
                port=settings.port,
                interval=settings.pollInterval,
            )
        self._loop.start(settings.pollInterval, now=True)

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        d = self.outbox.whenIdle()
        d.addCallback(lambda _: log.info("Mail outbox stopped"))
        return d


def makeOutbox(config: Any, store: Any, reactor: IReactorTCP | None = None) -> Outbox:
    """The L{Outbox} of C{config} on C{store} (an L{aetasip.store.AsyncStore})."""
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor  # type: ignore[assignment]
    settings = MailSettings.fromConfig(config)
    return Outbox(store, settings, SMTPSender(settings, reactor), reactor)  # type: ignore[arg-type]
