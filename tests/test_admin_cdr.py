"""
C{aetasip-admin cdr list|export}: call records filtered by number, group,
period or quarter, answered only; the CSV read back field by field; bad
filters refused in one line.
"""

from __future__ import annotations

import csv
import io
import os

from aetasip.records.csvfiles import EXPORT_COLUMNS
from tests.test_admin import AdminTestCase
from tests.test_records_store import LATE_MARCH, answered, aRecord

HOUR = 3600.0


class CDRCommandTests(AdminTestCase):
    def setUp(self) -> None:
        super().setUp()
        store = self.openStore()
        store.addGroup("4567", "tech@example.net")
        store.allocate("4567", 2, realm="aetasip")
        media = {
            "caller": {"received": {"packets": 1500, "lost": 2, "jitter": 1.25, "mos": 4.41}},
            # Not measured: rtpengine, and no RTCP report from the caller.
            "callee": {"received": {"packets": 1498, "lost": None, "jitter": None, "mos": None}},
        }
        store.writeCallRecords(
            [
                answered("q1", LATE_MARCH - 2 * HOUR, LATE_MARCH - 2 * HOUR + 2.4, LATE_MARCH - HOUR + 0.6),
                # Spans midnight of 31 March; relayed.
                answered(
                    "span",
                    LATE_MARCH + 0.5 * HOUR,
                    LATE_MARCH + 0.5 * HOUR + 3,
                    LATE_MARCH + 1.5 * HOUR,
                    relayNode="relay-1",
                    media=media,
                ),
                aRecord(
                    "busy",
                    LATE_MARCH + 2 * HOUR,
                    endedAt=LATE_MARCH + 2 * HOUR + 1,
                    status=486,
                    endCause="rejected",
                    callee="45675002",
                    resolved=("45675002",),
                ),
                answered(
                    "other",
                    LATE_MARCH + 3 * HOUR,
                    LATE_MARCH + 3 * HOUR + 1,
                    LATE_MARCH + 4 * HOUR,
                    caller="33330001",
                    dialled="33330002",
                    callee="33330002",
                    resolved=("33330002",),
                ),
            ],
            "main",
            LATE_MARCH,
        )

    def export(self, *args: str) -> list[dict[str, str]]:
        out = self.succeed("cdr", "export", *args)
        self.assertTrue(out.startswith(",".join(EXPORT_COLUMNS) + "\r\n"), out)
        rows = list(csv.DictReader(io.StringIO(out, newline="")))
        return rows

    def test_export_every_field(self) -> None:
        rows = {row["record_id"]: row for row in self.export()}
        self.assertEqual(list(rows), ["q1", "span", "busy", "other"])
        span = rows["span"]
        self.assertEqual(
            span,
            {
                "call_id": "call-span@codec",
                "caller": "45675001",
                "caller_kind": "premium",
                "domain": "sip.example.net",
                "source": "127.0.0.1:5062",
                "transport": "udp",
                "dialled": "45675002",
                "resolved": "45675002",
                "callee": "45675002",
                "callee_address": "127.0.0.1:5064",
                "callee_transport": "udp",
                "start": "2026-03-31T23:30:00Z",
                "ringing": "2026-03-31T23:30:00Z",
                "answer": "2026-03-31T23:30:03Z",
                "end": "2026-04-01T00:30:00Z",
                "duration": "3597",
                "status": "200",
                "end_cause": "caller BYE",
                "end_detail": "",
                "relay_node": "relay-1",
                "caller_packets": "1500",
                "caller_lost": "2",
                "caller_jitter_ms": "1.2",
                "caller_mos": "4.41",
                "callee_packets": "1498",
                "callee_lost": "",
                "callee_jitter_ms": "",
                "callee_mos": "",
                "server": "main",
                "record_id": "span",
            },
        )
        # Durations are rounded to the second: 3598.2 s.
        self.assertEqual(rows["q1"]["duration"], "3598")
        self.assertEqual((rows["busy"]["status"], rows["busy"]["answer"], rows["busy"]["duration"]), ("486", "", "0"))

    def test_free_text_cannot_become_a_formula(self) -> None:
        """A reason phrase a callee sent that starts like a formula is quoted as text."""
        self.openStore().writeCallRecords(
            [aRecord("evil", LATE_MARCH + 10 * HOUR, endedAt=LATE_MARCH + 10 * HOUR + 1, status=486,
                     endCause="rejected", endDetail="=HYPERLINK(\"http://x\")", callID="+1@x")],
            "main",
            LATE_MARCH,
        )  # fmt: skip
        (row,) = [row for row in self.export() if row["record_id"] == "evil"]
        self.assertEqual((row["end_detail"], row["call_id"]), ('\'=HYPERLINK("http://x")', "'+1@x"))

    def test_filters(self) -> None:
        def ids(*args: str) -> list[str]:
            return [row["record_id"] for row in self.export(*args)]

        self.assertEqual(ids("--group", "4567"), ["q1", "span", "busy"])
        self.assertEqual(ids("--group", "4567", "--answered-only"), ["q1", "span"])
        self.assertEqual(ids("--number", "33330002"), ["other"])
        self.assertEqual(ids("--quarter", "2026Q1"), ["q1", "span"])
        self.assertEqual(ids("--quarter", "2026Q2", "--group", "4567"), ["span", "busy"])
        self.assertEqual(ids("--from", "2026-04-01T01:00:00Z", "--to", "2026-04-02"), ["busy", "other"])
        self.assertEqual(ids("--from", "2026-04-01T03:00:00+02:00"), ["busy", "other"])
        self.assertEqual(ids("--quarter", "2025Q4"), [])

    def test_export_to_a_file(self) -> None:
        path = os.path.abspath(self.mktemp())
        out = self.succeed("cdr", "export", "--group", "4567", "--output", path)
        self.assertEqual(out, f"Wrote 3 call records to {path}.\n")
        with open(path, newline="") as f:
            self.assertEqual(len(list(csv.reader(f))), 4)

    def test_list(self) -> None:
        out = self.succeed("cdr", "list", "--number", "45675002", "--limit", "2")
        lines = out.splitlines()
        self.assertEqual(
            lines[0].split(), ["START", "(UTC)", "CALLER", "DIALLED", "CALLEE", "ANSWER", "DURATION", "STATUS", "END"]
        )
        self.assertEqual(
            lines[1].split(),
            [
                "2026-03-31T21:00:00Z",
                "45675001",
                "45675002",
                "45675002",
                "21:00:02Z",
                "3598",
                "s",
                "200",
                "caller",
                "BYE",
            ],
        )
        self.assertEqual(len(lines), 3)
        self.assertEqual(self.succeed("cdr", "list", "--number", "1"), "No call records.\n")

    def test_list_pages(self) -> None:
        """C{--offset} skips the first calls: with C{--limit}, a page of the list, oldest first."""

        def page(*args: str) -> list[list[str]]:
            header, *rows = self.succeed("cdr", "list", "--group", "4567", *args).splitlines()
            self.assertTrue(header.startswith("START (UTC)"), header)
            return [row.split() for row in rows]

        rows = page()
        self.assertEqual(len(rows), 3)

        self.assertEqual(page("--limit", "2", "--offset", "0"), rows[:2])
        self.assertEqual(page("--limit", "2", "--offset", "2"), rows[2:])
        self.assertEqual(page("--offset", "1"), rows[1:])
        self.assertEqual(self.succeed("cdr", "list", "--group", "4567", "--offset", "3"), "No call records.\n")

    def test_bad_filters(self) -> None:
        for args, fragment in [
            (["--quarter", "2026Q5"], "invalid quarter '2026Q5'"),
            (["--from", "yesterday"], "invalid time 'yesterday'"),
            (["--number", "12ab"], "invalid number '12ab'"),
            (["--group", "45"], "45"),
            (["--number", "1", "--group", "4567"], "not both"),
            (["--quarter", "2026Q1", "--from", "2026-01-01"], "not both"),
            (["--from", "2026-04-01", "--to", "2026-04-01"], "--from must be before --to"),
        ]:
            self.assertRefused(2, ["cdr", "export", *args], fragment)
        self.assertRefused(2, ["cdr", "list", "--limit", "0"], "--limit")
        for offset in ("-1", "two", "1.5", "", "\uff11", "9" * 19):
            self.assertRefused(2, ["cdr", "list", "--offset", offset], f"invalid --offset {offset!r}")
        self.assertRefused(1, ["cdr", "export", "--output", "/nonexistent/dir/x.csv"], "cannot write")
