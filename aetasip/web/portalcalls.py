"""
The portal's "Call records" page, from the subscriber's side: each call
record (L{aetasip.records.record.CallRecord}) the number made or missed
as a row in the subscriber's language (when, made or missed, the other
party, duration, how it ended, and the media quality the relay measured
when the call was relayed).
"""

from __future__ import annotations

from typing import Any

import attrs

from aetasip.calls.call import EndCause
from aetasip.records.record import UNKNOWN_END, CallRecord
from aetasip.web.i18n import N_, Language

MADE = "made"
MISSED = "missed"

_STATUS = {
    403: N_("Refused"),
    404: N_("Unknown number"),
    408: N_("No answer"),
    410: N_("Unknown number"),
    480: N_("Not registered"),
    484: N_("Incomplete number"),
    486: N_("Busy"),
    487: N_("Cancelled"),
    488: N_("Incompatible media"),
    500: N_("Service error"),
    503: N_("Service unavailable"),
    600: N_("Busy"),
    603: N_("Declined"),
    604: N_("Unknown number"),
    606: N_("Incompatible media"),
}

_ENDED = {
    EndCause.NO_ANSWER: N_("No answer"),
    EndCause.DEAD_DIALOG: N_("Connection lost (a party stopped answering)"),
    EndCause.MEDIA_TIMEOUT: N_("Ended: no audio received"),
    EndCause.SERVER_SHUTDOWN: N_("Ended by a restart of the service"),
    EndCause.OPERATOR_RELEASE: N_("Ended by the operator"),
    EndCause.DURATION_LIMIT: N_("Ended: longest call duration reached"),
    EndCause.MEDIA_FAILURE: N_("Ended: the media relay failed"),
    UNKNOWN_END: N_("Ended by an interruption of the service"),
}


@attrs.frozen
class CallRow:
    """One line of the page, its texts in the subscriber's language."""

    direction: str
    directionText: str
    when: str
    party: str
    duration: str
    outcome: str
    quality: tuple[str, ...]


def direction(record: CallRecord, number: str) -> str:
    """L{MADE} when C{number} placed the call, else L{MISSED}."""
    return MADE if record.caller == number else MISSED


def outcome(record: CallRecord, number: str, lang: Language) -> str:
    """How the call ended, as the subscriber C{number} sees it."""
    _ = lang.gettext
    made = direction(record, number) == MADE
    cause = record.endCause
    if cause is None:
        return _("In progress")
    if cause == EndCause.CALLER_BYE:
        return _("You hung up") if made else _("The caller hung up")
    if cause == EndCause.CALLEE_BYE:
        return _("The called party hung up") if made else _("You hung up")
    if cause == EndCause.CANCELLED:
        return _("You hung up before an answer") if made else _("The caller hung up before an answer")
    if cause == EndCause.REJECTED:
        text = _STATUS.get(record.status)
        if text is None:
            return _("Refused (status %(status)s)", status=record.status)
        return _("%(reason)s (status %(status)s)", reason=_(text), status=record.status)
    text = _ENDED.get(cause)
    return cause if text is None else _(text)


def otherParty(record: CallRecord, number: str) -> str:
    """Who the subscriber talked to: what was dialled (and where it led), or the caller."""
    if direction(record, number) == MISSED:
        return record.caller
    if record.callee and record.callee != record.dialled:
        return f"{record.dialled} → {record.callee}"
    return record.dialled


def _leg(stream: dict[str, Any], lang: Language, label: str) -> str:
    _ = lang.gettext
    packets = int(stream.get("packets", 0))
    if packets == 0:
        return _("%(direction)s: no audio", direction=label)
    if stream.get("lost") is None or stream.get("jitter") is None:
        # rtpengine measures neither for plain RTP.
        return _(
            "%(direction)s: %(packets)s packets, loss and jitter not measured",
            direction=label,
            packets=lang.decimal(packets, 0),
        )
    lost = int(stream["lost"])
    loss = lost / (packets + lost)
    mos = stream.get("mos")
    values = {
        "direction": label,
        "loss": lang.percent(loss),
        "jitter": lang.decimal(float(stream["jitter"])),
    }
    if mos is None:
        return _("%(direction)s: %(loss)s lost, jitter %(jitter)s ms", **values)
    return _("%(direction)s: MOS %(mos)s, %(loss)s lost, jitter %(jitter)s ms", mos=lang.decimal(mos, 2), **values)


def quality(record: CallRecord, number: str, lang: Language) -> tuple[str, ...]:
    """
    The relay's figures of a relayed call, for both directions: what it
    received from the subscriber's codec, and from the other party's
    (what reached the subscriber through it). Nothing for a direct call.
    """
    media = record.media
    if not media:
        return ()
    mine, theirs = ("caller", "callee") if direction(record, number) == MADE else ("callee", "caller")
    _ = lang.gettext
    return (
        _leg(media.get(mine, {}).get("received", {}), lang, _("From you")),
        _leg(media.get(theirs, {}).get("received", {}), lang, _("To you")),
    )


def callRow(record: CallRecord, number: str, lang: Language) -> CallRow:
    made = direction(record, number) == MADE
    return CallRow(
        direction=MADE if made else MISSED,
        directionText=lang.gettext("Made") if made else lang.gettext("Missed"),
        when=lang.dateTime(record.startedAt),
        party=otherParty(record, number),
        duration=Language.duration(record.duration) if record.answered else "—",
        outcome=outcome(record, number, lang),
        quality=quality(record, number, lang),
    )
