"""
The portal's Call records page and its CSV download over real HTTP: the
calls the number made and missed, newest first, paged, with the relay's
media figures when relayed; another subscriber's records unreachable;
hostile dialled numbers escaped in the page and inert in the CSV.
"""

from __future__ import annotations

import csv
import io
import re

import attrs
from twisted.trial.unittest import SynchronousTestCase

from aetasip.records.csvfiles import PORTAL_COLUMNS
from aetasip.records.record import CallRecord
from aetasip.store import Store
from aetasip.web.i18n import Language
from aetasip.web.portalcalls import quality
from tests.test_web_portal import PortalTestCase

DAY = 86400.0
T0 = 1_780_000_000.0  # 2026-05-28


def record(n: int, **fields: object) -> CallRecord:
    base = CallRecord(
        id=f"{n:032x}",
        server="main",
        callID=f"call-{n}@codec",
        callerTag=f"tag-{n}",
        caller="45675001",
        callerKind="premium",
        domain="sip.example.net",
        source=("192.0.2.10", 5062),
        transport="udp",
        dialled="45675002",
        startedAt=T0 + n * 60,
        resolved=("45675002",),
        callee="45675002",
        calleeSource=("198.51.100.7", 5064),
        answeredAt=T0 + n * 60 + 2,
        endedAt=T0 + n * 60 + 2 + 3725,
        duration=3725.0,
        status=200,
        endCause="caller BYE",
    )
    return attrs.evolve(base, **fields)  # type: ignore[arg-type]


RELAYED = {
    "caller": {"received": {"packets": 1000, "lost": 10, "jitter": 1.5, "mos": 4.31}},
    "callee": {"received": {"packets": 990, "lost": 0, "jitter": 0.25, "mos": 4.4}},
}


class CallRecordsPageTests(PortalTestCase):
    def setUp(self):  # type: ignore[no-untyped-def]
        started = super().setUp()
        store = Store(self.server.storeURL)
        store.open()
        made = [record(n) for n in range(1, 29)]  # 28 answered calls from 45675001
        missed = record(
            40, caller="45675002", dialled="45675001", callee="45675001", resolved=("45675001",),
            answeredAt=None, duration=0.0, status=480, endCause="rejected",
        )  # fmt: skip
        relayed = record(41, relayNode="fr", media=RELAYED, dialled="5002")
        hostile = record(42, dialled="=cmd|'/c calc'!A1<b>x</b>", callee=None, resolved=(), answeredAt=None,
                         duration=0.0, status=404, endCause="rejected")  # fmt: skip
        answeredBy1 = record(43, caller="45675002", dialled="45675001", callee="45675001", resolved=("45675001",))
        stranger = record(44, caller="45675002", dialled="33330002", callee="33330002")
        store.writeCallRecords([*made, missed, relayed, hostile, answeredBy1, stranger], "main", T0)
        store.close()
        return started

    async def test_newest_first_paged_with_quality(self) -> None:
        browser = self.browser()
        await browser.login("45675001", "portal-secret-1")
        code, _, page = await browser.request("GET", "/portal/calls")
        self.assertEqual(code, 200)
        rows = re.findall(r'<tr class="call (made|missed)">', page)
        self.assertEqual(len(rows), 25)
        # Newest first: the hostile call (42), the relayed one (41), the missed one (40), then 28, 27...
        self.assertEqual(rows[:3], ["made", "made", "missed"])
        self.assertIn("&lt;b&gt;x&lt;/b&gt;", page)
        self.assertNotIn("<b>x</b>", page)
        self.assertIn("Unknown number (status 404)", page)
        self.assertIn("Not registered (status 480)", page)
        self.assertIn("5002 → 45675002", page)
        self.assertIn("From you: MOS 4.31, 1.0% lost, jitter 1.5 ms", page)
        self.assertIn("To you: MOS 4.40, 0.0% lost, jitter 0.2 ms", page)
        self.assertIn("1:02:05", page)  # 3725 s
        self.assertIn("You hung up", page)
        self.assertIn('id="older"', page)
        self.assertNotIn('id="newer"', page)
        code, _, page = await browser.request("GET", "/portal/calls?page=2")
        # The call 43 it answered and the stranger's call 44 are no "made or missed" calls of 45675001.
        self.assertEqual(len(re.findall(r'<tr class="call', page)), 28 + 3 - 25)
        self.assertIn('id="newer"', page)
        self.assertNotIn('id="older"', page)
        for bad in ("0", "-1", "x", "9999999999", "3"):
            code, _, page = await browser.request("GET", f"/portal/calls?page={bad}")
            self.assertEqual(code, 200, bad)

    async def test_csv_of_the_number_only(self) -> None:
        browser = self.browser()
        await browser.login("45675001", "portal-secret-1")
        code, headers, body = await browser.request("GET", "/portal/calls.csv")
        self.assertEqual(code, 200)
        self.assertEqual(headers.getRawHeaders("content-type"), ["text/csv; charset=utf-8"])
        self.assertRegex(headers.getRawHeaders("content-disposition")[0], r'attachment; filename="calls-45675001-')
        rows = list(csv.reader(io.StringIO(body)))
        self.assertEqual(tuple(rows[0]), PORTAL_COLUMNS)
        self.assertEqual(len(rows), 1 + 31)
        self.assertEqual(rows[1][:3], ["made", "2026-05-28T21:08:40Z", "45675001"])
        self.assertEqual(rows[1][3], "'=cmd|'/c calc'!A1<b>x</b>")  # inert in a spreadsheet
        relayed = dict(zip(PORTAL_COLUMNS, rows[2], strict=True))
        self.assertEqual((relayed["relay_node"], relayed["caller_lost"], relayed["callee_mos"]), ("fr", "10", "4.40"))
        self.assertEqual(rows[3][0], "missed")
        self.assertNotIn("198.51.100.7", body)
        self.assertNotIn("192.0.2.10", body)
        self.assertNotIn("33330002", body)
        # The other subscriber: its missed-by-nobody call 44 made, 43 made, 40 made; none of 45675001's.
        other = self.browser()
        await other.login("45675002", "portal-secret-2")
        _, _, body = await other.request("GET", "/portal/calls.csv")
        rows = list(csv.reader(io.StringIO(body)))[1:]
        self.assertEqual({row[2] for row in rows}, {"45675002"})
        self.assertEqual(len(rows), 3)
        _, _, page = await other.request("GET", "/portal/calls")
        self.assertNotIn("A1", page)
        # No session: the login page, not the records.
        code, headers, _ = await self.browser().request("GET", "/portal/calls.csv")
        self.assertEqual((code, headers.getRawHeaders("location")), (303, ["/portal/login"]))


class UnmeasuredQualityTests(SynchronousTestCase):
    """
    rtpengine measures no loss or jitter for plain RTP: the record holds
    None for them, and the page says so instead of failing.
    """

    def test_loss_and_jitter_not_measured(self) -> None:
        media = {
            "caller": {"received": {"packets": 1500, "lost": None, "jitter": None}},
            "callee": {"received": {"packets": 0, "lost": None, "jitter": None}},
        }
        relayed = record(50, relayNode="rtpengine", media=media)
        self.assertEqual(
            quality(relayed, "45675001", Language("en")),
            ("From you: 1,500 packets, loss and jitter not measured", "To you: no audio"),
        )
        self.assertEqual(
            quality(relayed, "45675001", Language("fr"))[0],
            "Émis par vous : 1\u202f500 paquets, pertes et gigue non mesurées",
        )
