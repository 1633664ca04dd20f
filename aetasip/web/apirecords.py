"""
The admin API's call records: pages of JSON (C{/records}) and a CSV
export (C{/records.csv}), with the filters of C{aetasip-admin cdr}.
"""

from __future__ import annotations

import io
from typing import Any

from twisted.web.iweb import IRequest

from aetasip.operations import hostPort, isoTime
from aetasip.records.csvfiles import writeExport
from aetasip.records.query import MAX_RECORD_PAGE, RECORD_PAGE, InvalidQuery, recordQuery
from aetasip.records.record import CallRecord
from aetasip.web.apiframe import APIError, APIFrame, app, pageLink, writeJSON


def recordJSON(record: CallRecord) -> dict[str, Any]:
    """What the API shows of a call record (the fields of the CSV export, with the relay's statistics)."""
    return {
        "id": record.id,
        "server": record.server,
        "callId": record.callID,
        "caller": record.caller,
        "callerKind": record.callerKind,
        "domain": record.domain,
        "source": hostPort(record.source),
        "transport": record.transport,
        "dialled": record.dialled,
        "resolved": list(record.resolved),
        "callee": record.callee,
        "calleeAddress": hostPort(record.calleeSource),
        "calleeTransport": record.calleeTransport,
        "startedAt": isoTime(record.startedAt),
        "ringingAt": isoTime(record.ringingAt),
        "answeredAt": isoTime(record.answeredAt),
        "endedAt": isoTime(record.endedAt),
        "duration": round(record.duration, 3),
        "status": record.status,
        "endCause": record.endCause,
        "endDetail": record.endDetail,
        "recovered": record.recovered,
        "relayNode": record.relayNode,
        "media": record.media,
    }


class RecordRoutes(APIFrame):
    """The admin API's routes of the call records in the store."""

    # -- call records

    RECORD_PARAMETERS = ("number", "group", "from", "to", "quarter", "answeredOnly", "limit", "offset")

    def _recordQuery(self, request: IRequest, pageSize: int | None = None) -> Any:
        """
        The call-record query of C{request}'s parameters; with C{pageSize},
        a page: C{limit} records at most (by default C{pageSize}, at most
        L{MAX_RECORD_PAGE}).
        """
        given = self.parameters(request, self.RECORD_PARAMETERS)
        if pageSize is not None:
            limit = given.setdefault("limit", str(pageSize))
            if limit.isascii() and limit.isdigit() and int(limit) > MAX_RECORD_PAGE:
                raise APIError(400, f"invalid limit {limit!r}: at most {MAX_RECORD_PAGE} records a page")
        answeredOnly = given.get("answeredOnly", "false").lower()
        if answeredOnly not in ("true", "false", "1", "0"):
            raise APIError(400, f"parameter 'answeredOnly': expected true or false, not {given['answeredOnly']!r}")
        try:
            return recordQuery(
                given.get("number"),
                given.get("group"),
                given.get("from"),
                given.get("to"),
                given.get("quarter"),
                answeredOnly in ("true", "1"),
                given.get("limit"),
                given.get("offset"),
            )
        except InvalidQuery as e:
            raise APIError(400, str(e)) from None

    @app.route("/records", methods=["GET"])
    async def records(self, request: IRequest) -> bytes:
        """
        A page of records, the oldest first (by start, then id: a stable
        order, new calls come last), with the total the filters select
        and the next page's address (also a C{Link: rel="next"} header).
        """
        await self.authorize(request)
        query = self._recordQuery(request, RECORD_PAGE)
        found, total = await self.provision(self.store.store.callRecordPage, query)
        following = None
        if query.offset + len(found) < total:
            following = pageLink(request, query.offset + len(found))
            request.setHeader(b"Link", f'<{following}>; rel="next"'.encode())
        return writeJSON(
            request,
            200,
            {
                "records": [recordJSON(r) for r in found],
                "total": total,
                "offset": query.offset,
                "limit": query.limit,
                "next": following,
            },
        )

    @app.route("/records.csv", methods=["GET"])
    async def recordsCSV(self, request: IRequest) -> bytes:
        await self.authorize(request)
        found = await self.provision(self.store.store.callRecords, self._recordQuery(request))
        out = io.StringIO()
        writeExport(out, found)
        request.setHeader(b"Content-Type", b"text/csv; charset=utf-8")
        request.setHeader(b"Content-Disposition", b'attachment; filename="call-records.csv"')
        request.setHeader(b"Cache-Control", b"no-store")
        return out.getvalue().encode("utf-8")
