"""
The CSV files made of call records: the export of C{aetasip-admin cdr
export} (every field of a record) and the quarterly call log of a group
(begin, duration, calling and called number). A header row, then one row
per record; times in UTC ISO 8601 to the second, durations in whole
seconds (rounded).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any, TextIO

from aetasip.records.periods import isoSeconds
from aetasip.records.record import CallRecord

_MEDIA_COLUMNS = (
    "relay_node",
    "caller_packets",
    "caller_lost",
    "caller_jitter_ms",
    "caller_mos",
    "callee_packets",
    "callee_lost",
    "callee_jitter_ms",
    "callee_mos",
)
"""The relay's figures of a call, in the export and in the portal's CSV."""

EXPORT_COLUMNS = (
    "call_id",
    "caller",
    "caller_kind",
    "domain",
    "source",
    "transport",
    "dialled",
    "resolved",
    "callee",
    "callee_address",
    "callee_transport",
    "start",
    "ringing",
    "answer",
    "end",
    "duration",
    "status",
    "end_cause",
    "end_detail",
    *_MEDIA_COLUMNS,
    "server",
    "record_id",
)

QUARTERLY_COLUMNS = ("begin", "duration", "calling", "called")

PORTAL_COLUMNS = (
    "direction",
    "start",
    "caller",
    "dialled",
    "callee",
    "answer",
    "end",
    "duration",
    "status",
    "end_cause",
    *_MEDIA_COLUMNS,
)
"""
The columns of a subscriber's own CSV (the portal's): those of the export
that concern the subscriber (no addresses, Call-IDs or servers), after
whether the number made the call or missed it.
"""


def _address(address: tuple[str, int] | None) -> str:
    if address is None:
        return ""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def seconds(duration: float) -> int:
    """A duration in whole seconds, rounded half up."""
    return int(duration + 0.5)


def _figures(media: dict[str, Any] | None, leg: str) -> list[str]:
    """Packets and losses the relay received from C{leg}, its jitter and MOS."""
    if media is None or leg not in media:
        return ["", "", "", ""]
    received = media[leg].get("received", {})
    mos = received.get("mos")
    # None: the relay did not measure it (rtpengine without RTCP reports).
    lost = received.get("lost", 0)
    jitter = received.get("jitter", 0.0)
    return [
        str(received.get("packets", 0)),
        "" if lost is None else str(lost),
        "" if jitter is None else f"{jitter:.1f}",
        "" if mos is None else f"{mos:.2f}",
    ]


def _cell(text: str) -> str:
    """
    Free text (a Call-ID, a domain, a reason phrase a callee sent) made
    inert for spreadsheets: a leading =, +, -, @, tab or CR would start a
    formula; a quote before it keeps it text.
    """
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def exportRow(record: CallRecord) -> list[str]:
    return [
        _cell(record.callID),
        record.caller,
        record.callerKind,
        _cell(record.domain),
        _address(record.source),
        record.transport,
        _cell(record.dialled),
        _cell(" ".join(record.resolved)),
        _cell(record.callee or ""),
        _address(record.calleeSource),
        record.calleeTransport or "",
        isoSeconds(record.startedAt),
        isoSeconds(record.ringingAt),
        isoSeconds(record.answeredAt),
        isoSeconds(record.endedAt),
        str(seconds(record.duration)),
        str(record.status),
        record.endCause or "",
        _cell(record.endDetail),
        record.relayNode or "",
        *_figures(record.media, "caller"),
        *_figures(record.media, "callee"),
        record.server,
        record.id,
    ]


def quarterlyRow(record: CallRecord) -> list[str]:
    return [isoSeconds(record.answeredAt), str(seconds(record.duration)), record.caller, _cell(record.callee or "")]


def portalRow(record: CallRecord, number: str) -> list[str]:
    return [
        "made" if record.caller == number else "missed",
        isoSeconds(record.startedAt),
        record.caller,
        record.dialled,
        record.callee or "",
        isoSeconds(record.answeredAt),
        isoSeconds(record.endedAt),
        str(seconds(record.duration)),
        str(record.status),
        record.endCause or "",
        record.relayNode or "",
        *_figures(record.media, "caller"),
        *_figures(record.media, "callee"),
    ]


def portalCSV(records: Iterable[CallRecord], number: str) -> str:
    """The CSV of C{number}'s call records (see L{PORTAL_COLUMNS})."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(PORTAL_COLUMNS)
    for record in records:
        writer.writerow([_cell(cell) for cell in portalRow(record, number)])
    return out.getvalue()


def writeExport(out: TextIO, records: Iterable[CallRecord]) -> int:
    """Write the export CSV of C{records} to C{out}; return how many rows."""
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(EXPORT_COLUMNS)
    count = 0
    for record in records:
        writer.writerow(exportRow(record))
        count += 1
    return count


def quarterlyCSV(records: Iterable[CallRecord]) -> str:
    """The quarterly call log of C{records} (answered calls), as CSV text."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(QUARTERLY_COLUMNS)
    for record in records:
        writer.writerow(quarterlyRow(record))
    return out.getvalue()
