"""
C{aetasip-admin report} and C{aetasip-admin notify}: quarterly call logs and service
information, mailed through the outbox.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.python import usage
from twisted.python.failure import Failure

from aetasip.admin.base import BaseOptions, Command, Context, currentTime, usageCheck, writeTable
from aetasip.records.mailmessages import compose, noticeBody, quarterlySubject
from aetasip.records.mailsettings import MailSettings
from aetasip.records.outbox import SendResult, makeOutbox
from aetasip.records.periods import InvalidPeriod, Quarter
from aetasip.records.quarterly import quarterlyLog, queueLog
from aetasip.store import (
    AsyncStore,
    NoSuchGroup,
    Store,
    StoreError,
    checkPrefix,
)


def _fromAddress(context: Context) -> str:
    address = context.config["mail.from_address"]
    if address is None:
        raise StoreError("mail.from_address is not set in the configuration: no message can be queued")
    return str(address)


def _sendNow(context: Context, queued: Sequence[int]) -> None:
    """
    Send the outbox now (what was just C{queued} and anything else due),
    and say what happened to C{queued}; what fails is tried again by the
    service.
    """
    settings = MailSettings.fromConfig(context.config)
    missing = settings.missing()
    if missing is not None:
        context.out.write(f"Not sent now: {missing}; the service sends them once it is configured.\n")
        return
    result = _runReactor(lambda reactor: _sendOutbox(context, reactor))
    sent = len(set(queued) & set(result.sent))
    failed = [mailID for mailID in queued if mailID in result.failed or mailID in result.givenUp]
    context.out.write(f"Sent {sent} of {len(queued)}.\n")
    if failed:
        reasons = {m.id: m.lastError for m in context.store.outbox() if m.id in failed}
        for mailID in failed:
            context.out.write(f"Not sent (message {mailID}): {reasons.get(mailID, '')}\n")
        context.out.write("The service tries them again later (see its log).\n")


async def _sendOutbox(context: Context, reactor: Any) -> SendResult:
    # A store of its own: stopping it closes it, not the command's.
    own = Store(context.store.url)
    own.open()
    store = AsyncStore(own, threads=1, reactor=reactor)
    store.start()
    try:
        return await makeOutbox(context.config, store, reactor).sendDue()
    finally:
        await store.stop()


def _runReactor(f: Callable[[Any], Any]) -> Any:
    """Run the reactor until the coroutine C{f(reactor)} is done; its result (or exception)."""
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    outcome: list[Any] = []

    def start() -> None:
        d = Deferred.fromCoroutine(f(reactor))
        d.addBoth(outcome.append)
        d.addBoth(lambda _: reactor.stop())  # type: ignore[attr-defined]

    reactor.callWhenRunning(start)  # type: ignore[attr-defined]
    reactor.run(installSignalHandlers=False)  # type: ignore[attr-defined, call-arg]
    (result,) = outcome
    if isinstance(result, Failure):
        result.raiseException()
    return result


class ReportQuarterly(Command):
    synopsis = "--group PREFIX --quarter YEARQN [--send]"
    optParameters = [
        ["group", "g", None, "The group (its prefix)."],
        ["quarter", "q", None, "The calendar quarter, e.g. 2026Q1."],
    ]
    optFlags = [["send", None, "Mail it to the group's technical contact now (again, if it was sent)."]]
    longdesc = (
        "Write the quarterly call log of a group (CSV: begin, duration, calling and called number of the answered "
        "calls that began or ended in the quarter), or mail it with --send."
    )

    def postOptions(self) -> None:
        if self["group"] is None or self["quarter"] is None:
            raise usage.UsageError("--group and --quarter are required")
        self["group"] = usageCheck(checkPrefix, self["group"])
        try:
            self.quarter = Quarter.parse(self["quarter"])
        except InvalidPeriod as e:
            raise usage.UsageError(str(e)) from None

    def run(self, context: Context) -> int:
        group = context.store.getGroup(self["group"])
        if group is None:
            raise NoSuchGroup(f"no group {self['group']}")
        if not self["send"]:
            context.out.write(quarterlyLog(context.store, group.prefix, self.quarter).csv)
            return 0
        fromAddress = _fromAddress(context)
        now = currentTime()
        serviceName = context.config["server.name"]
        if self.quarter.end > now:
            # Not over: a partial log, which does not count as the quarter's.
            made = quarterlyLog(context.store, group.prefix, self.quarter)
            mailID = context.store.queueMail(
                group.contact,
                quarterlySubject(group.prefix, self.quarter),
                made.message(fromAddress, group.contact, serviceName, now),
                f"quarterly {group.prefix} {self.quarter} (partial)",
                now,
            )
            context.out.write(f"The quarter {self.quarter} is not over: this log is partial.\n")
        else:
            queued = queueLog(context.store, group, self.quarter, fromAddress, serviceName, now, again=True)
            assert queued is not None
            mailID = queued
        context.out.write(f"Queued the call log of group {group.prefix} for {self.quarter} to {group.contact}.\n")
        _sendNow(context, [mailID])
        return 0


class ReportCommands(BaseOptions):
    synopsis = ""
    subCommands = [["quarterly", None, ReportQuarterly, "Write or mail a group's quarterly call log."]]


class Notify(Command):
    synopsis = "--subject SUBJECT --body-file FILE [--group PREFIX] [--dry-run]"
    optParameters = [
        ["subject", "s", None, "The subject of the message."],
        ["body-file", "b", None, "A UTF-8 text file: the message (write it in English and French)."],
        ["group", "g", None, "Only this group's technical contact."],
    ]
    optFlags = [["dry-run", "n", "Say who would get it, queue nothing."]]
    longdesc = (
        "Mail service information (announcements, maintenance windows) to every group's technical contact, or one "
        "group's, through the outbox: one message per address, sent at once; what fails is retried by the service."
    )

    def postOptions(self) -> None:
        subject = self["subject"]
        if subject is None or self["body-file"] is None:
            raise usage.UsageError("--subject and --body-file are required")
        if not subject.strip() or len(subject) > 200 or any(c in subject for c in "\r\n"):
            raise usage.UsageError("--subject: expected one line of 1 to 200 characters")
        if self["group"] is not None:
            self["group"] = usageCheck(checkPrefix, self["group"])
        try:
            with open(self["body-file"], encoding="utf-8") as f:
                self.body = f.read()
        except OSError as e:
            raise usage.UsageError(f"--body-file {self['body-file']!r}: {e.strerror or e}") from None
        except UnicodeDecodeError:
            raise usage.UsageError(f"--body-file {self['body-file']!r}: not UTF-8 text") from None
        if not self.body.strip():
            raise usage.UsageError(f"--body-file {self['body-file']!r} is empty")

    def run(self, context: Context) -> int:
        if self["group"] is not None:
            group = context.store.getGroup(self["group"])
            if group is None:
                raise NoSuchGroup(f"no group {self['group']}")
            groups = [group]
        else:
            groups = context.store.listGroups()
        contacts: dict[str, list[str]] = {}
        for group in groups:
            contacts.setdefault(group.contact.lower(), []).append(group.prefix)
        if self["dry-run"]:
            context.out.write(f"Would queue {len(contacts)} messages:\n")
            writeTable(context.out, ["CONTACT", "GROUPS"], [[c, ", ".join(p)] for c, p in contacts.items()])
            return 0
        if not contacts:
            context.out.write("No technical contact: nothing queued.\n")
            return 0
        fromAddress = _fromAddress(context)
        now = currentTime()
        queued = []
        for contact, prefixes in contacts.items():
            body = noticeBody(self.body, prefixes, context.config["server.name"])
            message = compose(fromAddress, contact, self["subject"], body, now)
            queued.append(context.store.queueMail(contact, self["subject"], message, f"notice: {self['subject']}", now))
        context.out.write(f"Queued {len(queued)} messages.\n")
        _sendNow(context, queued)
        return 0
